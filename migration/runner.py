"""Running a migration job: inventory, retrieval and reconciliation, resumable at any point.

:func:`run` is what ``manage.py import_legacy`` and the task worker call. A run
first takes the job's lease (a row lease in the database, renewed as it
works, so one job never runs twice at once; a lease whose process on this
machine is gone is taken over at once), records ``migration_start`` in the
audit trail, finishes the inventory from its cursor, then retrieves every
instance not yet complete, series by series, most recent studies first:

- an instance that is already in the index (a run killed after the legacy
  PACS sent it, or one stored by other means) is reconciled, not fetched again;
- a series whose every instance is still to fetch, and not larger than one
  batch, is asked for at SERIES level, anything else at IMAGE level with a
  list of SOP Instance UIDs (C-MOVE to this node, or C-GET);
- after each request every instance asked for is looked up in the index
  (:mod:`migration.reconcile`); those that did not arrive are asked for once
  more, one by one, and are *missing* if they still do not come.

Before each request the run waits for its working-hours window and its rate
limit, renews its lease and reads whether a stop was requested. It ends
``complete``, ``stopped`` (on request, Ctrl-C or SIGTERM) or ``failed`` (the
legacy PACS unreachable, ...), and records ``migration_stop`` with that outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.http import HttpRequest
from django.utils import timezone
from pynetdicom.events import Event

from archive.dimse.store import Session, StoreSCP, site_sender
from archive.models import Instance
from audit.models import AuditEvent
from audit.trail import record
from migration import reconcile
from migration.inventory import inventory
from migration.lease import LEASE, claim, new_owner
from migration.models import TO_RETRIEVE, Job, JobState, LedgerInstance, LedgerSeries, LedgerStudy, Method, State
from migration.schedule import Pacer, Window
from migration.scu import LegacyPeer, PeerError, RetrieveOutcome
from pacs.lib.dblock import write_lock

log = logging.getLogger(__name__)
BATCH = 200  # instances asked for in one request at most (fewer under a rate limit)
ARRIVAL_GRACE = 1.0  # seconds an instance not there after the final response is looked for again


class Stopped(Exception):
    """A stop was requested (or the lease was lost): the run ends between two requests."""


@dataclass
class Progress:
    """What a run reports as it goes (the command draws its progress bar from it)."""

    phase: str  # "inventory", "retrieve", "waiting", "done"
    done: int = 0
    total: int = 0
    received: int = 0
    received_bytes: int = 0
    seconds: float = 0.0
    note: str = ""


Reporter = Callable[[Progress], None]


def window_of(job: Job) -> Window | None:
    if job.window_start is None or job.window_end is None:
        return None
    return Window(job.window_start, job.window_end)


def request_stop(job: Job, request: HttpRequest | None, actor: str | None = None) -> None:
    """Ask a running (or queued) job to stop at its next check; audited as ``migration_stop`` (requested)."""
    with write_lock(), transaction.atomic():
        Job.objects.filter(pk=job.pk).update(stop_requested=True)
        record("migration_stop", request, actor=actor, detail={**job_detail(job), "step": "requested"})


def job_detail(job: Job) -> dict[str, Any]:
    return {"job": job.pk, "legacy_ae": job.device.ae_title, "host": job.host, "port": job.port}


def run(
    job: Job,
    actor: str,
    reporter: Reporter | None = None,
    request: HttpRequest | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run ``job`` until it is complete, stopped or failed; its final state. :class:`JobBusy` if it runs elsewhere."""
    return Runner(job, actor, reporter or (lambda p: None), request, sleep).run()


