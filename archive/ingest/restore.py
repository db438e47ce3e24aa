"""Restores: objects on a tier that needs a restore (S3 GLACIER, DEEP_ARCHIVE) brought back to an immediate tier.

A read of a NEARLINE object, ``manage.py tiers restore`` or a new study's
priors (:mod:`archive.ingest.priors`) call :func:`request_restores`: one
:class:`~archive.models.Restore` row per object, at most one in flight per
object (a unique constraint: asking again, from any number of requests at
once, adds nothing), written with its audit record, and the background task
(:func:`archive.ingest.tasks.run_restores`) scheduled once it commits.

The task (:func:`run_restores`, on the database worker, polling every
``PACS_RESTORE_POLL_SECONDS`` while any restore is under way) calls
:func:`advance_restores`, which takes every row one step further, each step
recorded only once done:

1. ``REQUESTED → RESTORING``: ask the tier for a readable temporary copy
   (S3 RestoreObject; asking twice is harmless);
2. ``RESTORING → COPYING``: poll it (S3 HEAD, ``x-amz-restore``); once readable,
   plan a move back to an immediate tier (``PACS_RESTORE_TIER``) in the same
   transaction, then
3. ``COPYING → DONE``: the mover's crash-safe steps (copy → verify SHA-256 →
   switch the index → keep or delete the source, ``PACS_RESTORE_KEEP_SOURCE``)
   carry the object over; once the index points to the immediate tier the
   object is ONLINE and every read path serves it again.

A crash anywhere leaves each row at its last recorded step and each move in
the mover's ledger: running :func:`advance_restores` again resumes both.
"""

from __future__ import annotations

import logging
import statistics
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_tasks import TaskResultStatus, task

from archive.ingest.mover import Fault, Mover, plan_moves
from archive.models import (
    ACTIVE_MOVE_STATES,
    ACTIVE_RESTORE_STATES,
    Availability,
    Instance,
    Restore,
    RestoreState,
    Retrieval,
    TierMove,
    tier_retrieval,
)
from archive.storage import registry
from archive.storage.base import reason
from archive.storage.keys import log_name
from archive.storage.registry import get_storage
from audit.trail import record

log = logging.getLogger(__name__)

#: How long a restore of each retrieval class usually takes (AWS: expedited minutes, standard 3-5 hours).
ESTIMATE_SECONDS = {Retrieval.MINUTES: 5 * 60, Retrieval.HOURS: 5 * 3600}
#: Attempts at copying an object back before the restore is given up (the object stays on its tier).
MAX_ATTEMPTS = 3


@dataclass
class RestoreRequest:
    """What :func:`request_restores` found: objects now restoring and when they should be back."""

    asked: int = 0  # new restores written by this call
    in_flight: int = 0  # restores under way for the objects asked about (new or not)
    seconds_left: int = 0  # estimate until the last of them is back


@dataclass
class RestoreReport:
    """What one :func:`advance_restores` pass did."""

    requested: int = 0  # RestoreObject sent
    ready: int = 0  # temporary copies found readable (moves planned)
    done: int = 0
    failed: list[str] = field(default_factory=list)
    active: int = 0  # still under way afterwards


def restore_tier() -> str:
    return str(settings.PACS_RESTORE_TIER)


def clock() -> datetime:
    """Now: when a restore is asked for and done, and what estimates count from (tests replace it)."""
    return timezone.now()


def estimate_seconds(tier: str) -> int:
    """How long a restore from ``tier`` takes: measured (:func:`measured_seconds`), else the tier's default."""
    retrieval = tier_retrieval(tier)
    if retrieval == Retrieval.IMMEDIATE:
        return 0
    measured = measured_seconds(tier)
    return measured if measured is not None else default_estimate_seconds(tier, retrieval)


