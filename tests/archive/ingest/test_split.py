"""Splitting a study: chosen series move to a new study through the same correction mechanism."""

from __future__ import annotations

import json

import pydicom
import pytest
from django.contrib.auth.models import User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.correct import CorrectionRefused
from archive.ingest.split import split_study
from archive.ingest.trash import trash_study
from archive.models import Instance, InstanceVersion, LegalHold, Series, Study
from audit.models import AuditEvent
from portal.worklist.models import WorklistItem
from tests.conftest import stow

pytestmark = pytest.mark.django_db(transaction=True)

SPEC = StudySpec(patient_name="TWO^EXAMS", patient_id="PAT-2X", accession="ACC-2X")


@pytest.fixture
def study(upload_client: Client) -> Study:
    parts = make_series(SPEC, "CT", count=2, size=16) + make_series(SPEC, "MR", count=1, size=16, series_number=2)
    assert stow(upload_client, parts).status_code == 200
    return Study.objects.get(study_instance_uid=SPEC.study_uid)


def test_a_series_moves_to_a_new_study_everywhere(study: Study, owner: User, owner_client: Client) -> None:
    mr = Series.objects.get(study=study, modality="MR")
    done, new_uid_ = split_study(study, [mr.series_instance_uid], "two examinations under one UID", user=owner)
    assert done.instances == 1
    new = Study.objects.get(study_instance_uid=new_uid_)
    study.refresh_from_db()
    assert (study.number_of_series, study.number_of_instances, study.modalities_in_study) == (1, 2, "CT")
    assert (new.number_of_series, new.number_of_instances, new.modalities_in_study) == (1, 1, "MR")
    assert new.patient_id == study.patient_id and new.accession_number == "ACC-2X"
    (moved,) = Instance.objects.filter(series__study=new)
    with moved.open_stored() as fh:
        ds = pydicom.dcmread(fh)
    assert ds.StudyInstanceUID == new_uid_
    assert ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].StudyInstanceUID == SPEC.study_uid
    assert InstanceVersion.objects.get().sop_instance_uid == moved.sop_instance_uid

    dicom_json = "application/dicom+json"
    found = json.loads(owner_client.get("/dicom-web/studies?PatientID=PAT-2X", HTTP_ACCEPT=dicom_json).content)
    assert sorted(s["0020000D"]["Value"][0] for s in found) == sorted([SPEC.study_uid, new_uid_])
    meta = json.loads(owner_client.get(f"/dicom-web/studies/{new_uid_}/metadata", HTTP_ACCEPT=dicom_json).content)
    assert [m["0020000D"]["Value"][0] for m in meta] == [new_uid_]
    old_meta = owner_client.get(f"/dicom-web/studies/{SPEC.study_uid}/metadata", HTTP_ACCEPT=dicom_json)
    assert len(json.loads(old_meta.content)) == 2

    old_row, new_row = (WorklistItem.objects.get(study=s) for s in (study, new))
    assert (old_row.modality, old_row.image_count) == ("CT", 2)
    assert (new_row.modality, new_row.patient_id) == ("MR", "PAT-2X")
    event = AuditEvent.objects.get(action="correct", outcome="success")
    assert event.detail["operation"] == "split" and event.detail["new_study_instance_uid"] == new_uid_


@pytest.mark.parametrize("choice", ["none", "foreign", "all"])
def test_a_split_without_a_proper_choice_is_refused_and_nothing_is_written(
    study: Study, owner: User, choice: str
) -> None:
    every = list(Series.objects.filter(study=study).values_list("series_instance_uid", flat=True))
    chosen = {"none": [], "foreign": ["1.2.3.4"], "all": every}[choice]
    with pytest.raises(CorrectionRefused) as refused:
        split_study(study, chosen, "why", user=owner)
    assert refused.value.status == 400 and "series" in refused.value.errors
    assert Study.objects.count() == 1 and not InstanceVersion.objects.exists()


def test_a_study_in_the_trash_is_not_split(study: Study, owner: User) -> None:
    mr = Series.objects.get(study=study, modality="MR")
    trash_study(study, actor="admin")
    with pytest.raises(CorrectionRefused, match="trash"):
        split_study(study, [mr.series_instance_uid], "why", user=owner)
    assert Study.objects.count() == 1


def test_a_study_under_a_legal_hold_is_not_split_so_no_series_escapes_the_hold(study: Study, owner: User) -> None:
    LegalHold.objects.create(study_instance_uid=SPEC.study_uid, reason="litigation")
    mr = Series.objects.get(study=study, modality="MR")
    with pytest.raises(CorrectionRefused, match="legal hold") as refused:
        split_study(study, [mr.series_instance_uid], "two examinations under one UID", user=owner)
    assert refused.value.status == 409
    assert Study.objects.count() == 1 and not InstanceVersion.objects.exists()
    assert AuditEvent.objects.get(action="correct").outcome == "denied"