class Runner:
    def __init__(
        self,
        job: Job,
        actor: str,
        reporter: Reporter,
        request: HttpRequest | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.job = job
        self.actor = actor
        self.reporter = reporter
        self.request = request
        self.sleep = sleep
        self.owner = new_owner()
        self.window = window_of(job)
        self.pacer = Pacer(job.rate_limit, sleep=sleep)
        self.last_check = 0.0
        self.peer = LegacyPeer(job.host, job.port, job.device.ae_title, settings.PACS_DIMSE_AE_TITLE)
        self.run_received = 0
        self.run_bytes = 0
        self.run_seconds = 0.0
        self.reported = 0.0

    # --- The run as a whole ---

    def run(self) -> str:
        job = self.job
        claim(job, self.owner)
        job.refresh_from_db()
        if job.state == JobState.COMPLETE:  # a re-run: list the legacy PACS again, fetch only what is new
            job.inventory_done, job.inventory_cursor = False, None
        job.state, job.stop_requested, job.last_error = JobState.RUNNING, False, ""
        job.started_at, job.finished_at = timezone.now(), None
        job.save()
        record("migration_start", self.request, actor=self.actor, detail={**job_detail(job), "step": "running"})
        outcome, state = "success", JobState.COMPLETE
        try:
            if not job.inventory_done and not inventory(job, self.peer, self.gate, self.on_day):
                raise Stopped
            self.retrieve()
        except (Stopped, KeyboardInterrupt, SystemExit) as exc:
            outcome, state = "stopped", JobState.STOPPED
            if not isinstance(exc, Stopped):
                job.last_error = "interrupted"
        except PeerError as exc:
            outcome, state, job.last_error = "failure", JobState.FAILED, str(exc)
            log.warning("migration job #%s failed: %s", job.pk, exc)
        except Exception as exc:
            outcome, state, job.last_error = "failure", JobState.FAILED, f"{type(exc).__name__}: {exc}"
            log.exception("migration job #%s failed", job.pk)
            raise
        finally:
            self.finish(state, outcome)
        return state

    def finish(self, state: str, outcome: str) -> None:
        job = self.job
        self.peer.close(abort=state != JobState.COMPLETE)
        if state == JobState.COMPLETE and job.instances.filter(state__in=(State.PENDING, State.IN_PROGRESS)).exists():
            state = JobState.STOPPED
        # An interrupted request leaves its instances in progress: they are reconciled first by the next run.
        with write_lock(), transaction.atomic():
            Job.objects.filter(pk=job.pk, lease_owner=self.owner).update(
                state=state,
                last_error=job.last_error,
                finished_at=timezone.now(),
                lease_owner="",
                lease_until=None,
            )
            record(
                "migration_stop",
                self.request,
                actor=self.actor,
                outcome=outcome,
                detail={
                    **job_detail(job),
                    "step": "ended",
                    "state": state,
                    "received": self.run_received,
                    "bytes": self.run_bytes,
                    "seconds": round(self.run_seconds, 3),
                    **({"error": job.last_error[:200]} if job.last_error else {}),
                },
            )
        job.refresh_from_db()
        self.reporter(Progress("done", note=state))

    # --- Checks between requests ---

    def gate(self) -> bool:
        """Renew the lease, honour a stop request, wait out the window; False: stop now."""
        self.heartbeat(force=True)
        if self.window is None or self.window.contains(timezone.localtime()):
            return True
        Job.objects.filter(pk=self.job.pk).update(state=JobState.WAITING)
        while not self.window.contains(timezone.localtime()):
            start = self.window.next_start(timezone.localtime())
            self.reporter(Progress("waiting", note=f"outside the window {self.window}; resumes at {start:%H:%M}"))
            self.sleep(min(5.0, max(0.1, (start - timezone.localtime()).total_seconds())))
            self.heartbeat(force=True)
        Job.objects.filter(pk=self.job.pk).update(state=JobState.RUNNING)
        return True

    def heartbeat(self, force: bool = False) -> None:
        """Renew the lease and read the stop flag (at most every two seconds unless forced); :class:`Stopped`."""
        now = time.monotonic()
        if not force and now - self.last_check < 2.0:
            return
        self.last_check = now
        renewed = Job.objects.filter(pk=self.job.pk, lease_owner=self.owner).update(lease_until=timezone.now() + LEASE)
        if not renewed:
            raise Stopped
        if Job.objects.filter(pk=self.job.pk, stop_requested=True).exists():
            raise Stopped

    def stopping(self) -> bool:
        try:
            self.heartbeat()
        except Stopped:
            return True
        return False

    def on_day(self, day: Any) -> None:
        self.reporter(Progress("inventory", note=f"listing studies of {day:%Y-%m-%d}"))

    # --- Retrieval ---

    def retrieve(self) -> None:
        job = self.job
        pending = LedgerSeries.objects.filter(study__job=job, instances__state__in=TO_RETRIEVE)
        ordered = pending.order_by("-study__study_date", "study_id", "id").values_list("id", flat=True)
        self.report()
        for series_id in dict.fromkeys(ordered):
            series = LedgerSeries.objects.select_related("study").get(pk=series_id)
            self.retrieve_series(series)
            refresh_study(series.study)
            if time.monotonic() - self.reported > 1.0:  # counting a large ledger is not free
                self.report()
        self.report()

    def retrieve_series(self, series: LedgerSeries) -> None:
        rows = list(
            LedgerInstance.objects.filter(series=series, state__in=TO_RETRIEVE)
            .select_related("series__study")
            .order_by("instance_number", "id")
        )
        left = self.settle(rows, {})  # what already arrived is not asked for again
        listed = series.instances.count()
        # A PACS that cuts C-FIND answers short lists fewer instances than it counts: ask for the whole series.
        counted = series.legacy_count or 0
        truncated = counted > listed
        if truncated and self.held(series) >= counted:
            self.adopt(series)
            truncated = False
        if not left and not truncated:
            return
        cap = self.pacer.batch_size(BATCH)
        whole = truncated or (len(left) <= cap and len(left) == series.legacy_count == listed)
        chunks = [left] if whole else [left[i : i + cap] for i in range(0, len(left), cap)]
        for chunk in chunks:
            outcome, still = self.fetch(series, chunk, whole)
            if still and (whole or len(chunk) > 1):  # a second chance, one by one
                for row in still:
                    _, again = self.fetch(series, [row], False)
                    if again:
                        self.missing(again, outcome)
            elif still:
                self.missing(still, outcome)

    def fetch(
        self, series: LedgerSeries, rows: list[LedgerInstance], whole: bool
    ) -> tuple[RetrieveOutcome, list[LedgerInstance]]:
        """Ask for ``rows`` (the whole series if ``whole``); the final response and the rows still not arrived."""
        if not self.gate() or not self.pacer.wait(len(rows), self.stopping):
            raise Stopped
        ids = [r.pk for r in rows]
        with write_lock(), transaction.atomic():
            LedgerInstance.objects.filter(pk__in=ids).update(
                state=State.IN_PROGRESS, attempts=F("attempts") + 1, updated_at=timezone.now()
            )
        keys: dict[str, Any] = {
            "StudyInstanceUID": series.study.study_instance_uid,
            "SeriesInstanceUID": series.series_instance_uid,
        }
        level = "SERIES"
        if not whole:
            level = "IMAGE"
            keys["SOPInstanceUID"] = [r.sop_instance_uid for r in rows]
        started_at, started = timezone.now(), time.monotonic()
        refused: dict[str, str] = {}
        if self.job.method == Method.GET:
            outcome = self.get(level, keys, rows, refused)
        else:
            destination = self.job.destination_ae or settings.PACS_DIMSE_AE_TITLE
            outcome = self.peer.move(level, keys, destination, self.heartbeat)
        for uid in outcome.failed_uids:
            refused.setdefault(uid, "named failed by the legacy PACS")
        if whole:
            rows = rows + self.adopt(series)
        still = self.settle(rows, refused, started_at)
        waited = 0.0
        # A PACS may answer a C-MOVE before its last C-STORE is through: look again for a moment.
        while waited < ARRIVAL_GRACE and any(r.sop_instance_uid not in refused for r in still):
            self.sleep(0.25)
            waited += 0.25
            still = self.settle(still, refused, started_at)
        for row in list(still):
            reason = refused.get(row.sop_instance_uid)
            if reason is not None:  # refused by this node and not stored: no second chance would change that
                self.mark(row, State.FAILED, f"C-STORE refused: {reason}")
                still.remove(row)
        self.run_seconds += time.monotonic() - started
        Job.objects.filter(pk=self.job.pk).update(work_seconds=F("work_seconds") + (time.monotonic() - started))
        return outcome, still

    def get(self, level: str, keys: dict[str, Any], rows: list[LedgerInstance], refused: dict[str, str]) -> Any:
        """C-GET: the sub-operations come back on our association and take the node's one C-STORE path."""
        device = self.job.device
        session = Session(
            device.ae_title, settings.PACS_DIMSE_AE_TITLE, self.job.host, site_sender(device.site), device
        )
        scp = StoreSCP(settings.PACS_DIMSE_AE_TITLE, settings.PACS_STOW_MAX_BYTES)

        def on_store(event: Event) -> Any:
            return scp.on_c_store(session, event)

        classes = sorted({r.sop_class_uid for r in rows if r.sop_class_uid})
        outcome = self.peer.get(level, keys, classes, on_store, self.heartbeat)
        for result in session.results:
            if not result.ok:
                refused[result.sop_instance_uid] = result.detail or result.outcome.value
        return outcome

    def held(self, series: LedgerSeries) -> int:
        """How many instances of ``series`` the index holds."""
        return Instance.objects.filter(series__series_instance_uid=series.series_instance_uid).count()

    def adopt(self, series: LedgerSeries) -> list[LedgerInstance]:
        """Ledger rows for instances of ``series`` that arrived without being listed (a C-FIND answer cut short)."""
        known = set(self.job.instances.filter(series=series).values_list("sop_instance_uid", flat=True))
        arrived = Instance.objects.filter(series__series_instance_uid=series.series_instance_uid).values_list(
            "sop_instance_uid", "sop_class_uid", "instance_number"
        )
        new = [
            LedgerInstance(
                job=self.job,
                series=series,
                sop_instance_uid=uid,
                sop_class_uid=sop_class,
                instance_number=number,
                state=State.IN_PROGRESS,
                attempts=1,
                last_error="arrived with its series; the legacy PACS did not list it",
            )
            for uid, sop_class, number in arrived
            if uid not in known
        ]
        if not new:
            return []
        with write_lock(), transaction.atomic():
            LedgerInstance.objects.bulk_create(new)
        return list(
            LedgerInstance.objects.filter(
                job=self.job, sop_instance_uid__in=[r.sop_instance_uid for r in new]
            ).select_related("series__study")
        )

    def store_records(self, rows: list[LedgerInstance], since: datetime | None) -> tuple[set[str], dict[str, str]]:
        """From the node's own audit records of C-STOREs by the legacy device since ``since``, for ``rows``.

        The SOP Instance UIDs it delivered (stored, or identical to the object already held: either way the data set
        we hold is the one it sent), and those it was refused, with why.
        """
        if since is None or not rows:
            return set(), {}
        events = AuditEvent.objects.filter(
            action="store",
            actor=f"AE:{self.job.device.ae_title}",
            timestamp__gte=since,
            detail__sop_instance_uid__in=[r.sop_instance_uid for r in rows],
        ).values_list("outcome", "detail")
        delivered: set[str] = set()
        refused: dict[str, str] = {}
        for outcome, detail in events:
            uid = str(detail.get("sop_instance_uid"))
            if outcome == "success":
                delivered.add(uid)
            else:
                refused[uid] = str(detail.get("reason") or "refused by this node")
        return delivered, refused

    def settle(
        self, rows: list[LedgerInstance], refused: dict[str, str], since: datetime | None = None
    ) -> list[LedgerInstance]:
        """Reconcile ``rows`` with the index, save what arrived from the legacy PACS; the rows that did not.

        ``since``: when the request for ``rows`` went out; by default the earliest moment any of them was asked for
        (an earlier run's request, interrupted), and none: never asked for, so nothing can have come from the legacy
        PACS yet. An instance the index holds from elsewhere only is not counted as arrived: it is asked for, and the
        legacy PACS's C-STORE then proves it identical (or is refused as a different object).
        """
        if since is None:
            asked = [r.updated_at for r in rows if r.state != State.PENDING or r.attempts]
            since = min(asked) if asked else None
        delivered, recorded = self.store_records(rows, since)
        for uid, why in recorded.items():  # the caller learns of them too
            refused.setdefault(uid, why)
        found = reconcile.check(rows, self.job.device.site_id, refused, delivered)
        arrived = [r for r in rows if r.pk in found]
        fresh = [r for r in arrived if r.state != State.COMPLETE and r.received_at is None]
        for row in arrived:
            reconcile.apply(row, found[row.pk])
        if arrived:
            with write_lock(), transaction.atomic():
                LedgerInstance.objects.bulk_update(
                    arrived, ["state", "last_error", "size", "pixel_sha256", "verified", "received_at", "updated_at"]
                )
                count, size = len(fresh), sum(r.size or 0 for r in fresh)
                Job.objects.filter(pk=self.job.pk).update(
                    received_instances=F("received_instances") + count, received_bytes=F("received_bytes") + size
                )
            self.run_received += len(fresh)
            self.run_bytes += sum(r.size or 0 for r in fresh)
        return [r for r in rows if r.pk not in found]

    def missing(self, rows: list[LedgerInstance], outcome: RetrieveOutcome) -> None:
        for row in rows:
            self.mark(row, State.MISSING, f"not received; the legacy PACS answered {outcome.describe()}")

    def mark(self, row: LedgerInstance, state: State, error: str) -> None:
        row.state, row.last_error, row.updated_at = state, error[:1000], timezone.now()
        with write_lock(), transaction.atomic():
            row.save(update_fields=["state", "last_error", "updated_at"])

    def report(self) -> None:
        self.reported = time.monotonic()
        counts = self.job.instances.aggregate(
            total=Count("id"), left=Count("id", filter=Q(state__in=(State.PENDING, State.IN_PROGRESS)))
        )
        self.reporter(
            Progress(
                "retrieve",
                done=counts["total"] - counts["left"],
                total=counts["total"],
                received=self.run_received,
                received_bytes=self.run_bytes,
                seconds=self.run_seconds,
            )
        )


def refresh_study(study: LedgerStudy) -> None:
    """Set a study's state from its instances'."""
    states = set(LedgerInstance.objects.filter(series__study=study).values_list("state", flat=True).distinct())
    if not states or states <= {State.PENDING}:
        state = State.PENDING
    elif states & {State.PENDING, State.IN_PROGRESS}:
        state = State.IN_PROGRESS
    elif State.FAILED in states:
        state = State.FAILED
    elif State.MISMATCHED in states:
        state = State.MISMATCHED
    elif State.MISSING in states:
        state = State.MISSING
    else:
        state = State.COMPLETE
    with write_lock(), transaction.atomic():
        LedgerStudy.objects.filter(pk=study.pk).update(state=state, updated_at=timezone.now())
