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
   source the index points to again is never deleted (``SWITCHED → DONE``).

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
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from archive.models import ACTIVE_MOVE_STATES, Instance, MoveState, TierMove
from archive.storage.base import CHUNK, StagedObject, Storage, reason
from archive.storage.keys import log_name
from archive.storage.registry import UnknownTier, get_storage
from audit.trail import record

log = logging.getLogger(__name__)

#: Verification failures after which a move gives up (the source stays, the index unchanged).
MAX_ATTEMPTS = 3
#: Steps a fault can be injected at (tests): before each step and after its effect, before the ledger says so.
STEPS = ("copy", "copied", "verify", "verified", "switch", "switched", "delete", "deleted")

Fault = Callable[[str, TierMove], None]


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


def plan_moves(instances: QuerySet[Instance], target: str, batch: str = "", actor: str = "mover") -> tuple[str, int]:
    """Ledger rows for every instance of ``instances`` not already on ``target`` or moving: one SQL statement.

    Returns the batch name and how many moves were planned. The target must
    exist and be reachable now (:class:`UnknownTier`, :class:`OSError`).
    """
    get_storage(target).check()
    batch = batch or uuid.uuid4().hex[:16]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    ids, params = instances.order_by().values("id").query.sql_with_params()
    move, inst = TierMove._meta.db_table, Instance._meta.db_table
    active = ", ".join(["%s"] * len(ACTIVE_MOVE_STATES))
    # Table names from model metadata, the instance filter from the ORM, every value a parameter.
    sql = (
        f"INSERT INTO {move} (instance_id, batch, source_tier, source_key, target_tier, state, size, attempts,"  # noqa: S608
        f" error, created_at, updated_at)"
        f" SELECT i.id, %s, i.tier, i.storage_key, %s, %s, i.size, 0, '', %s, %s FROM {inst} i"
        f" WHERE i.id IN ({ids}) AND i.tier <> %s AND NOT EXISTS"
        f" (SELECT 1 FROM {move} m WHERE m.instance_id = i.id AND m.state IN ({active}))"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            sql, [batch, target, MoveState.PENDING, now, now, *params, target, *[str(s) for s in ACTIVE_MOVE_STATES]]
        )
        count = cursor.rowcount
        if count:
            record("tier-move", actor=actor, detail={"batch": batch, "to": target, "objects": count, "step": "planned"})
    return batch, count


