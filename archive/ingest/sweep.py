"""Sweeping a tier: objects without an index row are indexed, never thrown away; stale staging files go.

An object with a good key that no index row points to is an instance whose
row was lost (a power cut on a database that did not sync its commits, a
crash between placing an object and committing its row) or never written:
it is indexed through the one path ``reindex`` uses
(:func:`archive.ingest.reindex.index_object`), with a "store" audit record
that says sweep recovered it. Only what cannot be an archived instance is
removed: an object whose bytes do not hash to its key or whose UIDs are not
those its key names (it is not what the key names), and staging files. A
valid object that cannot be indexed (a different object under an indexed
SOP Instance UID, which ingest removes itself unless a crash came first) and
one that is not a readable instance but hashes to its key are left where
they are and reported: sweep does not destroy what may be someone's only
copy. Keys of any other shape are not the archive's: no backend lists
them (:meth:`Storage.keys`), so sweep never sees them.

The grace period. Ingest places an object first and commits its row a
moment later, in another process perhaps. Sweep touches only objects and
staging files older than ``min_age`` (an hour by default; ``manage.py sweep
--grace-minutes``), so it never indexes or removes an object a concurrent
STOW or C-STORE is still between placing and committing: such a request
would otherwise find its row already there (harmless, a duplicate) or, for
a removal, its object gone. Keep the grace period well above the longest
store (a multi-gigabyte upload's placement and commit). Before removing, the
index is asked again for that key, so an object indexed since the sweep
began is kept. The earlier versions a correction kept
(:class:`~archive.models.InstanceVersion`) have rows of their own: sweep
leaves them alone. An earlier version whose row was lost (the copy is older,
by its (0400,0561) Original Attributes Sequence, than the indexed instance:
:mod:`archive.ingest.versions`) gets its row back, in its place among the
versions; a copy later than the indexed one (a correction interrupted before
its commit) is left in place and reported. The copies of one instance that
all lack a row (its rows were lost) are indexed together, so the latest
correction is served whatever order the keys are listed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from archive.dicom.part10 import ParsedInstance
from archive.ingest.reindex import Read, index_copies, read_object, sop_of_key
from archive.ingest.store import StoreResult, record_stores
from archive.models import Instance, InstanceVersion
from archive.storage.keys import log_name
from archive.storage.registry import get_storage

log = logging.getLogger(__name__)

#: What :func:`~archive.ingest.reindex.index_object` finds that cannot be an archived instance: removed.
REMOVABLE = ("corrupt", "junk")


@dataclass
class SweepReport:
    """What one sweep of a tier did."""

    recovered: int = 0  # objects without a row, now indexed
    removed: int = 0  # objects that are not what their key names, and stale staging files
    kept: list[str] = field(default_factory=list)  # objects neither indexed nor removed, with the reason
    versions: int = 0  # earlier versions of an instance without their row, now recorded


def audit_recovery(parsed: ParsedInstance) -> None:
    """The "store" audit record of an instance sweep indexed: how it came is ``via=sweep``."""
    record_stores(
        None, [StoreResult.stored(parsed)], via="sweep", actor="sweep", recovered="a stored object without an index row"
    )


def sweep_orphans(tier: str = "hot", min_age: timedelta = timedelta(hours=1)) -> SweepReport:
    """Index stored objects no row points to, remove those that are not what their key names, and stale staging files.

    Only what is older than ``min_age`` is touched (see the module docstring).
    """
    storage = get_storage(tier)
    cutoff = (timezone.now() - min_age).timestamp()
    report = SweepReport()
    known = set(Instance.objects.filter(tier=tier).values_list("storage_key", flat=True))
    known |= set(InstanceVersion.objects.filter(tier=tier).values_list("storage_key", flat=True))
    groups: dict[str, list[str]] = {}  # the copies of one instance are indexed together, as reindex does
    for key in list(storage.keys()):
        if key not in known and storage.modified(key) < cutoff:
            groups.setdefault(sop_of_key(key), []).append(key)
    found_keys: dict[str, tuple[str, str]] = {}
    for keys in groups.values():
        reads: list[Read] = []
        for key in keys:
            read = read_object(storage, tier, key)
            if isinstance(read, Read):
                reads.append(read)
            else:
                found_keys[key] = read
        if reads:
            found_keys.update(index_copies(reads, audit_recovery).found)
    for key, (found, why) in found_keys.items():
        if found == "indexed":
            log.warning("sweep indexed %s: it had no index row", log_name(key))
            report.recovered += 1
        elif found == "version":
            log.warning("sweep recorded %s as an earlier version of its instance", log_name(key))
            report.versions += 1
        elif found in REMOVABLE and not Instance.objects.filter(tier=tier, storage_key=key).exists():
            log.warning("sweep removed %s: %s", log_name(key), why)
            storage.delete(key)
            report.removed += 1
        elif found != "already":
            log.warning("sweep left %s in place: %s", log_name(key), why)
            report.kept.append(f"{log_name(key)}: {why}")
    for path in storage.staging_dir.glob("*.part"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            report.removed += 1
    return report
