"""The mover: objects change tier through copy → verify → switch → delete, each step recorded in a ledger.

Every object to move gets a :class:`~archive.models.TierMove` row (planned
set-based by :func:`plan_moves`, one ``INSERT … SELECT``). A worker then takes
each row through four steps, and records a step as done (a conditional
``UPDATE`` on the row's state) only after its effect is durable:

1. **copy** the object to the target tier (through a staging file, hashed on
   the way: a source that no longer matches its SHA-256 is not moved but
   reported), placed atomically by the target backend (``PENDING → COPIED``);
2. **verify** the copy: read it back from the target and compare its SHA-256
   and size with the index; a mismatch removes the copy and starts over, a
   few times, then gives up (``COPIED → VERIFIED``);
3. **switch** the index row to the target in one transaction together with the
   ledger row, only if the row still points to the source (``VERIFIED → SWITCHED``);
4. **delete** the source, once :data:`grace <grace_seconds>` has passed, so a read
   that looked the row up just before the switch still finds its bytes; a
   source the index points to again is never deleted, and a move planned with
   ``keep_source`` (a restore, :mod:`archive.ingest.restore`) leaves it (``SWITCHED → DONE``).

A target that needs a restore (an S3 archive class) cannot be read back:
step 2 compares the SHA-256 and size its HEAD gives (checked by the server
against the upload's Content-MD5), and step 3 makes the instance NEARLINE.

So a crash at any point leaves the row in the state of the last finished
step, and running the mover again redoes only the unfinished one: copies are
idempotent (an object already at the target is the same bytes: keys carry the
content hash), verification re-reads, the switch is conditional, deleting is
idempotent. Until the switch commits, the index names the source, which is
never touched before then; after it, the index names a verified copy. No
object is ever lost, in two states, or unreadable. An instance has at most one
active move (a unique constraint), so two moves never disagree about it.

Workers claim a row with a lease (``lease_until``, a conditional ``UPDATE``),
so any number may run against one database; a row whose worker died is taken
again once its lease runs out. A target that cannot be reached (an S3 outage)
pauses its moves: they stay where they are and are retried after a back-off.
Copies are throttled to ``PACS_TIER_MOVE_BYTES_PER_SECOND`` per worker process
and ``PACS_TIER_MOVE_CONCURRENCY`` moves at a time, so moves do not starve
clinical reads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from archive.models import ACTIVE_MOVE_STATES, Instance, MoveState, TierMove, TrashEntry, tier_availability
from archive.storage.base import CHUNK, NotRestored, StagedObject, Storage, reason
from archive.storage.keys import log_name
from archive.storage.registry import UnknownTier, get_storage
from archive.storage.zstd import CorruptObject
from audit.trail import record

log = logging.getLogger(__name__)

#: Verification failures after which a move gives up (the source stays, the index unchanged).
MAX_ATTEMPTS = 3
#: Steps a fault can be injected at (tests): before each step and after its effect, before the ledger says so.
STEPS = ("copy", "copied", "verify", "verified", "switch", "switched", "delete", "deleted")

Fault = Callable[[str, TierMove], None]
T = TypeVar("T")


def grace_seconds() -> float:
    return float(settings.PACS_TIER_MOVE_GRACE_SECONDS)


class Throttle:
    """At most ``rate`` bytes a second across the threads of this process (0: unlimited)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, size: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + size / self.rate
        if start > now:
            time.sleep(start - now)


@dataclass
class MoveReport:
    """What one run of the mover did."""

    moved: int = 0  # switched to the target
    deleted: int = 0  # sources removed after the grace period
    bytes: int = 0
    failed: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # targets that could not be reached
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def plan_moves(
    instances: QuerySet[Instance], target: str, batch: str = "", actor: str = "mover", keep_source: bool = False
) -> tuple[str, int]:
    """Ledger rows for every instance of ``instances`` not already on ``target`` or moving: one SQL statement.

    Returns the batch name and how many moves were planned. The target must
    exist and be reachable now (:class:`UnknownTier`, :class:`OSError`); it
    may be a tier that needs a restore (its objects become NEARLINE).
    ``keep_source`` leaves the sources in place once switched (restores).
    Instances of a study being purged (:mod:`archive.ingest.trash`) are never
    planned: their copy at the target would outlive the purge.
    """
    get_storage(target).check()
    batch = batch or uuid.uuid4().hex[:16]
    purging = TrashEntry.objects.filter(purging_at__isnull=False).values("study_instance_uid")
    instances = instances.exclude(series__study__study_instance_uid__in=purging)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    ids, params = instances.order_by().values("id").query.sql_with_params()
    move, inst = TierMove._meta.db_table, Instance._meta.db_table
    active = ", ".join(["%s"] * len(ACTIVE_MOVE_STATES))
    # Table names from model metadata, the instance filter from the ORM, every value a parameter.
    sql = (
        f"INSERT INTO {move} (instance_id, batch, source_tier, source_key, target_tier, state, size, attempts,"  # noqa: S608
        f" error, worker, created_at, updated_at, keep_source)"
        f" SELECT i.id, %s, i.tier, i.storage_key, %s, %s, i.size, 0, '', '', %s, %s, %s FROM {inst} i"
        f" WHERE i.id IN ({ids}) AND i.tier <> %s AND NOT EXISTS"
        f" (SELECT 1 FROM {move} m WHERE m.instance_id = i.id AND m.state IN ({active}))"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                batch,
                target,
                MoveState.PENDING,
                now,
                now,
                keep_source,
                *params,
                target,
                *[str(s) for s in ACTIVE_MOVE_STATES],
            ],
        )
        count = cursor.rowcount
        if count:
            record("tier-move", actor=actor, detail={"batch": batch, "to": target, "objects": count, "step": "planned"})
    return batch, count