class Mover:
    """Takes ledger rows through their remaining steps (see the module docstring)."""

    def __init__(self, batch: str | None = None, fault: Fault | None = None, grace: float | None = None) -> None:
        self.batch = batch
        self.fault = fault or (lambda step, move: None)
        self.grace = grace_seconds() if grace is None else grace
        self.lease = timedelta(seconds=settings.PACS_TIER_MOVE_LEASE_SECONDS)
        self.throttle = Throttle(settings.PACS_TIER_MOVE_BYTES_PER_SECOND)
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
        if self.batch:
            rows = rows.filter(batch=self.batch)
        return rows.order_by("id")

    def claim(self, move: TierMove) -> bool:
        now = timezone.now()
        taken = (
            TierMove.objects.filter(pk=move.pk, state=move.state)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .update(lease_until=now + self.lease)
        )
        return taken == 1

    def release(self, move: TierMove, backoff: float = 0.0) -> None:
        until = timezone.now() + timedelta(seconds=backoff) if backoff else None
        TierMove.objects.filter(pk=move.pk).update(lease_until=until)

    def advance(self, move: TierMove, new: MoveState, **fields: Any) -> None:
        """Record a finished step: only if the row is still in the state the step began from."""
        done = TierMove.objects.filter(pk=move.pk, state=move.state).update(
            state=new, updated_at=timezone.now(), **fields
        )
        if done != 1:
            raise RuntimeError("the move's ledger row changed under its worker")
        move.state = new
        for name, value in fields.items():
            setattr(move, name, value)

    # ------------------------------------------------------------------ running

    def run(self, limit: int | None = None) -> MoveReport:
        """Take every ready move (of the batch) as far as it can go now; return what was done."""
        started = time.monotonic()
        concurrency = max(1, int(settings.PACS_TIER_MOVE_CONCURRENCY))
        handled = 0
        while limit is None or handled < limit:
            todo = list(self.candidates()[: max(64, concurrency * 8)])
            todo = [m for m in todo if m.target_tier not in self.unreachable][
                : None if limit is None else limit - handled
            ]
            if not todo:
                break
            if concurrency == 1:
                for move in todo:
                    self.process(move)
            else:
                with ThreadPoolExecutor(concurrency, thread_name_prefix="pacs-mover") as pool:
                    list(pool.map(self._process_in_thread, todo))
            handled += len(todo)
        self.report.paused = [f"{tier}: {why}" for tier, why in self.unreachable.items()]
        self.report.seconds = time.monotonic() - started
        return self.report

    def _process_in_thread(self, move: TierMove) -> None:
        try:
            self.process(move)
        finally:
            connection.close()

    def process(self, move: TierMove) -> None:
        """Run the remaining steps of one move; a crash (any exception) leaves it to be resumed."""
        if not self.claim(move):
            return
        try:
            target = self.target(move)
            if target is None:
                return
            source = get_storage(move.source_tier)
            if move.state == MoveState.PENDING:
                self.copy(move, source, target)
            if move.state == MoveState.COPIED:
                self.verify(move, target)
            if move.state == MoveState.VERIFIED:
                self.switch(move, target)
            if move.state == MoveState.SWITCHED and self.grace_over(move):
                self.delete(move, source)
        except OSError as exc:
            # A backend failed (an outage, a full disk): the move stays at its last finished step, retried later.
            log.warning("move of %s paused at %s: %s", log_name(move.source_key), move.state, reason(exc))
            TierMove.objects.filter(pk=move.pk).update(error=reason(exc)[:500])
            self.release(move, backoff=60.0)
            return
        self.release(move)

    def target(self, move: TierMove) -> Storage | None:
        """The target backend, checked once per run; None (and the move paused or failed) if unusable."""
        tier = move.target_tier
        try:
            storage = get_storage(tier)
            if tier not in self.reachable:
                storage.check()
                self.reachable.add(tier)
            return storage
        except UnknownTier as exc:
            self.fail(move, str(exc))
        except OSError as exc:
            self.unreachable[tier] = reason(exc)
            TierMove.objects.filter(pk=move.pk).update(error=f"target unreachable: {reason(exc)}"[:500])
            self.release(move, backoff=60.0)
        return None

    def grace_over(self, move: TierMove) -> bool:
        return move.switched_at is not None and timezone.now() >= move.switched_at + timedelta(seconds=self.grace)

    def fail(self, move: TierMove, why: str) -> None:
        log.error("move of %s failed: %s", log_name(move.source_key), why)
        self.advance(move, MoveState.FAILED, error=why[:500])
        record(
            "tier-move",
            actor="mover",
            outcome="failure",
            detail={"batch": move.batch, "to": move.target_tier, "object": log_name(move.source_key), "why": why},
        )
        with self.report.lock:
            self.report.failed.append(f"{log_name(move.source_key)}: {why}")

    # ------------------------------------------------------------------ the four steps

    def copy(self, move: TierMove, source: Storage, target: Storage) -> None:
        self.fault("copy", move)
        sha256 = Instance.objects.filter(pk=move.instance_id).values_list("sha256", flat=True).get()
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
            if digest.hexdigest() != sha256 or size != move.size:
                self.fail(move, "the source does not match its SHA-256: not moved (run tiers verify)")
                return
            target.put(move.source_key, StagedObject(path, sha256, size))
        finally:
            path.unlink(missing_ok=True)
        self.fault("copied", move)
        self.advance(move, MoveState.COPIED, stored_size=target.stored_size(move.source_key))
        self.report.add(bytes=size)

    def verify(self, move: TierMove, target: Storage) -> None:
        self.fault("verify", move)
        sha256 = Instance.objects.filter(pk=move.instance_id).values_list("sha256", flat=True).get()
        try:
            found, size = hash_object(target, move.source_key)
        except FileNotFoundError:
            found, size = "missing", 0
        except OSError as exc:  # a copy that does not even decompress is a bad copy
            found, size = f"unreadable ({reason(exc)})", 0
        self.fault("verified", move)
        if found == sha256 and size == move.size:
            self.advance(move, MoveState.VERIFIED)
            return
        log.warning("the copy of %s on %s does not verify: copying again", log_name(move.source_key), move.target_tier)
        target.delete(move.source_key)
        if move.attempts + 1 >= MAX_ATTEMPTS:
            self.fail(move, f"the copy on {move.target_tier} did not verify {MAX_ATTEMPTS} times")
        else:
            self.advance(move, MoveState.PENDING, attempts=move.attempts + 1)

    def switch(self, move: TierMove, target: Storage) -> None:
        self.fault("switch", move)
        with transaction.atomic():
            switched = Instance.objects.filter(
                pk=move.instance_id, tier=move.source_tier, storage_key=move.source_key
            ).update(tier=move.target_tier, storage_key=move.source_key)
            if switched != 1:
                self.fail(move, "the index no longer points to the source")
            else:
                self.advance(move, MoveState.SWITCHED, switched_at=timezone.now())
                self.fault("switched", move)  # a crash here rolls the whole switch back
        if move.state == MoveState.SWITCHED:
            self.report.add(moved=1)
        elif not Instance.objects.filter(pk=move.instance_id, tier=move.target_tier).exists():
            target.delete(move.source_key)  # the copy nobody points to

    def delete(self, move: TierMove, source: Storage) -> None:
        self.fault("delete", move)
        if not Instance.objects.filter(tier=move.source_tier, storage_key=move.source_key).exists():
            source.delete(move.source_key)
        self.fault("deleted", move)
        self.advance(move, MoveState.DONE, lease_until=None)
        self.report.add(deleted=1)


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
