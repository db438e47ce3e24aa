"""export_dicom writes plain DICOM with a DICOMDIR, byte for byte; import_dicom takes it back in, byte for byte."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.core.management import CommandError, call_command
from pydicom.fileset import FileSet

from archive.demo import store_bytes
from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.ingest.store import Outcome
from archive.models import Instance, Patient, Study
from archive.storage import registry
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def without(data: bytes, *keywords: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword in keywords:
        delattr(ds, keyword)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def archive() -> dict[str, Any]:
    """Three studies: a CT with a UTF-8 name, an MR lacking what a DICOMDIR record needs, an SR-class instance."""
    ct = StudySpec(patient_name="山田^太郎", patient_id="PAT-JP", accession="ACC-1")
    mr = StudySpec(patient_name="DOE^JOHN", patient_id="PAT-2", accession="ACC-2")
    sr = StudySpec(patient_name="ROE^ANN", patient_id="PAT-3", accession="ACC-3")
    parts = make_series(ct, "CT", count=3)
    parts.append(without(make_instance(mr, "MR"), "StudyID", "SeriesNumber", "StudyTime"))
    parts.append(without(make_instance(sr, "CT", extra={"SOPClassUID": BASIC_TEXT_SR}), "ContentDate"))
    for part in parts:
        assert store_bytes(part) is Outcome.STORED
    return {"ct": ct, "mr": mr, "sr": sr, "parts": parts}


def stored() -> dict[str, str]:
    return dict(Instance.objects.values_list("sop_instance_uid", "sha256"))


def export(dest: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("export_dicom", str(dest), *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def files_by_uid(dest: Path) -> dict[str, bytes]:
    file_set = FileSet(dest / "DICOMDIR")
    return {member.SOPInstanceUID: Path(member.path).read_bytes() for member in file_set}


def test_an_export_holds_every_instance_byte_for_byte_listed_in_its_dicomdir(
    archive: dict[str, Any], tmp_path: Path
) -> None:
    dest = tmp_path / "export"
    assert "exported 5 instances" in export(dest)
    files = files_by_uid(dest)
    assert {uid: hashlib.sha256(data).hexdigest() for uid, data in files.items()} == stored()
    assert sorted(files.values()) == sorted(archive["parts"])
    assert not (dest / ".export-staging").exists()
    names = {str(pydicom.dcmread(io.BytesIO(data)).PatientName) for data in files.values()}
    assert "山田^太郎" in names


def test_its_dicomdir_gives_records_a_neutral_value_where_the_file_lacks_one(
    archive: dict[str, Any], tmp_path: Path
) -> None:
    export(tmp_path / "export")
    dicomdir = pydicom.dcmread(tmp_path / "export" / "DICOMDIR")
    records = dicomdir.DirectoryRecordSequence
    studies = {r.StudyInstanceUID: r for r in records if r.DirectoryRecordType == "STUDY"}
    assert studies[archive["mr"].study_uid].StudyID == "0"
    assert studies[archive["ct"].study_uid].StudyID == "1"
    leaves = {r.ReferencedSOPClassUIDInFile for r in records if r.DirectoryRecordType == "IMAGE"}
    assert BASIC_TEXT_SR in leaves  # pydicom's SR record needs a Content Date the file lacks: a plain IMAGE record
    patients = [r for r in records if r.DirectoryRecordType == "PATIENT"]
    assert {str(r.PatientName) for r in patients} == {"山田^太郎", "DOE^JOHN", "ROE^ANN"}


def test_only_the_studies_named_are_exported_and_each_is_audited(archive: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "export"
    export(dest, "--study", archive["ct"].study_uid, "--study", archive["sr"].study_uid)
    files = files_by_uid(dest)
    assert len(files) == 4
    assert {pydicom.dcmread(io.BytesIO(d)).StudyInstanceUID for d in files.values()} == {
        archive["ct"].study_uid,
        archive["sr"].study_uid,
    }
    events = AuditEvent.objects.filter(action="export").order_by("id")
    assert [(e.study_instance_uid, e.outcome, e.detail["instances"]) for e in events] == [
        (archive["ct"].study_uid, "success", 3),
        (archive["sr"].study_uid, "success", 1),
    ]


def test_an_unknown_study_a_bad_uid_or_a_folder_in_use_is_refused_and_nothing_is_written(
    archive: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(CommandError, match="no such study: 1.2.3.4"):
        export(tmp_path / "a", "--study", "1.2.3.4")
    assert not (tmp_path / "a").exists()
    with pytest.raises(CommandError, match="not a UID"):
        export(tmp_path / "b", "--study", "../../etc/passwd")
    assert not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(CommandError, match="not an empty folder"):
        export(tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["keep.txt"]
    assert not AuditEvent.objects.filter(action="export").exists()


def test_an_object_changed_in_storage_is_reported_and_left_out(archive: dict[str, Any], tmp_path: Path) -> None:
    victim = Instance.objects.get(sop_instance_uid=pydicom.dcmread(io.BytesIO(archive["parts"][1])).SOPInstanceUID)
    path = registry.get_storage(victim.tier).root / victim.storage_key  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 instances could not be exported intact"):
        call_command("export_dicom", str(tmp_path / "export"), stdout=io.StringIO(), stderr=err)
    assert f"left out {victim.sop_instance_uid}: its stored bytes no longer match" in err.getvalue()
    files = files_by_uid(tmp_path / "export")
    assert victim.sop_instance_uid not in files
    assert len(files) == 4
    study = victim.series.study.study_instance_uid
    (event,) = AuditEvent.objects.filter(action="export", study_instance_uid=study)
    assert (event.outcome, event.detail["instances"], event.detail["failed"]) == ("partial", 2, 1)


def test_a_study_none_of_whose_objects_can_be_exported_is_audited_as_failed(
    archive: dict[str, Any], tmp_path: Path
) -> None:
    victim = Instance.objects.get(series__study__study_instance_uid=archive["sr"].study_uid)
    path = registry.get_storage(victim.tier).root / victim.storage_key  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CommandError):
        export(tmp_path / "export", "--study", archive["sr"].study_uid)
    (event,) = AuditEvent.objects.filter(action="export")
    assert (event.outcome, event.detail["instances"], event.detail["failed"]) == ("failure", 0, 1)
    assert not (tmp_path / "export" / "DICOMDIR").exists()


def test_a_second_archive_imports_the_export_and_ends_byte_identical(
    archive: dict[str, Any], tmp_path: Path, settings: Any
) -> None:
    before = {i.sop_instance_uid: (i.sha256, i.size, i.metadata) for i in Instance.objects.all()}
    export(tmp_path / "export")
    (tmp_path / "export" / "README.TXT").write_text("not DICOM")
    # The second archive: an empty index and empty storage.
    Study.objects.all().delete()
    Patient.objects.all().delete()
    settings.PACS_STORAGE_DIR = tmp_path / "second"
    registry.get_storage.cache_clear()
    out = io.StringIO()
    call_command("import_dicom", str(tmp_path / "export"), stdout=out, stderr=io.StringIO())
    assert "stored 5, already stored 0, refused 0, skipped 2" in out.getvalue()  # the DICOMDIR and README.TXT
    after = {i.sop_instance_uid: (i.sha256, i.size, i.metadata) for i in Instance.objects.all()}
    assert after == before
    for instance in Instance.objects.all():
        with instance.open_stored() as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == instance.sha256
    again = io.StringIO()
    call_command("import_dicom", str(tmp_path / "export"), stdout=again, stderr=io.StringIO())
    assert "stored 0, already stored 5" in again.getvalue()
    assert AuditEvent.objects.filter(action="store", detail__via="import_dicom").count() == 3 + 3


def test_import_refuses_a_broken_file_and_keeps_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = make_series(StudySpec(patient_id="PAT-9"), "CT", count=2)
    (folder / "a.dcm").write_bytes(good[0])
    (folder / "b.dcm").write_bytes(good[1])
    (folder / "c.dcm").write_bytes(good[1][:132] + b"\x00" * 40)  # a preamble and DICM, then garbage
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 files were refused"):
        call_command("import_dicom", str(folder), stdout=io.StringIO(), stderr=err)
    assert "refused c.dcm" in err.getvalue()
    assert Instance.objects.count() == 2
    with pytest.raises(CommandError, match="is not a folder"):
        call_command("import_dicom", str(folder / "a.dcm"))
    with pytest.raises(CommandError, match="no site with code"):
        call_command("import_dicom", str(folder), "--site", "nowhere")
