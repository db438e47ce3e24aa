"""Rebuilding the index from the stored Part 10 files alone.

The index is derived data (see :mod:`archive.models`): walking a tier's keys,
hashing and parsing each object, and indexing it through the same
:func:`archive.ingest.index.index_instance` that ingest uses gives back the same
rows. Re-running is idempotent: an object already indexed under its key is
counted and left alone. An object whose bytes no longer match the SHA-256
prefix in its key is reported as corrupt and never indexed.

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

from archive.dicom.part10 import InvalidInstance, ParsedInstance, parse_instance
from archive.ingest.index import InvalidSeriesParent, index_instance
from archive.models import Instance, Patient, Study, Tier, TrashEntry
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

    def merge(self, other: ReindexReport) -> None:
        self.scanned += other.scanned
        self.indexed += other.indexed
        self.already += other.already
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
Found = Literal["indexed", "already", "corrupt", "invalid", "junk", "conflict", "gone"]


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


def index_object(
    storage: Storage, tier: str, key: str, audit: Callable[[ParsedInstance], None] | None = None
) -> tuple[Found, str]:
    """Index the stored object ``key`` of ``tier`` from its bytes alone; what it was, and why when not indexed.

    An object whose bytes do not hash to its key, or whose UIDs are not those
    of its key, is never indexed: ``corrupt``, or ``junk`` when it is not even
    a readable instance (``invalid`` is an unreadable object that does hash
    to its key, which ingest never places). ``audit`` is called inside the transaction that writes the rows,
    so the rows are never committed without their audit record.
    """
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
    existing = Instance.objects.filter(sop_instance_uid=parsed.sop_instance_uid).values_list("sha256", flat=True)
    if existing:
        if existing[0] == sha256:
            return "already", "the same object is indexed in another tier"
        return "conflict", "SOP Instance UID already indexed with other content"
    try:
        with write_lock(), transaction.atomic():
            index_instance(parsed, key, sha256, size, tier=tier)
            if not keep_trashed(parsed.study_instance_uid) and not storage.exists(key):
                raise _Gone
            if audit is not None:
                audit(parsed)
    except _Gone:
        return "gone", "removed while it was read (a purge of its study)"
    except InvalidSeriesParent:
        return "conflict", "Series Instance UID already belongs to another study"
    except IntegrityError:
        return "already", "indexed concurrently by an ingest"
    return "indexed", ""


def reindex_tier(tier: str, progress: Callable[[int], None] | None = None) -> ReindexReport:
    """Index every object of ``tier`` that has no row yet."""
    storage: Storage = get_storage(tier)
    report = ReindexReport()
    indexed = dict(Instance.objects.filter(tier=tier).values_list("storage_key", "sop_instance_uid"))
    for key in sorted(storage.keys()):
        report.scanned += 1
        if progress is not None and report.scanned % 500 == 0:
            progress(report.scanned)
        if key in indexed:
            report.already += 1
            continue
        found, why = index_object(storage, tier, key)
        if found == "indexed":
            report.indexed += 1
        elif found == "already":
            report.already += 1
        else:
            {"corrupt": report.corrupt, "conflict": report.conflicts}.get(found, report.invalid).append(f"{key}: {why}")
    return report


def reindex(
    tiers: list[str] | None = None, wipe: bool = False, progress: Callable[[int], None] | None = None
) -> ReindexReport:
    """Rebuild the index of ``tiers`` (default: every tier) from the stored files."""
    if wipe:
        wipe_index()
    total = ReindexReport()
    for tier in tiers or known_tiers():
        total.merge(reindex_tier(tier, progress))
    from archive.ingest.trash import reapply  # noqa: PLC0415 (the trash sits above reindex)

    reapply()  # belt and braces: each study was already marked as its rows were written (keep_trashed)
    return total