def measured_seconds(tier: str) -> int | None:
    """The median duration (asked → back online) of the last ``PACS_RESTORE_ESTIMATE_HISTORY`` restores from ``tier``.

    Only restores that really went through the tier count (their temporary
    copy became readable: ``ready_at`` is set), not those found settled
    (moved away or deleted meanwhile). None without such history.
    """
    history = int(settings.PACS_RESTORE_ESTIMATE_HISTORY)
    if history <= 0:
        return None
    rows = (
        Restore.objects.filter(source_tier=tier, state=RestoreState.DONE, ready_at__isnull=False, done_at__isnull=False)
        .order_by("-done_at", "-id")
        .values_list("requested_at", "done_at")[:history]
    )
    durations = [(done - asked).total_seconds() for asked, done in rows if done is not None and done >= asked]
    if not durations:
        return None
    return max(1, round(statistics.median(durations)))


def default_estimate_seconds(tier: str, retrieval: str) -> int:
    """The tier's estimate without history: ``restore_minutes`` in its ``PACS_TIERS`` entry, else by class.

    By retrieval class: minutes 5 min, hours 5 h (AWS standard retrieval),
    DEEP_ARCHIVE 12 h; offline (brought back by hand, then copied) as minutes.
    """
    configured = (registry.environment_config(tier) or {}).get("restore_minutes")
    if configured is not None:
        return max(1, round(float(configured) * 60))
    if retrieval == Retrieval.MANUAL:
        return ESTIMATE_SECONDS[Retrieval.MINUTES]
    storage_class = str(getattr(_storage_or_none(tier), "storage_class", "")).upper()
    if storage_class == "DEEP_ARCHIVE":
        return 12 * 3600
    return ESTIMATE_SECONDS.get(Retrieval(retrieval), ESTIMATE_SECONDS[Retrieval.HOURS])


def _storage_or_none(tier: str) -> object | None:
    try:
        return get_storage(tier)
    except OSError:
        return None


def seconds_left(restores: Iterable[Restore], now: datetime | None = None) -> int:
    """The estimate until the last of ``restores`` is back (at least a minute while any is under way)."""
    now = now or clock()
    left = 0
    estimates: dict[str, int] = {}
    for restore in restores:
        if restore.state not in ACTIVE_RESTORE_STATES:
            continue
        if restore.source_tier not in estimates:
            estimates[restore.source_tier] = estimate_seconds(restore.source_tier)
        expected = restore.requested_at + timedelta(seconds=estimates[restore.source_tier])
        remaining = 60 if restore.state == RestoreState.COPYING else int((expected - now).total_seconds())
        left = max(left, remaining, 60)
    return left


def request_restores(
    instances: QuerySet[Instance],
    reason: str,
    request: HttpRequest | None = None,
    actor: str | None = None,
    study_instance_uid: str = "",
    patient_id: str = "",
    include_offline: bool = False,
) -> RestoreRequest:
    """Restore every NEARLINE object of ``instances`` not already restoring; schedule the work; audit it.

    OFFLINE objects (media that need a person) are restored only when
    ``include_offline`` says so: an administrator's ``tiers restore`` once the
    media are back; a read, a retrieve, an export or a new study's priors never
    start one. Idempotent: an object with a restore in flight gets no second
    one (the ``one_active_restore`` constraint settles two requests racing).
    """
    target = restore_tier()
    wanted = [Availability.NEARLINE, Availability.OFFLINE] if include_offline else [Availability.NEARLINE]
    nearline = instances.filter(availability__in=wanted).order_by()
    busy = set(
        Restore.objects.filter(instance__in=nearline.values("pk"), state__in=ACTIVE_RESTORE_STATES).values_list(
            "instance_id", flat=True
        )
    )
    todo = [(pk, tier) for pk, tier in nearline.values_list("pk", "tier") if pk not in busy]
    asked = 0
    if todo:
        now = clock()
        rows = [
            Restore(instance_id=pk, source_tier=tier, target_tier=target, reason=reason, requested_at=now)
            for pk, tier in todo
        ]
        with transaction.atomic():
            # ignore_conflicts: a concurrent request that wrote the same object's restore first wins, quietly.
            Restore.objects.bulk_create(rows, ignore_conflicts=True)
            record(
                "restore",
                request,
                actor=actor,
                study_instance_uid=study_instance_uid,
                patient_id=patient_id,
                detail={"objects": len(todo), "reason": reason, "to": target},
            )
        asked = len(todo)
        transaction.on_commit(schedule)
    active = list(
        Restore.objects.filter(instance__in=nearline.values("pk"), state__in=ACTIVE_RESTORE_STATES).only(
            "state", "source_tier", "requested_at"
        )
    )
    return RestoreRequest(asked=asked, in_flight=len(active), seconds_left=seconds_left(active))


