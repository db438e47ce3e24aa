"""Rebuilding the index from the stored Part 10 files alone.

The index is derived data (see :mod:`archive.models`): walking a tier's keys,
hashing and parsing each object, and indexing it through the same
:func:`archive.ingest.index.index_instance` that ingest uses gives back the same
rows. Re-running is idempotent: an object already indexed under its key is
counted and left alone. An object whose bytes no longer match the SHA-256
prefix in its key is reported as corrupt and never indexed.

Corrections. A correction, a split or a merge leaves several stored objects
under one SOP Instance UID: the current copy and the earlier versions it
replaced (see :mod:`archive.ingest.correct`). Keys name their SOP Instance
UID, so the objects of every tier are first grouped by it (no object is read
twice), then each group is indexed together (:func:`index_copies`): the copy
with the latest correction, by its (0400,0561) Original Attributes Sequence
(:mod:`archive.ingest.versions`), becomes the instance, in the study and
series it names (a split or merge moved it), and the others its
:class:`~archive.models.InstanceVersion` rows 1, 2, ... in order. The order in
which keys are visited changes nothing. Without ``--wipe`` the index is
trusted: an object already indexed, as an instance or as a version, is left
alone; an earlier copy without a row joins the versions; a copy later than the
indexed one (a correction interrupted before its commit) is reported as a
conflict and never switched to.

A study in the trash stays there: in the very transaction that writes an
object's rows, the study is marked trashed again when a
:class:`~archive.models.TrashEntry` names it, so no reader ever sees a trashed
study come back, even for a moment, and a purge never finds its rows live.
While a ``reindex --wipe`` has not yet rebuilt a study's rows, a purge of it
is refused (nothing to purge yet) and its entry kept. An object a purge
removed while it was being read is not indexed (``gone``): the transaction
checks, after the trash mark, that the object is still there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from archive.dicom.part10 import InvalidInstance, ParsedInstance, parse_instance
from archive.ingest.index import InvalidSeriesParent, index_instance
from archive.ingest.versions import EPOCH, Rank, ordered, rank_of_file, rank_of_metadata
from archive.models import Instance, InstanceVersion, Patient, Study, Tier, TrashEntry
from archive.storage.base import CHUNK, Storage
from archive.storage.keys import object_key
from archive.storage.registry import BUILTIN, get_storage
from pacs.lib.dblock import write_lock


@dataclass
class ReindexReport:
    """Counts of one reindex run, per outcome, with the keys that need a look."""

    scanned: int = 0
    indexed: int = 0
    already: int = 0
    corrupt: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    versions: int = 0  # earlier versions of an instance, recorded as InstanceVersion rows
    ties: list[str] = field(default_factory=list)  # copies of one instance corrected at the same time

    def merge(self, other: ReindexReport) -> None:
        self.scanned += other.scanned
        self.indexed += other.indexed
        self.already += other.already
        self.versions += other.versions
        self.ties += other.ties
        self.corrupt += other.corrupt
        self.invalid += other.invalid
        self.conflicts += other.conflicts


def file_sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def known_tiers() -> list[str]:
    """The built-in tiers (``hot``, ``cold``), those ``PACS_TIERS`` names, and those added in admin.

    A folder under the storage root that no tier configures is not read: which
    backend wrote it (plain or zstd files) is the tier's configuration to say.
    """
    return sorted(set(BUILTIN) | set(settings.PACS_TIERS) | set(Tier.objects.values_list("name", flat=True)))


def wipe_index() -> int:
    """Delete every Patient/Study/Series/Instance row (the files stay)."""
    with transaction.atomic():
        count = Instance.objects.count()
        Study.objects.all().delete()
        Patient.objects.all().delete()
    return count


#: What :func:`index_object` made of one stored object.
Found = Literal["indexed", "version", "already", "corrupt", "invalid", "junk", "conflict", "gone"]


class _Gone(Exception):
    """The object was removed between its reading and its rows (rolls the rows back)."""


def keep_trashed(study_uid: str) -> bool:
    """Mark ``study_uid``'s rows trashed if a :class:`TrashEntry` names it; whether one does.

    Called in the transaction that writes the rows, so they are never committed live.
    """
    trashed_at = TrashEntry.objects.filter(study_instance_uid=study_uid).values_list("trashed_at", flat=True).first()
    if trashed_at is None:
        return False
    Study.objects.filter(study_instance_uid=study_uid, trashed_at__isnull=True).update(trashed_at=trashed_at)
    return True


@dataclass
class Read:
    """One stored object read and checked against its key: what indexing it needs."""

    tier: str
    key: str
    sha256: str
    size: int
    parsed: ParsedInstance

    @property
    def rank(self) -> Rank:
        return rank_of_metadata(self.parsed.metadata)


def read_object(storage: Storage, tier: str, key: str) -> Read | tuple[Found, str]:
    """The stored object ``key`` hashed, parsed and checked against its key; or what it was and why not."""
    with storage.local_path(key) as path:
        sha256, size = file_sha256(path)
        try:
            parsed = parse_instance(path, max_inflated=settings.PACS_INFLATE_MAX_BYTES)
        except InvalidInstance as exc:
            return ("invalid" if key.endswith(f".{sha256[:16]}.dcm") else "junk"), str(exc)
    expected = object_key(parsed.study_instance_uid, parsed.series_instance_uid, parsed.sop_instance_uid, sha256)
    if expected != key:
        return "corrupt", f"content does not match its key (SHA-256 {sha256[:16]}…)"
    # A series in the trash is rebuilt under its holder study (archive/ingest/trash.py), which keep_trashed marks.
    holder = (
        TrashEntry.objects.filter(series_instance_uid=parsed.series_instance_uid)
        .values_list("study_instance_uid", flat=True)
        .first()
    )
    if holder is not None:
        parsed.study_instance_uid = holder
    return Read(tier, key, sha256, size, parsed)


def index_object(
    storage: Storage, tier: str, key: str, audit: Callable[[ParsedInstance], None] | None = None
) -> tuple[Found, str]:
    """Index the stored object ``key`` of ``tier`` from its bytes alone; what it was, and why when not indexed.

    An object whose bytes do not hash to its key, or whose UIDs are not those
    of its key, is never indexed: ``corrupt``, or ``junk`` when it is not even
    a readable instance (``invalid`` is an unreadable object that does hash
    to its key, which ingest never places). An earlier version of an indexed
    instance (:mod:`archive.ingest.versions`) becomes an
    :class:`~archive.models.InstanceVersion` (``version``); a later copy than
    the indexed one is a ``conflict``, left alone. ``audit`` is called inside
    the transaction that writes the rows, so the rows are never committed
    without their audit record.
    """
    read = read_object(storage, tier, key)
    if isinstance(read, tuple):
        return read
    outcome = index_copies([read], audit)
    return outcome.found[key]


@dataclass
class Outcome:
    """What :func:`index_copies` made of each copy (by key), and the copies whose order was a tie."""

    found: dict[str, tuple[Found, str]] = field(default_factory=dict)
    ties: list[str] = field(default_factory=list)


def index_copies(copies: list[Read], audit: Callable[[ParsedInstance], None] | None = None) -> Outcome:
    """Index the stored copies of one SOP Instance UID: the current one as the instance, the others as versions.

    With no row yet for the instance, the copy with the latest correction
    (:func:`archive.ingest.versions.ordered`) is indexed, in its own study and
    series, and the others become versions 1, 2, ... in the same transaction.
    With a row already (``reindex`` without ``--wipe``, ``sweep``), the index
    is trusted: an earlier copy joins its versions, renumbered in order; a
    copy later than the indexed one is a conflict (an interrupted correction
    leaves one) and is left where it is.
    """
    out = Outcome()
    unique: dict[str, Read] = {}
    for copy in copies:  # the same bytes in two tiers (a tier move cut short): the first tier's is kept
        if copy.sha256 in unique:
            out.found[copy.key] = ("already", "the same object is kept in another tier")
        else:
            unique[copy.sha256] = copy
    sop_uid = copies[0].parsed.sop_instance_uid
    current = Instance.objects.filter(sop_instance_uid=sop_uid).values_list("pk", "sha256", "metadata").first()
    if current is None:
        _index_new(list(unique.values()), audit, out)
    else:
        _join_indexed(current, list(unique.values()), out)
    return out


def _index_new(copies: list[Read], audit: Callable[[ParsedInstance], None] | None, out: Outcome) -> None:
    order, tie = ordered([(c.rank, c.sha256, c) for c in copies])
    chain = [c for _, _, c in order]
    current, earlier = chain[-1], chain[:-1]
    if tie:
        ranks = [c.rank for c in chain]
        why = "corrected at the same moment as another copy of the instance: ordered by SHA-256"
        out.ties += [f"{c.key}: {why}" for c in chain if ranks.count(c.rank) > 1]
    try:
        with write_lock(), transaction.atomic():
            pk = index_instance(current.parsed, current.key, current.sha256, current.size, tier=current.tier)
            if not keep_trashed(current.parsed.study_instance_uid) and not get_storage(current.tier).exists(
                current.key
            ):
                raise _Gone
            InstanceVersion.objects.bulk_create(
                [_version_row(pk, n, c, chain[n].rank) for n, c in enumerate(earlier, start=1)]
            )
            if audit is not None:
                audit(current.parsed)
    except _Gone:
        out.found.update({c.key: ("gone", "removed while it was read (a purge of its study)") for c in chain})
        return
    except InvalidSeriesParent:
        out.found.update({c.key: ("conflict", "Series Instance UID already belongs to another study") for c in chain})
        return
    except IntegrityError:
        out.found.update({c.key: ("already", "indexed concurrently by an ingest") for c in chain})
        return
    out.found[current.key] = ("indexed", "")
    out.found.update({c.key: ("version", "an earlier version") for c in earlier})


#: The reason an earlier version found by reindex or sweep carries (its correction's own reason is not stored with it).
RECOVERED = "an earlier version found in storage by reindex or sweep (the correction's reason is in the audit trail)"


def _version_row(instance_pk: int, version: int, copy: Read, replaced: Rank) -> InstanceVersion:
    """The version row of ``copy``; ``replaced`` is the rank of the copy that replaced it (when it did)."""
    return InstanceVersion(
        instance_id=instance_pk,
        version=version,
        sop_instance_uid=copy.parsed.sop_instance_uid,
        tier=copy.tier,
        storage_key=copy.key,
        sha256=copy.sha256,
        size=copy.size,
        replaced_at=replaced[0] if replaced[0] != EPOCH else timezone.now(),
        replaced_by="",
        reason=RECOVERED,
        correction="",
    )


def _join_indexed(current: tuple[int, str, str], copies: list[Read], out: Outcome) -> None:
    pk, sha256, metadata = current
    head = (rank_of_metadata(metadata), sha256)
    known = set(InstanceVersion.objects.filter(instance_id=pk).values_list("sha256", flat=True))
    earlier: list[Read] = []
    for copy in copies:
        if copy.sha256 == sha256:
            out.found[copy.key] = ("already", "the same object is indexed in another tier")
        elif copy.sha256 in known:
            out.found[copy.key] = ("already", "an earlier version already recorded")
        elif (copy.rank, copy.sha256) < head:
            earlier.append(copy)
        else:
            why = "a later copy than the indexed instance (an interrupted correction?): left in place"
            out.found[copy.key] = ("conflict", why)
    if not earlier:
        return
    with write_lock(), transaction.atomic():
        _renumber(pk, earlier, head[0])
    out.found.update({c.key: ("version", "an earlier version") for c in earlier})


def _renumber(instance_pk: int, added: list[Read], head: Rank) -> None:
    """Inside a transaction: the versions of one instance with ``added`` among them, numbered again in order."""
    rows = list(InstanceVersion.objects.select_for_update().filter(instance_id=instance_pk))
    chain: list[tuple[Rank, str, InstanceVersion | Read]] = [(c.rank, c.sha256, c) for c in added]
    for row in rows:
        try:
            with get_storage(row.tier).open(row.storage_key) as fh:
                rank = rank_of_file(fh)
        except Exception:  # noqa: BLE001 (an unreadable earlier version keeps its place as first stored)
            rank = (EPOCH, 0)
        chain.append((rank, row.sha256, row))
    order, _ = ordered(chain)
    # the rows keep their primary keys (and admin links); out of the way of the unique (instance, version) first
    InstanceVersion.objects.filter(instance_id=instance_pk).update(version=F("version") + RENUMBERING)
    fresh = []
    for n, (_, _, item) in enumerate(order, start=1):
        replaced = order[n][0] if n < len(order) else head
        if isinstance(item, Read):
            fresh.append(_version_row(instance_pk, n, item, replaced))
        else:
            InstanceVersion.objects.filter(pk=item.pk).update(version=n)
    InstanceVersion.objects.bulk_create(fresh)


#: Added to version numbers while they are renumbered (far above any real number of corrections).
RENUMBERING = 1_000_000


def sop_of_key(key: str) -> str:
    """The SOP Instance UID an object key names (``study/series/sop.<hash>.dcm``); checked once the object is read."""
    return key.rsplit("/", 1)[-1].rsplit(".", 2)[0]


def _record(report: ReindexReport, key: str, found: Found, why: str) -> None:
    if found == "indexed":
        report.indexed += 1
    elif found == "version":
        report.versions += 1
    elif found == "already":
        report.already += 1
    else:
        {"corrupt": report.corrupt, "conflict": report.conflicts}.get(found, report.invalid).append(f"{key}: {why}")


def _reindex(
    tiers: list[str],
    progress: Callable[[int], None] | None = None,
    order: Callable[[list[str]], list[str]] | None = None,
) -> ReindexReport:
    """Index every object of ``tiers`` that has no row yet, the copies of one instance together."""
    report = ReindexReport()
    groups: dict[str, list[tuple[str, str]]] = {}
    for tier in tiers:
        storage: Storage = get_storage(tier)
        known = set(Instance.objects.filter(tier=tier).values_list("storage_key", flat=True))
        known |= set(InstanceVersion.objects.filter(tier=tier).values_list("storage_key", flat=True))
        keys = sorted(storage.keys())
        for key in order(keys) if order is not None else keys:
            report.scanned += 1
            if progress is not None and report.scanned % 500 == 0:
                progress(report.scanned)
            if key in known:
                report.already += 1
            else:
                groups.setdefault(sop_of_key(key), []).append((tier, key))
    for found_keys in groups.values():
        reads: list[Read] = []
        for tier, key in found_keys:
            read = read_object(get_storage(tier), tier, key)
            if isinstance(read, Read):
                reads.append(read)
            else:
                _record(report, key, *read)
        if reads:
            outcome = index_copies(reads)
            report.ties += outcome.ties
            for key, (found, why) in outcome.found.items():
                _record(report, key, found, why)
    return report


def reindex_tier(
    tier: str,
    progress: Callable[[int], None] | None = None,
    order: Callable[[list[str]], list[str]] | None = None,
) -> ReindexReport:
    """Index every object of ``tier`` that has no row yet."""
    return _reindex([tier], progress, order)


def reindex(
    tiers: list[str] | None = None,
    wipe: bool = False,
    progress: Callable[[int], None] | None = None,
    order: Callable[[list[str]], list[str]] | None = None,
) -> ReindexReport:
    """Rebuild the index of ``tiers`` (default: every tier) from the stored files.

    ``order`` rearranges each tier's keys (sorted by default) before they are
    visited; the outcome does not depend on it (the tests visit them backwards).
    """
    if wipe:
        wipe_index()
    total = _reindex(tiers or known_tiers(), progress, order)
    from archive.ingest.trash import reapply  # noqa: PLC0415 (the trash sits above reindex)

    reapply()  # belt and braces: each study was already marked as its rows were written (keep_trashed)
    return total
