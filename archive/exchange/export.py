"""Export studies as a DICOM File-set: Part 10 files, exactly as stored, indexed by a DICOMDIR.

``manage.py export_dicom DEST [--study UID]…`` is the exit path: the whole
archive, or the studies named, leave as plain DICOM that any workstation,
CD viewer or other PACS reads (PS3.10 File-set; pydicom's :class:`FileSet`
writes the DICOMDIR and names the files ``PTxxxxxx/STxxxxxx/SExxxxxx/IMxxxxxx``).

Every file is the stored Part 10 object, byte for byte: each one is copied
once into a hidden staging folder inside ``DEST`` while its SHA-256 is
computed, and kept only when that digest is the one recorded at ingest (an
object that changed in storage is reported and left out, never exported as
good). The DICOMDIR is then written from the files' headers, the files are
moved to the names it gives them, flushed to disk, and read back once more
against the stored digest.

The DICOMDIR's records need some attributes (PS3.3 F.5: Patient ID, Study
Date and Time, Study ID, Modality, Series Number, Instance Number) that an
instance may lack or leave empty; the record then carries a neutral value
(``MISSING_RECORD_VALUES``). Only the DICOMDIR gets it: the files are never
changed. A leaf record pydicom cannot make for lack of its own attributes
(e.g. an SR without Content Date) becomes a plain IMAGE record.

Every study exported is audited (``export``), after its files are verified.

Instances that are not ONLINE (on a tier that needs a restore) cannot be
copied now. The export starts the restore of every NEARLINE one (the restore
WADO-RS and C-GET start, audited with reason ``export``) and then, by
default, exports what is online and lists each instance left out with why
(:attr:`ExportReport.not_online`: restoring with an estimate, OFFLINE, or its
restore failed); the command exits non-zero (3) so no script takes an
incomplete export for a complete one. With ``wait`` it first waits for those
restores (advancing them itself, so no task worker is needed), reporting
progress, and exports everything once they are back. OFFLINE instances are
never restored automatically: an administrator brings their media back and
runs ``manage.py tiers restore``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import DIRECTORY_RECORDERS, FileSet, RecordNode

from archive.ingest.lastaccess import touch_study
from archive.ingest.restore import Held, advance_restores, restore_for_retrieve, seconds_left
from archive.models import ACTIVE_RESTORE_STATES, Availability, Instance, Restore, Study
from audit.trail import record

CHUNK = 1 << 20
STAGING = ".export-staging"
#: What a DICOMDIR record carries for a required attribute an instance lacks (the file keeps its own value).
MISSING_RECORD_VALUES: dict[str, object] = {
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "0",
    "Modality": "OT",
    "SeriesNumber": 0,
    "InstanceNumber": 0,
}


class ExportError(Exception):
    """The export cannot start: say why, write nothing."""


@dataclass
class ExportReport:
    studies: int = 0
    instances: int = 0
    bytes: int = 0
    #: ``(SOP Instance UID, reason)`` of each instance left out.
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: ``(SOP Instance UID, why)`` of each instance left out because it is not online (restoring, offline).
    not_online: list[tuple[str, str]] = field(default_factory=list)
    #: The estimate until the restores the export started are done (0: none under way).
    restore_seconds_left: int = 0

    @property
    def restore_minutes(self) -> int:
        return max(1, round(self.restore_seconds_left / 60))


def instances_to_export(study_uids: Sequence[str] = ()) -> QuerySet[Instance]:
    """The instances of the studies named (every study when none is), patient by patient."""
    # A study in the trash is deleted as far as anyone can see: not exported.
    instances = Instance.objects.select_related("series__study__patient").filter(series__study__trashed_at__isnull=True)
    if study_uids:
        known = set(
            Study.objects.filter(study_instance_uid__in=study_uids, trashed_at__isnull=True).values_list(
                "study_instance_uid", flat=True
            )
        )
        unknown = [uid for uid in study_uids if uid not in known]
        if unknown:
            raise ExportError(f"no such study: {', '.join(unknown)}")
        instances = instances.filter(series__study__study_instance_uid__in=study_uids)
    return instances.order_by("series__study__patient_id", "series__study_id", "series_id", "instance_number", "id")


#: ``waited(restored, total, seconds_left)``: progress of the restores an export waits for.
Waited = Callable[[int, int, int], None]


def export_dicom(
    dest: Path,
    study_uids: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
    wait: bool = False,
    waited: Waited | None = None,
    max_wait: float | None = None,
) -> ExportReport:
    """Write the instances of ``study_uids`` (every study when empty) into ``dest`` as a File-set.

    Restores of the NEARLINE instances are started; with ``wait`` the export
    waits for them (at most ``max_wait`` seconds when given) before copying.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportError(f"{dest} exists and is not an empty folder")
    instances = instances_to_export(study_uids)
    total = instances.count()
    if total == 0:
        raise ExportError("nothing to export: the archive holds no instance")
    held = start_restores(instances)
    if wait and held.restoring:
        wait_for_restores(instances, waited, max_wait)
    staging = dest / STAGING
    staging.mkdir(parents=True)
    report = ExportReport()
    file_set = FileSet()
    file_set.ID = "PACS_EXPORT"
    staged: dict[str, tuple[Path, Instance]] = {}
    left_out: dict[str, int] = {}  # per study: instances that could not be copied intact
    patient_of: dict[str, str] = {}
    for n, instance in enumerate(instances.iterator(chunk_size=500), start=1):
        study_uid = instance.series.study.study_instance_uid
        patient_of[study_uid] = instance.series.study.patient.patient_id
        if instance.availability != Availability.ONLINE:
            report.not_online.append((instance.sop_instance_uid, _why_not_online(instance)))
            left_out[study_uid] = left_out.get(study_uid, 0) + 1
            if progress:
                progress(n, total)
            continue
        copy = staging / f"{n:09d}"
        reason = _copy_verified(instance, copy)
        if reason:
            copy.unlink(missing_ok=True)
            report.failed.append((instance.sop_instance_uid, reason))
            left_out[study_uid] = left_out.get(study_uid, 0) + 1
        else:
            _add(file_set, dcmread(copy, stop_before_pixels=True))
            staged[instance.sop_instance_uid] = (copy, instance)
        if progress:
            progress(n, total)
    written: dict[str, list[tuple[Path, Instance]]] = {}
    if staged:
        file_set.write(dest)
        for member in file_set:
            copy, instance = staged[member.SOPInstanceUID]
            target = dest / member.FileID
            os.replace(copy, target)  # over the header-only copy FileSet wrote
            written.setdefault(instance.series.study.study_instance_uid, []).append((target, instance))
        _flush_tree(dest)
    shutil.rmtree(staging)
    for study_uid in patient_of:
        files = written.get(study_uid, [])
        good = [(path, i) for path, i in files if _sha256(path) == i.sha256]
        report.failed.extend(
            (i.sop_instance_uid, "differs from the stored object once written")
            for path, i in files
            if (path, i) not in good
        )
        bad = len(files) - len(good) + left_out.get(study_uid, 0)
        if good:
            report.studies += 1
        report.instances += len(good)
        report.bytes += sum(i.size for _, i in good)
        record(
            "export",
            actor="export_dicom",
            outcome="success" if not bad else ("partial" if good else "failure"),
            patient_id=patient_of[study_uid],
            study_instance_uid=study_uid,
            detail={"instances": len(good), "failed": bad, "via": "export_dicom"},
        )
        if good:
            touch_study(study_uid)  # last access, for lifecycle rules (archive/ingest/lastaccess.py)
    active = Restore.objects.filter(instance__in=instances.values("pk"), state__in=ACTIVE_RESTORE_STATES)
    report.restore_seconds_left = seconds_left(active.only("state", "source_tier", "requested_at"))
    return report


