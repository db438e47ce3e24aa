"""Writing and verifying the audit trail.

:func:`record` is the one way to add a record; it is called explicitly by the
code that does the audited thing (no signals). Appends are serialised by
locking the single :class:`ChainHead` row so the chain stays linear under
concurrent requests on PostgreSQL; on SQLite writes are serialised anyway.
An append is three raw statements in one transaction (see :func:`_append`);
called inside a transaction, it joins it, so a caller can make its own rows
and their audit record one commit (STOW-RS does: see
:func:`archive.ingest.store.store_instances`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections, router, transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.models import AuditEvent, ChainHead
from pacs.lib.dblock import write_lock
from pacs.lib.sql import per_vendor

GENESIS = "0" * 64


def hashed_fields(event: AuditEvent) -> dict[str, Any]:
    """The fields an event's hash covers."""
    return {
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


def canonical(event: AuditEvent) -> bytes:
    """The bytes an event's hash covers, in a fixed order."""
    return json.dumps(hashed_fields(event), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


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
    """Append one record to the chain.

    Called inside a transaction, the record joins it (no savepoint): it is
    committed with what it records, and a failed append fails the whole
    transaction, so a caller must not catch the error and carry on.
    """
    if user is None and request is not None:
        user = getattr(request, "user", None)
    is_user = user is not None and getattr(user, "is_authenticated", False)
    event = AuditEvent(
        timestamp=timezone.now(),
        actor=_text(actor if actor is not None else (user.get_username() if is_user else ""))[:150],
        actor_id=user.pk if is_user else None,
        action=_text(action)[:64],
        outcome=_text(outcome)[:16],
        source_ip=client_ip(request),
        user_agent=_text(request.META.get("HTTP_USER_AGENT", "") if request is not None else "")[:256],
        patient_id=_text(patient_id)[:64],
        study_instance_uid=_text(study_instance_uid)[:64],
        detail=_clean(detail or {}),
    )
    _append(event)
    return event


def _text(value: str) -> str:
    """``value`` without NUL, which PostgreSQL text and jsonb refuse (a hostile parameter must not fail a record)."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _clean(value: Any) -> Any:
    """``value`` (a detail) with :func:`_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _append(event: AuditEvent) -> None:
    """Link ``event`` to the chain head and insert it: three statements in one transaction.

    ``UPDATE … RETURNING`` both takes the head row's write lock (PostgreSQL
    row lock; SQLite writes are serialised by ``BEGIN IMMEDIATE``) and reads the
    previous hash, so concurrent appends stay linear. Raw SQL because the
    ORM's save machinery cost more than the statements themselves on every
    audited read.
    """
    using = router.db_for_write(AuditEvent)
    connection = connections[using]
    sql = _statements(connection)
    # Inside a caller's transaction (an ingest writing its index rows) the record
    # commits or rolls back with it: no savepoint, and a failed append fails the whole.
    with write_lock(using), transaction.atomic(using=using, savepoint=False), connection.cursor() as cursor:
        cursor.execute(sql.take_head, [])
        row = cursor.fetchone()
        if row is None:  # the first record ever: create the head, then take it
            cursor.execute(sql.create_head, [GENESIS])
            cursor.execute(sql.take_head, [])
            row = cursor.fetchone()
        event.prev_hash = row[0]
        event.hash = compute_hash(event)
        cursor.execute(sql.insert_event, [f.get_db_prep_save(getattr(event, f.attname), connection) for f in _FIELDS])
        event.pk = cursor.fetchone()[0]
        cursor.execute(sql.move_head, [event.hash])
    event._state.adding = False
    event._state.db = using


_FIELDS = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]


@dataclass(frozen=True)
class _Statements:
    take_head: str
    create_head: str
    insert_event: str
    move_head: str


@per_vendor
def _statements(quote: Callable[[str], str]) -> _Statements:
    # Only model metadata is interpolated (quoted table and column names); values are parameters.
    head = quote(ChainHead._meta.db_table)
    table = quote(AuditEvent._meta.db_table)
    columns = ", ".join(quote(str(f.column)) for f in _FIELDS)
    marks = ", ".join(["%s"] * len(_FIELDS))
    return _Statements(
        take_head=f"UPDATE {head} SET count = count + 1 WHERE id = 1 RETURNING last_hash",  # noqa: S608
        create_head=f"INSERT INTO {head} (id, last_hash, count) VALUES (1, %s, 0) ON CONFLICT DO NOTHING",  # noqa: S608
        insert_event=f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id",  # noqa: S608
        move_head=f"UPDATE {head} SET last_hash = %s WHERE id = 1",  # noqa: S608
    )


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
