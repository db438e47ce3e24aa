"""Corrections through the one ingest path: new versions of every instance, the earlier ones kept for administrators.

After a correction QIDO-RS, WADO-RS, the worklist row and ``export_dicom`` all
answer with the corrected values and bytes; the replaced objects stay, as
earlier versions, until the study itself is purged (never while it is held).
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pydicom
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from pydicom.fileset import FileSet

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest import correct as correct_module
from archive.ingest.correct import CorrectionRefused, correct_study
from archive.ingest.merge import merge_study
from archive.ingest.split import split_study
from archive.ingest.store import Outcome, Placed, Replacement, store_instances
from archive.ingest.sweep import sweep_orphans
from archive.ingest.trash import purge_study, restore_study, trash_series, trash_study
from archive.models import (
    Instance,
    InstanceVersion,
    LegalHold,
    MoveState,
    Patient,
    PersonNameWord,
    Series,
    Study,
    TierMove,
)
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter
from audit.models import AuditEvent
from portal.worklist.models import WorklistItem
from tests.conftest import stow

pytestmark = pytest.mark.django_db(transaction=True)

WRONG = StudySpec(patient_name="WRONG^PATIENT", patient_id="PAT-WRONG", accession="ACC-1", description="CT HEAD")
RIGHT = {"PatientID": "PAT-RIGHT", "PatientName": "RIGHT^ROSE", "AccessionNumber": "ACC-9"}


@pytest.fixture
def study(upload_client: Client) -> Study:
    assert stow(upload_client, make_series(WRONG, "CT", count=3, size=16)).status_code == 200
    return Study.objects.get(study_instance_uid=WRONG.study_uid)


def stored_bytes(instance: Instance) -> bytes:
    with instance.open_stored() as fh:
        return fh.read()


def test_a_wrong_patient_id_is_corrected_everywhere_with_new_versions_and_one_audit_record(
    study: Study, owner: User, owner_client: Client
) -> None:
    before = {i.sop_instance_uid: (i.sha256, i.storage_key, stored_bytes(i)) for i in Instance.objects.all()}
    done = correct_study(study, RIGHT, "wrong patient selected at the modality", user=owner)
    assert done.instances == 3
    assert done.changes["PatientID"] == ("PAT-WRONG", "PAT-RIGHT")

    for instance in Instance.objects.all():
        data = stored_bytes(instance)
        ds = pydicom.dcmread(io.BytesIO(data))
        assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber) == ("PAT-RIGHT", "RIGHT^ROSE", "ACC-9")
        assert ds.SOPInstanceUID == instance.sop_instance_uid
        old_sha, old_key, old_bytes = before[instance.sop_instance_uid]
        assert instance.sha256 == hashlib.sha256(data).hexdigest() != old_sha
        assert instance.storage_key != old_key
        assert ds.PixelData == pydicom.dcmread(io.BytesIO(old_bytes)).PixelData  # pixels untouched
        (version,) = instance.versions.all()
        assert (version.version, version.sha256, version.storage_key) == (1, old_sha, old_key)
        with version.open_stored() as fh:
            assert fh.read() == old_bytes  # the original stays retrievable
        assert (version.replaced_by, version.reason) == ("owner", "wrong patient selected at the modality")

    study.refresh_from_db()
    assert study.patient.patient_id == "PAT-RIGHT" and study.accession_number == "ACC-9"
    assert not Patient.objects.filter(patient_id="PAT-WRONG").exists()  # left without studies: gone
    assert set(PersonNameWord.objects.filter(patient=study.patient).values_list("word", flat=True)) == {"RIGHT", "ROSE"}

    (event,) = AuditEvent.objects.filter(action="correct")
    assert event.actor == "owner" and event.patient_id == "PAT-RIGHT"
    assert event.detail["reason"] == "wrong patient selected at the modality"
    assert event.detail["changes"]["Patient ID"] == {"from": "PAT-WRONG", "to": "PAT-RIGHT"}
    assert event.detail["instances"] == 3

    # QIDO-RS finds it under the right patient only, with the corrected attributes.
    wrong = owner_client.get("/dicom-web/studies?PatientID=PAT-WRONG", HTTP_ACCEPT="application/dicom+json")
    assert wrong.status_code == 200 and json.loads(wrong.content) == []
    right = owner_client.get("/dicom-web/studies?PatientID=PAT-RIGHT", HTTP_ACCEPT="application/dicom+json")
    (found,) = json.loads(right.content)
    assert found["00100010"]["Value"] == [{"Alphabetic": "RIGHT^ROSE"}]
    assert found["00080050"]["Value"] == ["ACC-9"]
    by_name = owner_client.get("/dicom-web/studies?PatientName=right*", HTTP_ACCEPT="application/dicom+json")
    assert [s["0020000D"]["Value"][0] for s in json.loads(by_name.content)] == [study.study_instance_uid]
    # WADO-RS metadata and the instance bytes are the corrected copy.
    uid = study.study_instance_uid
    dicom_json = "application/dicom+json"
    meta = json.loads(owner_client.get(f"/dicom-web/studies/{uid}/metadata", HTTP_ACCEPT=dicom_json).content)
    assert {m["00100020"]["Value"][0] for m in meta} == {"PAT-RIGHT"}
    first = Instance.objects.select_related("series").order_by("pk")[0]
    url = f"/dicom-web/studies/{uid}/series/{first.series.series_instance_uid}/instances/{first.sop_instance_uid}"
    wado = owner_client.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"')
    assert wado.status_code == 200
    body = b"".join(wado.streaming_content) if wado.streaming else wado.content  # type: ignore[attr-defined]
    assert stored_bytes(first) in body and hashlib.sha256(stored_bytes(first)).hexdigest() == first.sha256

    # The worklist row follows through the archive's signal.
    row = WorklistItem.objects.get(study=study)
    assert (row.patient_id, row.patient_name, row.accession_number) == ("PAT-RIGHT", "RIGHT^ROSE", "ACC-9")


def test_a_browser_that_kept_an_instance_from_before_a_correction_revalidates_and_gets_the_new_version(
    study: Study, owner: User, owner_client: Client
) -> None:
    first = Instance.objects.select_related("series").order_by("pk")[0]
    uid = study.study_instance_uid
    url = f"/dicom-web/studies/{uid}/series/{first.series.series_instance_uid}/instances/{first.sop_instance_uid}"
    kept = {}
    for path, accept in ((url, "application/dicom"), (url + "/metadata", "application/dicom+json")):
        response = owner_client.get(path, HTTP_ACCEPT=accept)
        # Kept by the browser, but never used without asking: the same URL gets new content on a correction.
        assert response["Cache-Control"] == "private, no-cache"
        kept[path] = response["ETag"]
        assert owner_client.get(path, HTTP_ACCEPT=accept, HTTP_IF_NONE_MATCH=kept[path]).status_code == 304

    correct_study(study, RIGHT, "wrong patient selected at the modality", user=owner)

    first.refresh_from_db()
    again = owner_client.get(url, HTTP_ACCEPT="application/dicom", HTTP_IF_NONE_MATCH=kept[url])
    assert again.status_code == 200 and again["ETag"] != kept[url]
    body = b"".join(again.streaming_content) if again.streaming else again.content  # type: ignore[attr-defined]
    assert hashlib.sha256(body).hexdigest() == first.sha256
    meta = owner_client.get(
        url + "/metadata", HTTP_ACCEPT="application/dicom+json", HTTP_IF_NONE_MATCH=kept[url + "/metadata"]
    )
    assert meta.status_code == 200
    assert json.loads(meta.content)[0]["00100020"]["Value"] == ["PAT-RIGHT"]


def test_export_dicom_writes_the_corrected_copies(study: Study, owner: User, tmp_path: Path) -> None:
    correct_study(study, {"PatientName": "RIGHT^ROSE"}, "typo", user=owner)
    dest = tmp_path / "export"
    call_command("export_dicom", str(dest), stdout=io.StringIO(), stderr=io.StringIO())
    files = {str(m.SOPInstanceUID): Path(m.path).read_bytes() for m in FileSet(dest / "DICOMDIR")}
    assert len(files) == 3
    for instance in Instance.objects.all():
        assert hashlib.sha256(files[instance.sop_instance_uid]).hexdigest() == instance.sha256
        assert str(pydicom.dcmread(io.BytesIO(files[instance.sop_instance_uid])).PatientName) == "RIGHT^ROSE"


def test_a_second_correction_keeps_both_earlier_versions(study: Study, owner: User) -> None:
    correct_study(study, {"StudyDescription": "CT HEAD W/O"}, "protocol name", user=owner)
    study.refresh_from_db()
    correct_study(study, {"StudyDescription": "CT HEAD NATIVE"}, "again", user=owner)
    instance = Instance.objects.order_by("pk").first()
    assert instance is not None
    assert list(instance.versions.values_list("version", "reason")) == [(1, "protocol name"), (2, "again")]
    assert len({v.sha256 for v in instance.versions.all()} | {instance.sha256}) == 3


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"PatientID": "X" * 65}, "PatientID"),
        ({"PatientID": ""}, "PatientID"),
        ({"PatientBirthDate": "19991332"}, "PatientBirthDate"),
        ({"PatientBirthDate": "1999-01-01"}, "PatientBirthDate"),
        ({"PatientSex": "male"}, "PatientSex"),
        ({"AccessionNumber": "A" * 17}, "AccessionNumber"),
        ({"PatientName": "A\\B"}, "PatientName"),
        ({"StudyDescription": "line\nbreak"}, "StudyDescription"),
        ({"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),
    ],
)
def test_an_invalid_value_is_refused_and_nothing_is_written(
    study: Study, owner: User, changes: dict[str, str], field: str
) -> None:
    before = list(Instance.objects.values_list("sha256", flat=True))
    with pytest.raises(CorrectionRefused) as refused:
        correct_study(study, changes, "fix", user=owner)
    assert refused.value.status == 400 and field in refused.value.errors
    assert list(Instance.objects.values_list("sha256", flat=True)) == before
    assert not InstanceVersion.objects.exists()
    assert AuditEvent.objects.get(action="correct").outcome == "denied"


def test_a_reason_is_required_and_a_no_op_is_refused(study: Study, owner: User) -> None:
    with pytest.raises(CorrectionRefused) as refused:
        correct_study(study, {"PatientName": "X^Y"}, "   ", user=owner)
    assert "reason" in refused.value.errors
    with pytest.raises(CorrectionRefused, match="nothing to correct"):
        correct_study(study, {"PatientID": "PAT-WRONG"}, "same", user=owner)


def test_hostile_values_are_stored_as_text(study: Study, owner: User) -> None:
    hostile = "<script>alert(1)</script>"
    correct_study(study, {"StudyDescription": hostile}, "<b>why</b>", user=owner)
    study.refresh_from_db()
    assert study.study_description == hostile
    assert WorklistItem.objects.get(study=study).description == hostile


def test_a_study_in_the_trash_is_not_corrected(study: Study, owner: User) -> None:
    trash_study(study, actor="admin")
    with pytest.raises(CorrectionRefused, match="trash") as refused:
        correct_study(study, RIGHT, "fix", user=owner)
    assert refused.value.status == 409
    assert not InstanceVersion.objects.exists()


def test_a_correction_during_a_tier_move_is_refused_and_loses_no_bytes(study: Study, owner: User) -> None:
    instance = Instance.objects.order_by("pk").first()
    assert instance is not None
    TierMove.objects.create(
        instance=instance, batch="b", source_tier="hot", source_key=instance.storage_key, target_tier="cold"
    )
    with pytest.raises(CorrectionRefused, match="tier move") as refused:
        correct_study(study, RIGHT, "fix", user=owner)
    assert refused.value.status == 409
    assert Instance.objects.get(pk=instance.pk).storage_key == instance.storage_key
    TierMove.objects.update(state=MoveState.DONE)
    assert correct_study(study, RIGHT, "fix", user=owner).instances == 3


def test_a_move_that_begins_while_copies_are_written_refuses_the_whole_correction(study: Study, owner: User) -> None:
    """The check runs again inside the index transaction: nothing is switched, the placed copies are removed."""
    real = correct_module.rewrite
    keys_before = set(get_storage("hot").keys())

    def rewrite_then_a_move_starts(source: Any, changes: dict[str, str]) -> bytes:
        if not TierMove.objects.exists():
            instance = Instance.objects.order_by("pk").first()
            assert instance is not None
            TierMove.objects.create(
                instance=instance, batch="b", source_tier="hot", source_key=instance.storage_key, target_tier="cold"
            )
        return real(source, changes)

    with mock.patch.object(correct_module, "rewrite", rewrite_then_a_move_starts):
        with pytest.raises(CorrectionRefused, match="tier move"):
            correct_study(study, RIGHT, "fix", user=owner)
    assert not InstanceVersion.objects.exists()
    assert set(get_storage("hot").keys()) == keys_before  # the copies were removed, the originals kept
    assert {i.sha256 for i in Instance.objects.all()} == {
        hashlib.sha256(stored_bytes(i)).hexdigest() for i in Instance.objects.all()
    }


def test_an_interrupted_correction_leaves_the_study_as_it_was_and_runs_again_to_completion(
    study: Study, owner: User
) -> None:
    before = dict(Instance.objects.values_list("sop_instance_uid", "storage_key"))
    with mock.patch.object(InstanceVersion.objects, "bulk_create", side_effect=OperationalError("disk gone")):
        with pytest.raises(CorrectionRefused) as refused:
            correct_study(study, RIGHT, "fix", user=owner)
    assert refused.value.status == 503
    assert dict(Instance.objects.values_list("sop_instance_uid", "storage_key")) == before
    for instance in Instance.objects.all():
        stored_bytes(instance)  # every row still points to its object
    assert not InstanceVersion.objects.exists()
    study.refresh_from_db()
    assert study.patient.patient_id == "PAT-WRONG"
    assert correct_study(study, RIGHT, "fix", user=owner).instances == 3


def test_earlier_versions_stay_under_a_legal_hold_and_go_with_the_purge(study: Study, owner: User) -> None:
    correct_study(study, {"StudyDescription": "CT HEAD NATIVE"}, "fix", user=owner)
    versions = [(v.tier, v.storage_key) for v in InstanceVersion.objects.all()]
    current = [(i.tier, i.storage_key) for i in Instance.objects.all()]
    trash_study(study, actor="admin")
    hold = LegalHold.objects.create(study_instance_uid=study.study_instance_uid, reason="litigation")
    later = timezone.now() + timedelta(days=365)
    with pytest.raises(Exception, match="legal hold"):
        purge_study(study.study_instance_uid, now=later)
    assert all(key in set(get_storage(t).keys()) for t, key in versions)
    hold.released_at = timezone.now()
    hold.save()
    purge_study(study.study_instance_uid, now=later)
    left = set(get_storage("hot").keys())
    assert not any(key in left for _, key in versions + current)
    assert not InstanceVersion.objects.exists()


def test_a_patient_id_under_a_legal_hold_on_the_patient_is_not_changed(study: Study, owner: User) -> None:
    LegalHold.objects.create(patient_id="PAT-WRONG", reason="litigation")
    with pytest.raises(CorrectionRefused, match="legal hold"):
        correct_study(study, RIGHT, "fix", user=owner)
    assert correct_study(study, {"StudyDescription": "X"}, "fix", user=owner).instances == 3


def test_sweep_leaves_earlier_versions_alone(study: Study, owner: User) -> None:
    correct_study(study, {"StudyDescription": "X"}, "fix", user=owner)
    report = sweep_orphans(min_age=timedelta(seconds=-1))
    assert (report.recovered, report.removed, report.kept) == (0, 0, [])
    assert InstanceVersion.objects.count() == 3


def test_the_priors_of_both_patients_are_counted_again(study: Study, owner: User, upload_client: Client) -> None:
    later = StudySpec(patient_name="WRONG^PATIENT", patient_id="PAT-WRONG", study_date="20300101")
    assert stow(upload_client, make_series(later, "CT", count=1, size=16)).status_code == 200
    later_row = WorklistItem.objects.get(study_instance_uid=later.study_uid)
    assert later_row.priors_count == 1  # the wrongly attributed study counted as a prior
    correct_study(study, RIGHT, "wrong patient", user=owner)
    later_row.refresh_from_db()
    assert later_row.priors_count == 0
    assert WorklistItem.objects.get(study=study).priors_count == 0


def test_a_replacement_naming_another_object_is_refused_whole(study: Study) -> None:
    """The store path lets a correction replace only the objects it names, all of them or none."""
    first, second = Instance.objects.order_by("pk")[:2]
    keys_before = set(get_storage("hot").keys())
    copies = []
    for instance in (first, second):
        writer = StagingWriter(get_storage("hot"), max_bytes=1 << 30)
        writer.write(stored_bytes(instance).replace(b"PAT-WRONG", b"PAT-RIGHT"))
        copies.append(writer.finish())
    applied: list[object] = []

    def apply(placed: list[Placed]) -> set[int]:
        applied.append(placed)
        return set()

    current = {first.sop_instance_uid: first.sha256, second.sop_instance_uid: "0" * 64}  # the second is stale
    results = store_instances(copies, replacing=Replacement(current, apply))
    assert [r.outcome for r in results] == [Outcome.INVALID, Outcome.CONFLICT]
    assert applied == [] and not InstanceVersion.objects.exists()
    assert set(get_storage("hot").keys()) == keys_before
    assert list(Instance.objects.order_by("pk").values_list("sha256", flat=True)[:2]) == [first.sha256, second.sha256]


def test_a_study_moved_to_an_existing_patient_leaves_that_patients_demographics_alone(
    study: Study, owner: User, upload_client: Client
) -> None:
    other = StudySpec(patient_name="RIGHT^ROSE", patient_id="PAT-RIGHT", accession="ACC-R")
    assert stow(upload_client, make_series(other, "CT", count=1, size=16)).status_code == 200
    correct_study(study, {"PatientID": "PAT-RIGHT"}, "filed under a temporary ID", user=owner)
    rose = Patient.objects.get(patient_id="PAT-RIGHT")
    assert rose.patient_name == "RIGHT^ROSE"
    assert set(PersonNameWord.objects.filter(patient=rose).values_list("word", flat=True)) == {"RIGHT", "ROSE"}
    assert WorklistItem.objects.get(study_instance_uid=other.study_uid).patient_name == "RIGHT^ROSE"


def test_a_study_with_a_series_in_the_trash_is_not_corrected_split_or_merged(
    owner: User, upload_client: Client
) -> None:
    two = StudySpec(patient_name="WRONG^PATIENT", patient_id="PAT-WRONG", accession="ACC-2")
    parts = make_series(two, "CT", count=1, size=16) + make_series(two, "MR", count=1, size=16, series_number=2)
    parts += make_series(two, "CT", count=1, size=16, series_number=3)
    assert stow(upload_client, parts).status_code == 200
    study = Study.objects.get(study_instance_uid=two.study_uid)
    entry = trash_series(Series.objects.get(study=study, modality="MR"), actor="test")
    ct = Series.objects.filter(study=study, modality="CT").first()
    assert ct is not None
    other = StudySpec(patient_name="OTHER^OTTO", patient_id="PAT-O")
    assert stow(upload_client, make_series(other, "CT", count=1, size=16)).status_code == 200
    target = Study.objects.get(study_instance_uid=other.study_uid)
    attempts = [
        lambda: correct_study(study, RIGHT, "wrong patient", user=owner),
        lambda: split_study(study, [ct.series_instance_uid], "two exams", user=owner),
        lambda: merge_study(study, target, "sent twice", user=owner),
        lambda: merge_study(target, study, "sent twice", user=owner),
    ]
    for attempt in attempts:
        with pytest.raises(CorrectionRefused, match="series of the study is in the trash") as refused:
            attempt()
        assert refused.value.status == 409
    assert not InstanceVersion.objects.exists()
    restore_study(entry.study_instance_uid)
    rows = Instance.objects.filter(series__study=study)
    patients = {json.loads(i.metadata)["00100020"]["Value"][0] for i in rows}
    assert patients == {"PAT-WRONG"}
