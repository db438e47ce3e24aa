"""Claiming a study for reading: one reader at a time, atomically, audited.

A claim is a compare-and-set: the row is read, the move is judged
(:func:`portal.worklist.statuses.check`), and one conditional ``UPDATE``
writes it only if the row still holds what was read (status, holder, last
activity). Of two readers claiming at the same moment exactly one UPDATE
matches, on SQLite (writers are serialised) and on PostgreSQL (the second
UPDATE waits for the first's row lock, then re-checks its WHERE against the
committed row and matches nothing); the other gets :class:`ClaimRefused`
naming who holds the study.

A claim expires when its holder shows no activity (:func:`touch`: opening
the study from the worklist, the report editor's autosave; :func:`heartbeat`:
the viewer page, every few seconds while it is open and visible) for
``PACS_WORKLIST_CLAIM_IDLE_SECONDS``: another reader may then take it, and
:func:`expire_claims` (``manage.py worklist_expire``) puts such studies back
to ``ready``. An administrator may take over or release anyone's claim
(an override). Every claim, release, take-over, override, expiry and refusal
is an audit record, written in the transaction that makes the change.

Every function takes ``now`` so tests control the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.trail import record
from pacs.lib.dblock import write_lock
from portal.access import is_administrator
from portal.accounts.roles import Role, roles_of
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import CLAIMABLE, Status, check


class ClaimRefused(Exception):
    """The study cannot be claimed (or released) by this user now; ``holder`` names who has it, if anyone.

    ``status`` is the HTTP answer: 409 when the study's state is in the way (someone holds it), 403 when
    this user may never do it (not a reader, not an administrator).
    """

    def __init__(self, message: str, holder: str = "", status: int = 409) -> None:
        super().__init__(message)
        self.holder = holder
        self.status = status


@dataclass(frozen=True)
class _Seen:
    status: str
    claimed_by_id: int | None
    claim_touched_at: datetime | None


def idle_limit() -> timedelta:
    return timedelta(seconds=settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS)


def is_expired(touched: datetime | None, now: datetime | None = None) -> bool:
    return touched is not None and touched < (now or timezone.now()) - idle_limit()


def may_claim(user: Any) -> bool:
    """Readers claim: radiologists and administrators."""
    return is_administrator(user) or Role.RADIOLOGIST in roles_of(user)


def _username(user_id: int | None) -> str:
    if user_id is None:
        return ""
    user = get_user_model().objects.filter(pk=user_id).first()
    return user.get_username() if user is not None else "a former user"


def _read(item_id: int) -> _Seen:
    row = WorklistItem.objects.filter(pk=item_id).values("status", "claimed_by_id", "claim_touched_at").get()
    return _Seen(row["status"], row["claimed_by_id"], row["claim_touched_at"])


def _swap(item_id: int, seen: _Seen, **changes: Any) -> bool:
    """The conditional UPDATE: write ``changes`` only if the row still holds ``seen``."""
    rows = WorklistItem.objects.filter(
        pk=item_id,
        status=seen.status,
        **({"claimed_by__isnull": True} if seen.claimed_by_id is None else {"claimed_by_id": seen.claimed_by_id}),
        **(
            {"claim_touched_at__isnull": True}
            if seen.claim_touched_at is None
            else {"claim_touched_at": seen.claim_touched_at}
        ),
    )
    return rows.update(**changes) == 1


def _audit(
    action: str, request: HttpRequest | None, user: Any, item: WorklistItem, outcome: str = "success", **detail: Any
) -> None:
    record(
        action,
        request,
        user=user,
        outcome=outcome,
        patient_id=item.patient_id,
        study_instance_uid=item.study_instance_uid,
        detail={k: v for k, v in detail.items() if v not in ("", None)},
    )


def refuse(action: str, request: HttpRequest | None, user: Any, item: WorklistItem, refused: ClaimRefused) -> None:
    """The audit record of a refused claim or release (written on its own: nothing else changed)."""
    _audit(action, request, user, item, outcome="denied", reason=str(refused), holder=refused.holder)


def claim(
    item: WorklistItem,
    user: Any,
    request: HttpRequest | None = None,
    *,
    override: bool = False,
    now: datetime | None = None,
) -> WorklistItem:
    """Lock ``item`` to ``user``; :class:`ClaimRefused` when someone else holds it (unless an administrator overrides).

    Claiming one's own claim again only refreshes its activity.
    """
    now = now or timezone.now()
    if not may_claim(user):
        raise ClaimRefused("only radiologists and administrators claim studies", status=403)
    if override and not is_administrator(user):
        raise ClaimRefused("only administrators may override a claim", status=403)
    with write_lock(), transaction.atomic():
        seen = _read(item.pk)
        if seen.status not in CLAIMABLE:
            raise ClaimRefused(f"a study that is {Status(seen.status).label.lower()} cannot be claimed")
        holder = seen.claimed_by_id
        mine = holder == user.pk and seen.status == Status.IN_PROGRESS
        expired = holder is not None and is_expired(seen.claim_touched_at, now)
        if holder is not None and not mine and not expired and not override:
            name = _username(holder)
            raise ClaimRefused(f"claimed by {name}", holder=name)
        check(seen.status, Status.IN_PROGRESS)
        changes: dict[str, Any] = {"claim_touched_at": now, "updated_at": now}
        if not mine:
            changes |= {
                "status": Status.IN_PROGRESS,
                "claimed_by_id": user.pk,
                "claimed_at": now,
                "reader_name": user.get_username()[:150],
            }
        if not _swap(item.pk, seen, **changes):
            current = _read(item.pk)
            name = _username(current.claimed_by_id)
            raise ClaimRefused(f"claimed by {name}" if name else "the study changed: try again", holder=name)
        if not mine:
            previous = _username(holder) if holder is not None else ""
            if override and previous and not expired:
                _audit("worklist_claim_override", request, user, item, previous_holder=previous)
            else:
                _audit("worklist_claim", request, user, item, took_over_expired_claim_of=previous)
    item.refresh_from_db()
    return item


def release(
    item: WorklistItem, user: Any, request: HttpRequest | None = None, *, now: datetime | None = None
) -> WorklistItem:
    """Give a claimed study back (``ready``): its holder may, and an administrator (an override)."""
    now = now or timezone.now()
    with write_lock(), transaction.atomic():
        seen = _read(item.pk)
        if seen.status != Status.IN_PROGRESS or seen.claimed_by_id is None:
            raise ClaimRefused("the study is not claimed")
        holder = _username(seen.claimed_by_id)
        if seen.claimed_by_id != user.pk and not is_administrator(user):
            raise ClaimRefused(f"claimed by {holder}", holder=holder)
        check(seen.status, Status.READY)
        if not _swap(item.pk, seen, **_unclaimed(item, now)):
            raise ClaimRefused("the study changed: try again", holder=_username(_read(item.pk).claimed_by_id))
        if seen.claimed_by_id == user.pk:
            _audit("worklist_release", request, user, item)
        else:
            _audit("worklist_release_override", request, user, item, previous_holder=holder)
    item.refresh_from_db()
    return item


def _unclaimed(item: WorklistItem, now: datetime) -> dict[str, Any]:
    reader = item.assigned_reader.get_username() if item.assigned_reader_id and item.assigned_reader else ""
    group = item.assigned_group.name if item.assigned_group_id and item.assigned_group else ""
    return {
        "status": Status.READY,
        "claimed_by_id": None,
        "claimed_at": None,
        "claim_touched_at": None,
        "reader_name": (reader or group)[:150],
        "updated_at": now,
    }


def touch(item: WorklistItem, user: Any, now: datetime | None = None) -> bool:
    """Record activity of the holder on its claim (keeps it from expiring); False if ``user`` does not hold it."""
    now = now or timezone.now()
    with write_lock(), transaction.atomic():
        rows = WorklistItem.objects.filter(pk=item.pk, status=Status.IN_PROGRESS, claimed_by_id=user.pk)
        return rows.update(claim_touched_at=now) == 1


def heartbeat_seconds() -> int:
    """How often an open viewer beats: a quarter of the idle limit, at most a minute (a lost beat is harmless)."""
    return max(1, min(60, settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS // 4))


def heartbeat(item: WorklistItem, user: Any, now: datetime | None = None) -> bool:
    """The viewer of a claimed study is open: refresh the claim's idle timer if ``user`` holds it; False otherwise.

    Only a live claim is refreshed: one already idle past the limit stays
    expired (another reader may take it), as it would have been swept. A beat
    of someone who holds nothing is a read, never a write. Not audited: the
    claim it keeps alive is, and its expiry or release will be.
    """
    now = now or timezone.now()
    live = WorklistItem.objects.filter(
        pk=item.pk, status=Status.IN_PROGRESS, claimed_by_id=user.pk, claim_touched_at__gte=now - idle_limit()
    )
    if not live.exists():
        return False
    # Claim activity, not a record: a power cut that loses a beat only makes the claim look a beat older.
    with write_lock(durable=False), transaction.atomic():
        return live.update(claim_touched_at=now) == 1


def expire_claims(now: datetime | None = None) -> int:
    """Put every study whose claim has been idle too long back to ``ready``; each one audited. Returns how many."""
    now = now or timezone.now()
    cutoff = now - idle_limit()
    expired = 0
    stale = WorklistItem.objects.filter(status=Status.IN_PROGRESS, claim_touched_at__lt=cutoff)
    for item in stale.select_related("assigned_reader", "assigned_group"):
        with write_lock(), transaction.atomic():
            seen = _Seen(item.status, item.claimed_by_id, item.claim_touched_at)
            if _swap(item.pk, seen, **_unclaimed(item, now)):
                record(
                    "worklist_claim_expired",
                    actor="worklist",
                    patient_id=item.patient_id,
                    study_instance_uid=item.study_instance_uid,
                    detail={
                        "previous_holder": _username(seen.claimed_by_id),
                        "idle_seconds": int(idle_limit().total_seconds()),
                    },
                )
                expired += 1
    return expired