def start_restores(instances: QuerySet[Instance]) -> Held:
    """Start the restore of every NEARLINE instance of ``instances`` (audited, reason ``export``)."""
    ids = list(instances.exclude(availability=Availability.ONLINE).values_list("pk", flat=True))
    if not ids:
        return Held()
    return restore_for_retrieve(ids, actor="export_dicom", reason="export")


def wait_for_restores(
    instances: QuerySet[Instance],
    waited: Waited | None = None,
    max_wait: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Advance the restores of ``instances`` until none is under way (or ``max_wait`` seconds have passed)."""
    restoring = Restore.objects.filter(instance__in=instances.values("pk"), state__in=ACTIVE_RESTORE_STATES)
    total = restoring.count()
    deadline = None if max_wait is None else time.monotonic() + max_wait
    while True:
        advance_restores()
        active = list(restoring.only("state", "source_tier", "requested_at"))
        if waited:
            waited(total - len(active), total, seconds_left(active))
        if not active or (deadline is not None and time.monotonic() >= deadline):
            return
        sleep(float(settings.PACS_RESTORE_POLL_SECONDS))


def _why_not_online(instance: Instance) -> str:
    """Why an instance that is not ONLINE was left out: restoring, OFFLINE, or its restore failed."""
    last = Restore.objects.filter(instance=instance).order_by("-id").first()
    if last is not None and last.state in ACTIVE_RESTORE_STATES:
        return f"{instance.availability} on tier {instance.tier}: restore under way"
    if instance.availability == Availability.OFFLINE:
        return f"OFFLINE on tier {instance.tier}: its media must be brought back (manage.py tiers restore)"
    why = f": {last.error}" if last is not None and last.error else ""
    return f"{instance.availability} on tier {instance.tier}: its restore failed{why}"


def _copy_verified(instance: Instance, target: Path) -> str:
    """Copy the stored object to ``target``; the reason it cannot be exported, or ``""``."""
    digest = hashlib.sha256()
    try:
        with instance.open_stored() as source, open(target, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        return f"cannot be read from storage ({exc.__class__.__name__})"
    if digest.hexdigest() != instance.sha256:
        return "its stored bytes no longer match the SHA-256 recorded at ingest"
    return ""


def _add(file_set: FileSet, header: Dataset) -> None:
    """Add the instance whose header is ``header`` to ``file_set`` (what is staged there is replaced later)."""
    for keyword, value in MISSING_RECORD_VALUES.items():
        if keyword not in header or header[keyword].VM == 0:
            setattr(header, keyword, value)
    try:
        file_set.add(header)
    except ValueError:  # its leaf record type needs attributes it lacks: a plain IMAGE record
        file_set.add_custom(_stub(header), _image_leaf(header))


def _stub(header: Dataset) -> Dataset:
    stub = Dataset()
    stub.SOPClassUID = header.SOPClassUID
    stub.SOPInstanceUID = header.SOPInstanceUID
    stub.file_meta = FileMetaDataset(header.file_meta)
    return stub


def _image_leaf(header: Dataset) -> RecordNode:
    parent: RecordNode | None = None
    node = None
    for record_type in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
        record_ds = DIRECTORY_RECORDERS[record_type](header)
        record_ds.DirectoryRecordType = record_type
        if "SpecificCharacterSet" in header:
            record_ds.SpecificCharacterSet = header.SpecificCharacterSet
        if record_type == "IMAGE":  # the leaf's key; add_custom sets these again
            record_ds.ReferencedSOPClassUIDInFile = header.SOPClassUID
            record_ds.ReferencedSOPInstanceUIDInFile = header.SOPInstanceUID
        node = RecordNode(record_ds)
        if parent is not None:
            node.parent = parent
        parent = node
    assert node is not None
    return node


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _flush_tree(root: Path) -> None:
    """fsync the DICOMDIR and every folder under ``root`` (the files were fsynced when copied, then renamed)."""
    _fsync(root / "DICOMDIR")
    for folder, _dirs, _files in os.walk(root):
        _fsync(Path(folder))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
