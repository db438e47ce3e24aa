"""Store a folder of Part 10 files through the one ingest path (``manage.py import_dicom SOURCE``).

The way back in for what :mod:`.export` wrote, a CD's File-set or another
archive's dump: every file under ``SOURCE`` is staged and stored by
:func:`archive.ingest.store.store_instances`, exactly as a STOW-RS upload
is, so it is parsed, deduplicated, placed durably and indexed the same way,
and a second archive ends byte-identical to the first. DICOMDIR files and
anything that is not a DICOM Part 10 file are skipped (and counted).
New studies belong to ``site`` when one is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from archive.ingest.store import Outcome, Sender, record_stores, store_instances
from archive.models import Site
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file

#: Files stored per call of the ingest path (one transaction, one fsync of each new folder).
BATCH = 50
#: Media Storage Directory Storage: a DICOMDIR, not an instance.
DICOMDIR_SOP_CLASS = b"1.2.840.10008.1.3.10"


@dataclass
class ImportReport:
    stored: int = 0
    duplicates: int = 0
    skipped: int = 0
    #: ``(relative path, why)`` of each file the archive refused.
    refused: list[tuple[str, str]] = field(default_factory=list)


def import_folder(
    source: Path, site: Site | None = None, progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Store every DICOM Part 10 file under ``source``; what was stored, skipped and refused."""
    report = ImportReport()
    batch: list[Path] = []
    seen = 0
    for path in _dicom_files(source, report):
        batch.append(path)
        if len(batch) == BATCH:
            _store(batch, source, site, report)
            seen += len(batch)
            batch = []
            if progress:
                progress(seen)
    if batch:
        _store(batch, source, site, report)
        if progress:
            progress(seen + len(batch))
    return report


def _dicom_files(source: Path, report: ImportReport) -> Iterator[Path]:
    for path in sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink()):
        with open(path, "rb") as fh:
            head = fh.read(132 + 256)
        if head[128:132] != b"DICM" or path.name.upper() == "DICOMDIR" or DICOMDIR_SOP_CLASS in head[132:]:
            report.skipped += 1
            continue
        yield path


def _store(paths: list[Path], source: Path, site: Site | None, report: ImportReport) -> None:
    storage = get_storage("hot")
    readable: list[Path] = []
    staged = []
    for path in paths:
        try:
            staged.append(stage_file(storage, path))
        except OSError as exc:
            report.refused.append((str(path.relative_to(source)), f"cannot be read ({exc.strerror or exc})"))
        else:
            readable.append(path)
    if not staged:
        return
    results = store_instances(staged, sender=Sender(site=site) if site else None)
    record_stores(None, results, via="import_dicom", actor="import_dicom")
    for path, result in zip(readable, results, strict=True):
        if result.outcome is Outcome.STORED:
            report.stored += 1
        elif result.outcome is Outcome.DUPLICATE:
            report.duplicates += 1
        else:
            report.refused.append((str(path.relative_to(source)), result.detail or result.outcome.value))
