"""Merging a study into another through the same correction mechanism."""

from __future__ import annotations

import json
from datetime import timedelta

import pydicom
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.correct import CorrectionRefused
from archive.ingest.merge import merge_study
from archive.models import Instance, InstanceVersion, LegalHold, Patient, Study
from audit.models import AuditEvent
from portal.models import AccessGrant
from portal.worklist.models import WorklistItem
from tests.conftest import stow

pytestmark = pytest.mark.django_db(transaction=True)

TARGET = StudySpec(patient_name="RIGHT^RUTH", patient_id="PAT-T", accession="ACC-T", description="CT CHEST")
SOURCE = StudySpec(patient_name="WRONG^WILL", patient_id="PAT-S", accession="ACC-S", description="CT CHEST 2")


@pytest.fixture
def studies(upload_client: Client) -> tuple[Study, Study]:
    assert stow(upload_client, make_series(TARGET, "CT", count=2, size=16)).status_code == 200
    assert stow(upload_client, make_series(SOURCE, "MR", count=1, size=16)).status_code == 200
    return Study.objects.get(study_instance_uid=SOURCE.study_uid), Study.objects.get(
        study_instance_uid=TARGET.study_uid
    )


def test_a_study_merged_into_another_is_one_study_everywhere(
    studies: tuple[Study, Study], owner: User, owner_client: Client
) -> None:
    source, target = studies
    assert merge_study(source, target, "one examination sent twice", user=owner).instances == 1
    assert not Study.objects.filter(study_instance_uid=SOURCE.study_uid).exists()
    assert not Patient.objects.filter(patient_id="PAT-S").exists()
    assert not WorklistItem.objects.filter(study_instance_uid=SOURCE.study_uid).exists()
    target.refresh_from_db()
    assert (target.number_of_series, target.number_of_instances, target.modalities_in_study) == (2, 3, "CT\\MR")
    moved = Instance.objects.get(series__modality="MR")
    with moved.open_stored() as fh:
        ds = pydicom.dcmread(fh)
    assert (ds.StudyInstanceUID, ds.PatientID, str(ds.PatientName)) == (TARGET.study_uid, "PAT-T", "RIGHT^RUTH")
    assert ds.AccessionNumber == "ACC-T"
    assert InstanceVersion.objects.get().sop_instance_uid == moved.sop_instance_uid

    dicom_json = "application/dicom+json"
    found = json.loads(owner_client.get("/dicom-web/studies?PatientID=PAT-S", HTTP_ACCEPT=dicom_json).content)
    assert found == []
    meta = json.loads(
        owner_client.get(f"/dicom-web/studies/{TARGET.study_uid}/metadata", HTTP_ACCEPT=dicom_json).content
    )
    assert len(meta) == 3 and {m["00100020"]["Value"][0] for m in meta} == {"PAT-T"}
    row = WorklistItem.objects.get(study=target)
    assert (row.modality, row.image_count) == ("CT\\MR", 3)
    events = AuditEvent.objects.filter(action="correct", outcome="success")
    assert sorted(e.detail["as"] for e in events) == ["source", "target"]


def test_a_source_with_a_grant_or_a_hold_is_not_merged(studies: tuple[Study, Study], owner: User) -> None:
    source, target = studies
    grant = AccessGrant.objects.create(
        user=owner, study=source, reason="second opinion", expires_at=timezone.now() + timedelta(days=1)
    )
    with pytest.raises(CorrectionRefused, match="records hang on the source study") as refused:
        merge_study(source, target, "why", user=owner)
    assert refused.value.status == 409
    grant.delete()
    LegalHold.objects.create(study_instance_uid=source.study_instance_uid, reason="litigation")
    with pytest.raises(CorrectionRefused, match="legal hold"):
        merge_study(source, target, "why", user=owner)
    assert Study.objects.count() == 2 and not InstanceVersion.objects.exists()


def test_a_merge_into_itself_or_without_a_reason_is_refused(studies: tuple[Study, Study], owner: User) -> None:
    source, target = studies
    with pytest.raises(CorrectionRefused) as refused:
        merge_study(source, source, "why", user=owner)
    assert refused.value.status == 400 and "target" in refused.value.errors
    with pytest.raises(CorrectionRefused) as refused:
        merge_study(source, target, " ", user=owner)
    assert "reason" in refused.value.errors


def test_the_priors_of_the_patient_the_source_leaves_are_counted_again(
    studies: tuple[Study, Study], owner: User, upload_client: Client
) -> None:
    later = StudySpec(patient_name="WRONG^WILL", patient_id="PAT-S", study_date="20300101")
    assert stow(upload_client, make_series(later, "CT", count=1, size=16)).status_code == 200
    later_row = WorklistItem.objects.get(study_instance_uid=later.study_uid)
    assert later_row.priors_count == 1  # the study about to be merged away counts as its prior
    source, target = studies
    merge_study(source, target, "one examination sent twice", user=owner)
    later_row.refresh_from_db()
    assert later_row.priors_count == 0
