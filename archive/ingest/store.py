"""The one ingest path: every stored instance, from STOW-RS, C-STORE, the demo
loader or ``reindex``, goes through :func:`store_instance`.

Order of work: parse the staged file (outside any transaction, while its
digest and fsync run in the background), place the object in storage
atomically once its bytes are durable, then write the index rows in one
transaction, together with the caller's audit record when it passes one,
and commit it once the new directory entries (fsynced meanwhile) are
durable; the commit itself is durable when :func:`write_lock` returns
(on SQLite, concurrent commits share one WAL sync: :mod:`pacs.lib.dblock`).
An instance is acknowledged only after that commit; a crash in between
leaves an object without a row, which :func:`sweep_orphans` indexes once it
is older than its grace period (the request was not acknowledged: its sender
sends it again and gets a duplicate).
Re-sending an instance is idempotent: identical bytes, or the identical data
set under other File Meta Information (another sender or gateway, in the same
transfer syntax), count as a duplicate. A different data set under an
existing SOP Instance UID is refused as a conflict and the stored object is kept,
except in one deliberate case: a correction (:mod:`archive.ingest.correct`)
passes a :class:`Replacement` naming the very objects it replaces, and its
copies are placed and switched in by the correction's own index step, all of
them in one transaction or none.

A value the index refuses (a data error, or a constraint that is not the
SOP Instance UID's uniqueness) refuses only its own instance, as "cannot
understand", and its object is removed; the other instances of the request
are kept and every result is audited. A storage error or an error of the
database itself (down, locked) fails the instances not yet committed as
"unavailable" (the sender may retry), named by the UIDs parsed from them,
after every object placed by the call that has no committed row has been
removed; other errors propagate after that same clean-up.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, OperationalError, transaction

from archive.dicom.part10 import InvalidInstance, ParsedInstance, parse_instance
from archive.ingest import duplicates
from archive.ingest.duplicates import Arrival, Verdict, against_earlier, classify_known
from archive.ingest.index import IndexWriter, InvalidSeriesParent
from archive.ingest.signals import announce
from archive.models import Instance, Site, TrashEntry
from archive.storage.base import StagedObject
from archive.storage.keys import log_name, object_key
from archive.storage.registry import get_storage
from audit.trail import record
from pacs.lib.dblock import write_lock

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # already stored: the same bytes, or the same data set under other File Meta
    CONFLICT = "conflict"  # a different data set under an existing SOP Instance UID
    INVALID = "invalid"  # not a DICOM instance we can keep (unreadable, or a value the index refuses)
    MISMATCH = "mismatch"  # Study Instance UID differs from the request's
    FORBIDDEN = "forbidden"  # the study exists but the sender may not see it
    UNAVAILABLE = "unavailable"  # the archive could not write it (its disk or its index): the sender may retry


# (0008,1197) Failure Reason values used in STOW-RS responses.
FAILURE_REASON = {
    Outcome.INVALID: 0xC000,  # Error: Cannot understand
    Outcome.MISMATCH: 0xA900,  # Error: Data Set does not match the target study
    Outcome.CONFLICT: 0x0111,  # Duplicate SOP Instance with different content
    Outcome.FORBIDDEN: 0x0124,  # Refused: not authorized
    Outcome.UNAVAILABLE: 0xA700,  # Refused: Out of Resources
}


@dataclass
class StoreResult:
    outcome: Outcome
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    detail: str = ""

    @classmethod
    def stored(cls, parsed: ParsedInstance) -> StoreResult:
        """A STORED result naming the instance ``parsed``."""
        return cls(
            Outcome.STORED,
            sop_class_uid=parsed.sop_class_uid,
            sop_instance_uid=parsed.sop_instance_uid,
            study_instance_uid=parsed.study_instance_uid,
            series_instance_uid=parsed.series_instance_uid,
        )

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE)


@dataclass
class Sender:
    """Who is storing: decides the site of new studies and which studies may grow.

    ``site_of`` (looked up once, and only when a new study is created) takes
    precedence over ``site``.
    """

    site: Site | None = None
    may_add_to: Callable[[str], bool] | None = None
    site_of: Callable[[], Site | None] | None = None

    def new_study_site(self) -> Site | None:
        if self.site_of is not None:
            self.site, self.site_of = self.site_of(), None
        return self.site


#: The detail of an "unavailable" result: the index could not be written (down, or locked too long).
INDEX_UNAVAILABLE = "the index was not available"
#: The detail of an "unavailable" result: storage could not take the object (disk full, I/O error).
STORAGE_UNAVAILABLE = "storage could not take it"
#: The faults of the archive itself that fail a call's uncommitted instances as "unavailable".
UNAVAILABLE_ERRORS = (OSError, OperationalError, InterfaceError)

#: Records the outcome of a store in the audit trail; see :func:`store_instances`.
AuditHook = Callable[[list[StoreResult]], None]

#: Errors an instance's own values cause at the index: they refuse that instance only. OverflowError is
#: SQLite's answer to an integer beyond 64 bits. OperationalError and InterfaceError (the database is down
#: or locked) are not among them: they propagate.
DATA_ERRORS = (IntegrityError, DataError, OverflowError)


@dataclass
class _Pending:
    """One parsed object on its way into the index."""

    staged: StagedObject
    parsed: ParsedInstance
    result: StoreResult
    position: int  # of its result among the request's results
    key: str = ""
    twin: _Pending | None = None  # an earlier part of the same request with the same SOP Instance UID
    indexed: bool = False  # its rows are committed

    def arrival(self) -> Arrival:
        parsed, staged = self.parsed, self.staged
        return Arrival(parsed.sop_instance_uid, parsed.transfer_syntax_uid, staged.sha256, staged.path)


@dataclass(frozen=True)
class Placed:
    """A placed corrected copy, as :attr:`Replacement.apply` receives it."""

    parsed: ParsedInstance
    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Replacement:
    """A deliberate new version of indexed instances: what a correction passes to :func:`store_instances`.

    ``current`` maps each SOP Instance UID to the SHA-256 of the indexed
    object the copy replaces: any other instance, or one whose indexed object
    has changed since, refuses the whole call before anything is placed.
    ``apply`` writes the rows (and the audit record) inside the one index
    transaction, given every placed copy; it returns the primary keys of the
    studies to announce, and raises to refuse (nothing is then committed, and
    the placed copies are removed).
    """

    current: dict[str, str]
    apply: Callable[[list[Placed]], set[int]]


def store_instance(
    staged: StagedObject,
    expected_study: str | None = None,
    sender: Sender | None = None,
    audit: AuditHook | None = None,
) -> StoreResult:
    """Parse, place and index one staged object; always consumes ``staged``.

    ``sender`` (absent for trusted local imports) limits which existing studies
    may receive instances and supplies the site of new ones.
    """
    return store_instances([staged], expected_study, sender, audit)[0]


def store_instances(
    staged: list[StagedObject],
    expected_study: str | None = None,
    sender: Sender | None = None,
    audit: AuditHook | None = None,
    replacing: Replacement | None = None,
) -> list[StoreResult]:
    """Parse, place and index the objects of one request; always consumes them.

    ``replacing`` makes the call a correction's (see :class:`Replacement`):
    every object must replace one named there, and all are switched in
    together or none is.

    Every object is placed once its staged bytes are durable, and every new
    directory entry fsynced (once per directory, all together, while the
    rows are written) before the single transaction that writes all index
    rows commits, each instance under its own savepoint so that one refused
    instance costs only itself. Results come
    back in input order and are final only once this returns, that is after
    the commit.

    ``audit`` is called with every result exactly once in all: inside the
    index transaction, just before it commits, for every result when rows
    are written (so a stored instance never exists without its audit
    record, and one commit serves both), and afterwards for whatever no
    committed transaction covered (nothing to index, or a refused write).

    A fault of storage or of the database (:data:`UNAVAILABLE_ERRORS`) does
    not propagate: every instance it kept from being committed gets an
    "unavailable" result (detail :data:`INDEX_UNAVAILABLE` or
    :data:`STORAGE_UNAVAILABLE`) with the UIDs read from it, and an audit
    record that cannot be written then, the database being down, is logged
    instead.
    """
    sender = sender or Sender()
    results: list[StoreResult] = []
    pending: list[_Pending] = []
    placed: list[_Pending] = []
    plan = _AuditPlan(audit, results, pending) if audit is not None else None
    try:
        for item in staged:
            result, parsed = _check(item, expected_study, sender)
            if parsed is not None:
                pending.append(_Pending(item, parsed, result, len(results)))
            results.append(result)
        if replacing is None:
            _classify(pending)
        elif not _replaceable(pending, replacing) or len(pending) != len(staged):
            for p in pending:  # all or none: nothing is placed
                if p.result.outcome is Outcome.STORED:
                    p.result.outcome, p.result.detail = Outcome.INVALID, "another copy of the correction was refused"
            return results
        fresh = [p for p in pending if p.result.outcome is Outcome.STORED and p.twin is None]
        storage = get_storage("hot")
        for p in fresh:
            p.key = object_key(
                p.parsed.study_instance_uid, p.parsed.series_instance_uid, p.parsed.sop_instance_uid, p.staged.sha256
            )
            placed.append(p)  # before put: a put that fails midway may still leave its object
            storage.put(p.key, p.staged, sync=False)
        durable = storage.begin_sync([p.key for p in fresh])  # the index transaction waits for these fsyncs
        if fresh and replacing is not None:
            _replace_placed(fresh, replacing, durable, plan)
        elif fresh:
            _index_placed(fresh, sender, durable, plan, whole=True)
        durable()
        for p in fresh:
            if p.result.outcome in (Outcome.INVALID, Outcome.CONFLICT):
                storage.delete(p.key)
        for p in pending:
            if p.twin is not None:
                _follow_twin(p)
        if plan is not None:
            plan.rest()
        return results
    except UNAVAILABLE_ERRORS as exc:
        _unplace([p for p in placed if not p.indexed])
        _unavailable(staged, results, pending, exc)
        if plan is not None:
            try:
                plan.rest()
            except DatabaseError as audit_exc:
                log.error("audit record of %d unstored instances not written: %s", len(staged), _cause(audit_exc))
        return results
    except BaseException:
        _unplace([p for p in placed if not p.indexed])
        raise
    finally:
        for item in staged:
            item.discard()


def _unavailable(
    staged: list[StagedObject], results: list[StoreResult], pending: list[_Pending], exc: Exception
) -> None:
    """After ``exc`` (one of :data:`UNAVAILABLE_ERRORS`): fail what no committed transaction stored, keeping its UIDs.

    An instance whose rows were committed (or a repeat of one) keeps its
    result; objects never parsed get an unnamed result, so that every staged
    object still has one.
    """
    index = isinstance(exc, DatabaseError)
    detail = INDEX_UNAVAILABLE if index else STORAGE_UNAVAILABLE
    log.error("%d instances not stored, the %s failed: %s", len(staged), "index" if index else "storage", _cause(exc))
    for p in pending:
        committed = p.indexed or (p.twin is not None and p.twin.indexed)
        if p.result.outcome is Outcome.STORED and not committed:
            p.result.outcome, p.result.detail = Outcome.UNAVAILABLE, detail
    results.extend(StoreResult(Outcome.UNAVAILABLE, detail=detail) for _ in staged[len(results) :])


def _cause(exc: BaseException) -> str:
    """What a log line may say of a storage or database error: its kind and reason, never a path (paths hold UIDs)."""
    if isinstance(exc, OSError):
        return f"{type(exc).__name__} {exc.strerror or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


def _unplace(placed: list[_Pending]) -> None:
    """After an error: remove the objects of ``placed`` (not indexed by this call) that no index row points to.

    An identical object stored at the same moment by another request shares
    the key and may have its row: those are kept. When the index cannot be
    asked, the objects are left to :func:`sweep_orphans`.
    """
    keys = {p.key for p in placed}
    if not keys:
        return
    try:
        known = set(Instance.objects.filter(storage_key__in=keys).values_list("storage_key", flat=True))
    except DatabaseError:
        log.warning("%d placed objects without index rows left to sweep_orphans: the index is not available", len(keys))
        return
    storage = get_storage("hot")
    for key in keys - known:
        try:
            storage.delete(key)
        except OSError:
            log.exception("placed object %s has no index row and could not be removed", log_name(key))


class _AuditPlan:
    """Which results the audit records of one :func:`store_instances` call cover.

    An index transaction calls :meth:`inside` just before it commits and
    :meth:`committed` once it has; :meth:`rest` records what no committed
    transaction did. A result is recorded once, and a stored one always in
    the transaction that wrote its rows.
    """

    def __init__(self, hook: AuditHook, results: list[StoreResult], pending: list[_Pending]) -> None:
        self.hook, self.results, self.pending = hook, results, pending
        self.done: set[int] = set()  # positions in ``results`` that a committed transaction recorded

    def inside(self, group: list[_Pending], whole: bool) -> set[int]:
        """Record the results a transaction about to commit covers; returns their positions."""
        if whole:  # the request's only transaction: record every result of the request
            for p in self.pending:
                if p.twin is not None:
                    _follow_twin(p)  # final: the first copy's savepoint has settled
            covered = set(range(len(self.results))) - self.done
        else:
            covered = {p.position for p in group}
        self.hook([self.results[n] for n in sorted(covered)])
        return covered

    def committed(self, covered: set[int]) -> None:
        self.done |= covered

    def rest(self) -> None:
        left = [r for n, r in enumerate(self.results) if n not in self.done]
        if left:
            self.hook(left)


def record_stores(request: Any, results: list[StoreResult], via: str, actor: str | None = None, **detail: str) -> None:
    """One "store" audit record per study of ``results``: how many were stored and refused, and how they came.

    STOW-RS and the DICOM listener both report their stores this way.
    """
    by_study: dict[str, list[StoreResult]] = {}
    for r in results:
        by_study.setdefault(r.study_instance_uid, []).append(r)
    for study_uid, items in by_study.items():
        stored = sum(1 for r in items if r.ok)
        record(
            "store",
            request,
            actor=actor,
            outcome="success" if stored == len(items) else ("partial" if stored else "failure"),
            study_instance_uid=study_uid,
            detail={"stored": stored, "failed": len(items) - stored, "via": via, **detail},
        )


def _check(
    staged: StagedObject, expected_study: str | None, sender: Sender
) -> tuple[StoreResult, ParsedInstance | None]:
    """Parse one object and apply the checks that need no index lookup."""
    try:
        parsed = parse_instance(staged.path, max_inflated=settings.PACS_INFLATE_MAX_BYTES)
    except InvalidInstance as exc:  # named by its UIDs when they could be read
        return StoreResult(Outcome.INVALID, detail=str(exc), **exc.uids), None
    result = StoreResult.stored(parsed)
    if expected_study is not None and parsed.study_instance_uid != expected_study:
        result.outcome = Outcome.MISMATCH
        result.detail = "Study Instance UID does not match the request URL"
        return result, None
    if sender.may_add_to is not None and not sender.may_add_to(parsed.study_instance_uid):
        result.outcome = Outcome.FORBIDDEN
        result.detail = "the study exists and belongs to a site the sender cannot see"
        return result, None
    return result, parsed


_OUTCOME = {Verdict.DUPLICATE: Outcome.DUPLICATE, Verdict.CONFLICT: Outcome.CONFLICT}


def _classify(pending: list[_Pending]) -> None:
    """Mark instances already indexed (duplicate or conflict) and repeats within the request."""
    for p, (verdict, first) in zip(pending, classify_known([p.arrival() for p in pending]), strict=True):
        if verdict is Verdict.REPEAT:
            assert first is not None
            p.twin = pending[first]
        elif verdict is not Verdict.NEW:
            p.result.outcome = _OUTCOME[verdict]


def _replaceable(pending: list[_Pending], replacing: Replacement) -> bool:
    """Whether every object replaces an indexed one named by ``replacing``, still as it was; else each is refused."""
    stored = duplicates.stored_hashes([p.parsed.sop_instance_uid for p in pending])
    seen: set[str] = set()
    for p in pending:
        uid = p.parsed.sop_instance_uid
        if uid not in replacing.current or uid in seen:
            p.result.outcome, p.result.detail = Outcome.INVALID, "not an instance this correction replaces"
        elif stored.get(uid) != replacing.current[uid]:
            p.result.outcome, p.result.detail = Outcome.CONFLICT, "the instance changed since the correction began"
        seen.add(uid)
    return all(p.result.outcome is Outcome.STORED for p in pending)


def _replace_placed(
    fresh: list[_Pending], replacing: Replacement, durable: Callable[[], None], plan: _AuditPlan | None
) -> None:
    """Switch the index to every placed copy in one transaction (:attr:`Replacement.apply`), or to none."""
    durable()
    with write_lock(), transaction.atomic():
        studies = replacing.apply([Placed(p.parsed, p.key, p.staged.sha256, p.staged.size) for p in fresh])
        covered = plan.inside(fresh, whole=True) if plan is not None else set()
    for p in fresh:
        p.indexed = True
    if plan is not None:
        plan.committed(covered)
    announce(studies)


def _follow_twin(p: _Pending) -> None:
    """A repeat within one request shares the fate of the first copy, and is judged against it when stored."""
    assert p.twin is not None
    earlier = p.twin.result
    if earlier.ok:
        p.result.outcome = _OUTCOME[against_earlier(p.arrival(), p.twin.arrival())]
    else:
        p.result.outcome, p.result.detail = earlier.outcome, earlier.detail


def _index_placed(
    fresh: list[_Pending],
    sender: Sender,
    durable: Callable[[], None],
    plan: _AuditPlan | None = None,
    whole: bool = False,
) -> None:
    """Write the rows of placed objects: one transaction, a savepoint per instance when there are several.

    ``durable`` waits until the objects' directory entries are durable: it is
    called before the transaction begins, so no row is ever committed for an
    object a power cut could still take away, and no writer lock is held
    while the disk works (other writers, audited reads among them, go on). ``plan`` adds the audit record to the
    same transaction (``whole``: for every result of the request, not only
    ``fresh``).
    """
    covered: set[int] = set()
    durable()
    alone = len(fresh) == 1  # no savepoint: a refused write refuses the whole transaction, which is its own
    try:
        with write_lock(), transaction.atomic():
            writer = IndexWriter(site_of=sender.new_study_site)
            for p in fresh:
                if alone:
                    writer.add(p.parsed, p.key, p.staged.sha256, p.staged.size)
                else:
                    _add_in_savepoint(writer, p)
            writer.flush()
            if plan is not None and any(p.result.outcome is Outcome.STORED for p in fresh):
                covered = plan.inside(fresh, whole)
            studies = writer.studies_of(p.parsed for p in fresh if p.result.outcome is Outcome.STORED)
    except DATA_ERRORS as exc:
        if alone:
            _refused(fresh[0], exc)
            return
        # The batch failed as a whole (e.g. at commit): index each instance on its own.
        for p in fresh:
            p.result.outcome, p.result.detail = Outcome.STORED, ""
        for p in fresh:
            _index_placed([p], sender, durable, plan)
        return
    for p in fresh:
        p.indexed = p.result.outcome is Outcome.STORED
    if plan is not None:
        plan.committed(covered)
    announce(studies)  # committed and durable: the worklist (and any other receiver) may look


def _add_in_savepoint(writer: IndexWriter, p: _Pending) -> None:
    """Write the rows of ``p`` under their own savepoint: a value the index refuses refuses ``p`` alone."""
    try:
        with transaction.atomic():
            writer.add(p.parsed, p.key, p.staged.sha256, p.staged.size)
    except DATA_ERRORS as exc:
        writer.forget(p.parsed)
        _refused(p, exc)
    else:
        writer.commit_counts()


def _refused(p: _Pending, exc: Exception) -> None:
    """The outcome of an instance whose rows the index refused with ``exc`` (one of :data:`DATA_ERRORS`)."""
    if isinstance(exc, InvalidSeriesParent):
        p.result.outcome = Outcome.INVALID
        p.result.detail = (
            "the series is in the trash: restore it, or wait for its purge, before sending to it again"
            if TrashEntry.objects.filter(series_instance_uid=p.parsed.series_instance_uid).exists()
            else "Series Instance UID already belongs to another study"
        )
        return
    if isinstance(exc, IntegrityError):
        # Another request may have indexed the same SOP Instance UID first; any other constraint is the instance's.
        verdict = duplicates.stored_verdict(p.arrival())
        if verdict is not None:
            p.result.outcome = _OUTCOME[verdict]
            return
    log.warning("the index refused an instance: %s", type(exc).__name__)
    p.result.outcome = Outcome.INVALID
    p.result.detail = "an attribute value is outside what the index can hold"
