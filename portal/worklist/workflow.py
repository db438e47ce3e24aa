"""Status changes that are not claims: a technologist (or an administrator) marks a study ready or QC-failed,
and the report's moves (preliminary, final, amended) and critical flag, which :mod:`portal.reports` makes.

Each move goes through :func:`portal.worklist.statuses.check` and is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.trail import record
from pacs.lib.dblock import write_lock
from portal.access import is_administrator
from portal.accounts.roles import Role, roles_of
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import InvalidTransition, Status, check


def may_qc(user: Any) -> bool:
    """Technologists and administrators judge image quality."""
    return is_administrator(user) or Role.TECHNOLOGIST in roles_of(user)


def set_status(
    item: WorklistItem,
    wanted: Status,
    user: Any,
    request: HttpRequest | None = None,
    now: datetime | None = None,
    reason: str = "",
) -> WorklistItem:
    """Move ``item`` to ``wanted`` (ready or QC-failed), checked by the state machine, in one audited transaction.

    ``reason`` (why QC failed) goes into the audit record.

    :class:`~portal.worklist.statuses.InvalidTransition` if the move is not allowed
    from the row's current status (read under the write, so a concurrent claim wins cleanly).
    """
    if wanted not in (Status.READY, Status.QC_FAILED):
        raise InvalidTransition(item.status, wanted)
    now = now or timezone.now()
    with write_lock(), transaction.atomic():
        current = WorklistItem.objects.filter(pk=item.pk).values_list("status", flat=True).get()
        check(current, wanted)
        if current == Status.IN_PROGRESS:  # only a release leaves "in progress" for ready
            raise InvalidTransition(current, wanted)
        changed = WorklistItem.objects.filter(pk=item.pk, status=current).update(status=wanted, updated_at=now)
        if not changed:
            raise InvalidTransition(current, wanted)
        record(
            "worklist_status",
            request,
            user=user,
            patient_id=item.patient_id,
            study_instance_uid=item.study_instance_uid,
            detail={"from": current, "to": str(wanted), **({"reason": reason} if reason else {})},
        )
    item.refresh_from_db()
    return item


def follow_report(
    study_id: int, wanted: Status, user: Any, request: HttpRequest | None = None, now: datetime | None = None
) -> None:
    """Move the study's row to the status of its report just signed (preliminary, final or amended).

    Called inside the report's transaction (under its write lock), so the row and the
    report change together; :class:`InvalidTransition` if the row's status does not allow it.
    A study without a row (none was kept for it) has nothing to follow.
    """
    now = now or timezone.now()
    item = WorklistItem.objects.filter(study_id=study_id).first()
    if item is None:
        return
    check(item.status, wanted)
    if not WorklistItem.objects.filter(pk=item.pk, status=item.status).update(status=wanted, updated_at=now):
        raise InvalidTransition(item.status, wanted)
    record(
        "worklist_status",
        request,
        user=user,
        patient_id=item.patient_id,
        study_instance_uid=item.study_instance_uid,
        detail={"from": item.status, "to": str(wanted), "by": "report"},
    )


def flag_critical(study_id: int, now: datetime | None = None) -> None:
    """Show the study's row as holding a critical result (inside the report's transaction)."""
    WorklistItem.objects.filter(study_id=study_id).update(critical=True, updated_at=now or timezone.now())