class Mover:
    """Takes ledger rows through their remaining steps (see the module docstring), a group at a time.

    A group of up to ``PACS_TIER_MOVE_GROUP`` claimed rows goes through each step
    together: the per-object work (copying, hashing, deleting) runs on
    ``PACS_TIER_MOVE_CONCURRENCY`` threads that never touch the database, and
    each step ends with one transaction recording it for the whole group, so
    a move costs a few commits per group, not per object.
    """

    def __init__(self, batch: str | None = None, fault: Fault | None = None, grace: float | None = None) -> None:
        self.batch = batch
        self.fault = fault or (lambda step, move: None)
        self.grace = grace_seconds() if grace is None else grace
        self.lease = timedelta(seconds=settings.PACS_TIER_MOVE_LEASE_SECONDS)
        self.throttle = Throttle(settings.PACS_TIER_MOVE_BYTES_PER_SECOND)
        self.concurrency = max(1, int(settings.PACS_TIER_MOVE_CONCURRENCY))
        self.group = max(1, int(settings.PACS_TIER_MOVE_GROUP))
        self.worker = uuid.uuid4().hex
        self.report = MoveReport()
        self.unreachable: dict[str, str] = {}
        self.reachable: set[str] = set()

    # ------------------------------------------------------------------ claiming

    def candidates(self) -> QuerySet[TierMove]:
        now = timezone.now()
        ready = Q(state__in=[MoveState.PENDING, MoveState.COPIED, MoveState.VERIFIED]) | Q(
            state=MoveState.SWITCHED, switched_at__lte=now - timedelta(seconds=self.grace)
        )
        rows = TierMove.objects.filter(ready).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        if self.unreachable:
            rows = rows.exclude(target_tier__in=list(self.unreachable))
        if self.batch:
            rows = rows.filter(batch=self.batch)
        return rows.order_by("id")

    def claim(self, limit: int) -> list[TierMove]:
        """Up to ``limit`` ready rows, leased to this worker (a conditional UPDATE: no two workers get a row)."""
        ids = list(self.candidates().values_list("id", flat=True)[:limit])
        if not ids:
            return []
        now = timezone.now()
        TierMove.objects.filter(pk__in=ids).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now)).update(
            lease_until=now + self.lease, worker=self.worker
        )
        return list(TierMove.objects.filter(pk__in=ids, worker=self.worker).order_by("id"))

    def release(self, moves: list[TierMove], backoff: float = 0.0) -> None:
        if moves:
            until = timezone.now() + timedelta(seconds=backoff) if backoff else None
            TierMove.objects.filter(pk__in=[m.pk for m in moves], worker=self.worker).update(
                lease_until=until, worker=""
            )

    def advance(self, moves: list[TierMove], new: MoveState, **fields: Any) -> None:
        """Record a finished step for ``moves`` (inside the caller's transaction, or as one statement)."""
        if not moves:
            return
        now = timezone.now()
        for old in {m.state for m in moves}:
            TierMove.objects.filter(pk__in=[m.pk for m in moves if m.state == old], state=old).update(
                state=new, updated_at=now, **fields
            )
        for move in moves:
            move.state = new
            for name, value in fields.items():
                setattr(move, name, value)

    # ------------------------------------------------------------------ running

    def run(self, limit: int | None = None) -> MoveReport:
        """Take every ready move (of the batch) as far as it can go now; return what was done."""
        started = time.monotonic()
        handled = 0
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="pacs-mover") as pool:
            self.pool = pool
            while limit is None or handled < limit:
                group = self.claim(self.group if limit is None else min(self.group, limit - handled))
                if not group:
                    break
                self.process(group)
                handled += len(group)
        self.report.paused = [f"{tier}: {why}" for tier, why in self.unreachable.items()]
        self.report.seconds = time.monotonic() - started
        return self.report

    def each(self, work: Callable[[TierMove], T], moves: list[TierMove]) -> list[T | OSError]:
        """``work`` on every move, on the pool; an :class:`OSError` is its result, anything else propagates."""

        def guarded(move: TierMove) -> T | OSError:
            try:
                return work(move)
            except OSError as exc:
                return exc

        if self.concurrency == 1 or len(moves) == 1:
            return [guarded(m) for m in moves]
        return list(self.pool.map(guarded, moves))

    def process(self, group: list[TierMove]) -> None:
        """Run the remaining steps of a group of moves; a crash (any exception) leaves them to be resumed."""
        sha256 = dict(Instance.objects.filter(pk__in=[m.instance_id for m in group]).values_list("id", "sha256"))
        usable = [m for m in group if self.target(m)]
        paused: list[TierMove] = [m for m in group if m not in usable and m.state != MoveState.FAILED]
        for step, state in (
            (self.copy, MoveState.PENDING),
            (self.verify, MoveState.COPIED),
            (self.switch, MoveState.VERIFIED),
            (self.delete, MoveState.SWITCHED),
        ):
            todo = [m for m in usable if m.state == state and m not in paused]
            if step == self.delete:
                todo = [m for m in todo if self.grace_over(m)]
            if todo:
                paused += step(todo, sha256)
        self.release([m for m in group if m not in paused])
        self.release(paused, backoff=60.0)

    def target(self, move: TierMove) -> bool:
        """Whether the target can be used now (checked once per run); if not, the move is failed or paused."""
        tier = move.target_tier
        if tier in self.unreachable:
            return False
        try:
            storage = get_storage(tier)
            if tier not in self.reachable:
                storage.check()
                self.reachable.add(tier)
            return True
        except UnknownTier as exc:
            self.fail([(move, str(exc))])
        except OSError as exc:
            self.unreachable[tier] = reason(exc)
            TierMove.objects.filter(pk=move.pk).update(error=f"target unreachable: {reason(exc)}"[:500])
        return False

    def grace_over(self, move: TierMove) -> bool:
        return move.switched_at is not None and timezone.now() >= move.switched_at + timedelta(seconds=self.grace)

    def fail(self, failures: list[tuple[TierMove, str]]) -> None:
        """Give up these moves, saying why: the index still points to their sources."""
        with transaction.atomic():
            for move, why in failures:
                log.error("move of %s failed: %s", log_name(move.source_key), why)
                self.advance([move], MoveState.FAILED, error=why[:500])
                record(
                    "tier-move",
                    actor="mover",
                    outcome="failure",
                    detail={
                        "batch": move.batch,
                        "to": move.target_tier,
                        "object": log_name(move.source_key),
                        "why": why,
                    },
                )
        with self.report.lock:
            self.report.failed += [f"{log_name(m.source_key)}: {why}" for m, why in failures]

    def paused(self, moves: list[TierMove], errors: list[Any]) -> list[TierMove]:
        """Moves whose step met a backend failure (an outage, a full disk): kept at their step, retried later."""
        stuck = []
        for move, error in zip(moves, errors, strict=True):
            if isinstance(error, OSError):
                log.warning("move of %s paused at %s: %s", log_name(move.source_key), move.state, reason(error))
                TierMove.objects.filter(pk=move.pk).update(error=reason(error)[:500])
                stuck.append(move)
        return stuck

    # ------------------------------------------------------------------ the four steps

    def copy(self, moves: list[TierMove], sha256: dict[int, str]) -> list[TierMove]:
        def one(move: TierMove) -> int | str:
            self.fault("copy", move)
            source, target = get_storage(move.source_tier), get_storage(move.target_tier)
            fh, path = target.stage()
            digest = hashlib.sha256()
            size = 0
            try:
                with fh, source.open(move.source_key) as src:
                    while chunk := src.read(CHUNK):
                        self.throttle.take(len(chunk))
                        digest.update(chunk)
                        fh.write(chunk)
                        size += len(chunk)
                    if target.fsync:
                        os.fsync(fh.fileno())  # the target links these very bytes into place
                if digest.hexdigest() != sha256[move.instance_id] or size != move.size:
                    return "the source does not match its SHA-256: not moved (run tiers verify)"
                target.put(move.source_key, StagedObject(path, sha256[move.instance_id], size), sync=False)
            finally:
                path.unlink(missing_ok=True)
            self.fault("copied", move)
            return target.stored_size(move.source_key)

        results = self.each(one, moves)
        for tier in {m.target_tier for m in moves}:
            get_storage(tier).sync([m.source_key for m, r in zip(moves, results, strict=True) if isinstance(r, int)])
        self.fail([(m, r) for m, r in zip(moves, results, strict=True) if isinstance(r, str)])
        with transaction.atomic():
            for move, result in zip(moves, results, strict=True):
                if isinstance(result, int):
                    self.advance([move], MoveState.COPIED, stored_size=result)
                    self.report.add(bytes=move.size)
        return self.paused(moves, results)

    def verify(self, moves: list[TierMove], sha256: dict[int, str]) -> list[TierMove]:
        def one(move: TierMove) -> bool:
            self.fault("verify", move)
            target = get_storage(move.target_tier)
            try:
                # An archive class cannot be read back: its HEAD gives the SHA-256 and size checked at upload.
                found, size = (
                    target.stored_digest(move.source_key) if target.archival else hash_object(target, move.source_key)
                )
            except FileNotFoundError:
                found, size = "missing", 0
            except NotRestored:
                found, size = "unreadable", 0
            except CorruptObject:  # a copy that does not even decompress is a bad copy
                found, size = "unreadable", 0
            self.fault("verified", move)
            good = found == sha256[move.instance_id] and size == move.size
            if not good:
                log.warning("the copy of %s on %s does not verify", log_name(move.source_key), move.target_tier)
                get_storage(move.target_tier).delete(move.source_key)
            return good

        results = self.each(one, moves)
        bad = [m for m, r in zip(moves, results, strict=True) if r is False]
        self.fail(
            [
                (m, f"the copy on {m.target_tier} did not verify {MAX_ATTEMPTS} times")
                for m in bad
                if m.attempts + 1 >= MAX_ATTEMPTS
            ]
        )
        with transaction.atomic():
            self.advance([m for m, r in zip(moves, results, strict=True) if r is True], MoveState.VERIFIED)
            for move in bad:
                if move.state != MoveState.FAILED:
                    self.advance([move], MoveState.PENDING, attempts=move.attempts + 1)
        return self.paused(moves, results)

    def switch(self, moves: list[TierMove], sha256: dict[int, str]) -> list[TierMove]:
        lost = []
        available = {tier: tier_availability(tier) for tier in {m.target_tier for m in moves}}
        with transaction.atomic():
            for move in moves:
                self.fault("switch", move)
                switched = Instance.objects.filter(
                    pk=move.instance_id, tier=move.source_tier, storage_key=move.source_key
                ).update(
                    tier=move.target_tier,
                    availability=available[move.target_tier],
                    stored_size=move.stored_size,  # bytes taken there (the cost page)
                )
                if switched == 1:
                    self.advance([move], MoveState.SWITCHED, switched_at=timezone.now())
                else:
                    lost.append(move)
                self.fault("switched", move)  # a crash here rolls the whole group's switch back
        self.report.add(moved=len(moves) - len(lost))
        self.fail([(m, "the index no longer points to the source") for m in lost])
        for move in lost:
            if not Instance.objects.filter(pk=move.instance_id, tier=move.target_tier).exists():
                get_storage(move.target_tier).delete(move.source_key)  # the copy nobody points to
        return []

    def delete(self, moves: list[TierMove], sha256: dict[int, str]) -> list[TierMove]:
        live = set(
            Instance.objects.filter(storage_key__in=[m.source_key for m in moves]).values_list("tier", "storage_key")
        )

        def one(move: TierMove) -> None:
            self.fault("delete", move)
            if move.keep_source:
                pass  # a restore leaves the archive copy where it is
            elif (move.source_tier, move.source_key) not in live:  # never a source the index points to again
                get_storage(move.source_tier).delete(move.source_key)
            self.fault("deleted", move)

        results = self.each(one, moves)
        done = [m for m, r in zip(moves, results, strict=True) if not isinstance(r, OSError)]
        self.advance(done, MoveState.DONE)
        self.report.add(deleted=len(done))
        return self.paused(moves, results)


def hash_object(storage: Storage, key: str) -> tuple[str, int]:
    """The SHA-256 and size of the object's Part 10 bytes as its tier gives them back."""
    digest = hashlib.sha256()
    size = 0
    with storage.open(key) as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def move_instances(instances: QuerySet[Instance], target: str, actor: str = "mover") -> tuple[str, MoveReport]:
    """Plan and run moves of ``instances`` to ``target`` now, in this process (``manage.py tiers move``)."""
    batch, _ = plan_moves(instances, target, actor=actor)
    return batch, Mover(batch).run()


def pending_moves(batch: str | None = None) -> QuerySet[TierMove]:
    rows = TierMove.objects.filter(state__in=ACTIVE_MOVE_STATES)
    return rows.filter(batch=batch) if batch else rows