@dataclass
class Held:
    """What a retrieve (C-GET, C-MOVE, export) did about the instances it could not read now."""

    restoring: int = 0  # NEARLINE: restores under way (started by this call or before)
    offline: int = 0  # OFFLINE: nothing started, an administrator must bring the media back
    seconds_left: int = 0

    @property
    def minutes(self) -> int:
        return max(1, round(self.seconds_left / 60))

    @property
    def comment(self) -> str:
        """At most 64 characters (an Error Comment, LO): what was started and when to retry."""
        parts = []
        if self.restoring:
            parts.append(f"{self.restoring} restoring, retry in about {self.minutes} min")
        if self.offline:
            parts.append(f"{self.offline} offline (ask an admin)")
        return "; ".join(parts)[:64]


def restore_for_retrieve(
    ids: list[int], actor: str, request: HttpRequest | None = None, reason: str = "retrieve"
) -> Held:
    """Start the restores of the instances ``ids`` a retrieve could not read (one audited request per study)."""
    held = Held()
    rows = Instance.objects.filter(pk__in=ids)
    studies = rows.values_list(
        "series__study_id", "series__study__study_instance_uid", "series__study__patient__patient_id"
    )
    for study_id, study_uid, patient_id in sorted(set(studies)):
        asked = request_restores(
            rows.filter(series__study_id=study_id),
            reason,
            request,
            actor=actor,
            study_instance_uid=study_uid,
            patient_id=patient_id,
        )
        held.restoring += asked.in_flight
        held.seconds_left = max(held.seconds_left, asked.seconds_left)
    held.offline = rows.filter(availability=Availability.OFFLINE).count()
    return held


def schedule(delay: float = 0.0) -> None:
    """Enqueue :func:`run_restores` (unless a run is already waiting), ``delay`` seconds from now."""
    if restore_task_waiting():
        return
    if delay:
        run_restores.using(run_after=timezone.now() + timedelta(seconds=delay)).enqueue()
    else:
        run_restores.enqueue()


def restore_task_waiting() -> bool:
    """Whether a run of :func:`run_restores` is already queued (database backend; otherwise assume not)."""
    try:
        from django_tasks_db.models import DBTaskResult
    except ImportError:  # another backend: a second run is harmless, every step is idempotent
        return False
    return DBTaskResult.objects.filter(task_path=run_restores.module_path, status=TaskResultStatus.READY).exists()


@task()
def run_restores() -> dict[str, int]:
    """Advance every restore in flight; while any is still under way, run again after ``PACS_RESTORE_POLL_SECONDS``."""
    report = advance_restores()
    if report.active:
        schedule(float(settings.PACS_RESTORE_POLL_SECONDS))
    return {"requested": report.requested, "ready": report.ready, "done": report.done, "failed": len(report.failed)}


def advance_restores(fault: Fault | None = None) -> RestoreReport:
    """Take every restore in flight as far as it can go now (see the module docstring)."""
    report = RestoreReport()
    _ask(report)
    _poll(report)
    _copy(report, fault)
    report.active = Restore.objects.filter(state__in=ACTIVE_RESTORE_STATES).count()
    return report


def _finish(restore: Restore, report: RestoreReport) -> None:
    updated = Restore.objects.filter(pk=restore.pk, state__in=ACTIVE_RESTORE_STATES).update(
        state=RestoreState.DONE, done_at=clock(), error=""
    )
    report.done += updated


def _fail(restore: Restore, why: str, report: RestoreReport) -> None:
    with transaction.atomic():
        Restore.objects.filter(pk=restore.pk, state__in=ACTIVE_RESTORE_STATES).update(
            state=RestoreState.FAILED, error=why[:500], done_at=clock()
        )
        record(
            "restore",
            actor="restore",
            outcome="failure",
            detail={"object": log_name(restore.instance.storage_key), "why": why},
        )
    report.failed.append(f"{log_name(restore.instance.storage_key)}: {why}")


