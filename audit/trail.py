"""Writing and verifying the audit trail.

:func:`record` is the one way to add a record; it is called explicitly by the
code that does the audited thing (no signals). Appends are serialised by
locking the single :class:`ChainHead` row so the chain stays linear under
concurrent requests on PostgreSQL; on SQLite writes are serialised anyway.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.models import AuditEvent, ChainHead

GENESIS = "0" * 64


def canonical(event: AuditEvent) -> bytes:
    """The bytes an event's hash covers, in a fixed order."""
    body = {
        "timestamp": event.timestamp.isoformat(),
        "actor": event.actor,
        "actor_id": event.actor_id,
        "action": event.action,
        "outcome": event.outcome,
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "patient_id": event.patient_id,
        "study_instance_uid": event.study_instance_uid,
        "detail": event.detail,
        "prev_hash": event.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


def client_ip(request: HttpRequest | None) -> str:
    if request is None:
        return ""
    return str(request.META.get("REMOTE_ADDR", ""))[:64]


def record(
    action: str,
    request: HttpRequest | None = None,
    *,
    user: Any = None,
    outcome: str = "success",
    patient_id: str = "",
    study_instance_uid: str = "",
    detail: dict[str, Any] | None = None,
    actor: str | None = None,
) -> AuditEvent:
    """Append one record to the chain."""
    if user is None and request is not None:
        user = getattr(request, "user", None)
    is_user = user is not None and getattr(user, "is_authenticated", False)
    event = AuditEvent(
        timestamp=timezone.now(),
        actor=(actor if actor is not None else (user.get_username() if is_user else ""))[:150],
        actor_id=user.pk if is_user else None,
        action=action[:64],
        outcome=outcome[:16],
        source_ip=client_ip(request),
        user_agent=(request.META.get("HTTP_USER_AGENT", "") if request is not None else "")[:256],
        patient_id=patient_id[:64],
        study_instance_uid=study_instance_uid[:64],
        detail=detail or {},
    )
    with transaction.atomic():
        head = ChainHead.objects.select_for_update().filter(pk=1).first()
        if head is None:
            head = ChainHead.objects.create(pk=1, last_hash=GENESIS, count=0)
            head = ChainHead.objects.select_for_update().get(pk=1)
        event.prev_hash = head.last_hash
        event.hash = compute_hash(event)
        event.save()
        ChainHead.objects.filter(pk=1).update(last_hash=event.hash, count=head.count + 1)
    return event


@dataclass
class Verification:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""


def verify_chain() -> Verification:
    """Walk the chain from the start; name the first record that does not fit."""
    prev = GENESIS
    checked = 0
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != prev:
            return Verification(
                False, checked, event.pk, "previous-hash link broken (a record was removed or reordered)"
            )
        if compute_hash(event) != event.hash:
            return Verification(False, checked, event.pk, "content does not match its hash (the record was edited)")
        prev = event.hash
        checked += 1
    head = ChainHead.objects.filter(pk=1).first()
    if head is not None and (head.last_hash != prev or head.count != checked):
        return Verification(False, checked, None, "records after the last verified one were removed")
    return Verification(True, checked)