def _settled(restore: Restore) -> bool:
    """Whether the object no longer needs this restore (deleted, moved elsewhere, or already back)."""
    inst = restore.instance
    return inst.tier != restore.source_tier or inst.availability == Availability.ONLINE


def _ask(report: RestoreReport) -> None:
    days = int(settings.PACS_RESTORE_DAYS)
    for restore in Restore.objects.filter(state=RestoreState.REQUESTED).select_related("instance").order_by("id"):
        if _settled(restore):
            _finish(restore, report)
            continue
        try:
            get_storage(restore.source_tier).restore(restore.instance.storage_key, days)
        except OSError as exc:
            log.warning("restore of %s not asked for yet: %s", log_name(restore.instance.storage_key), reason(exc))
            Restore.objects.filter(pk=restore.pk).update(error=reason(exc)[:500])
            continue
        report.requested += Restore.objects.filter(pk=restore.pk, state=RestoreState.REQUESTED).update(
            state=RestoreState.RESTORING, error=""
        )


def _poll(report: RestoreReport) -> None:
    target = restore_tier()
    days = int(settings.PACS_RESTORE_DAYS)
    ready: list[tuple[Restore, datetime | None]] = []
    for restore in Restore.objects.filter(state=RestoreState.RESTORING).select_related("instance").order_by("id"):
        if _settled(restore):
            _finish(restore, report)
            continue
        storage = get_storage(restore.source_tier)
        key = restore.instance.storage_key
        try:
            status = storage.restore_status(key)
            if not status.readable and not status.ongoing:
                storage.restore(key, days)  # the tier forgot it, or the temporary copy expired: ask again
        except OSError as exc:
            Restore.objects.filter(pk=restore.pk).update(error=reason(exc)[:500])
            continue
        if status.readable:
            ready.append((restore, status.expiry))
    if not ready:
        return
    batch = "restore-" + uuid.uuid4().hex[:8]
    now = clock()
    with transaction.atomic():
        plan_moves(
            Instance.objects.filter(pk__in=[r.instance_id for r, _ in ready]),
            target,
            batch=batch,
            actor="restore",
            keep_source=bool(settings.PACS_RESTORE_KEEP_SOURCE),
        )
        for restore, expiry in ready:
            report.ready += Restore.objects.filter(pk=restore.pk, state=RestoreState.RESTORING).update(
                state=RestoreState.COPYING, batch=batch, ready_at=now, expires_at=expiry
            )


def _copy(report: RestoreReport, fault: Fault | None) -> None:
    copying = list(Restore.objects.filter(state=RestoreState.COPYING).select_related("instance").order_by("id"))
    if not copying:
        return
    ids = [r.instance_id for r in copying]
    # Whatever batch holds an object's move (a crash may have left it in an earlier one).
    batches = set(
        TierMove.objects.filter(instance_id__in=ids, state__in=ACTIVE_MOVE_STATES).values_list("batch", flat=True)
    )
    for batch in sorted(batches):
        Mover(batch, fault=fault).run()
    where = dict(Instance.objects.filter(pk__in=ids).values_list("pk", "tier"))
    moving = set(
        TierMove.objects.filter(instance_id__in=ids, state__in=ACTIVE_MOVE_STATES).values_list("instance_id", flat=True)
    )
    for restore in copying:
        tier = where.get(restore.instance_id)
        if tier is None or tier_retrieval(tier) == Retrieval.IMMEDIATE:
            _finish(restore, report)
        elif restore.instance_id not in moving:
            # The move failed or was never planned (another move held the object): try again, a few times.
            last = TierMove.objects.filter(instance_id=restore.instance_id).order_by("-id").first()
            if restore.attempts + 1 >= MAX_ATTEMPTS:
                _fail(
                    restore, last.error if last is not None and last.error else "the copy back did not finish", report
                )
            else:
                Restore.objects.filter(pk=restore.pk, state=RestoreState.COPYING).update(
                    state=RestoreState.RESTORING, attempts=restore.attempts + 1
                )
