"""C-FIND after a correction: a pynetdicom workstation finds the study under the corrected Patient ID only."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User

from archive.dicom.synthetic import StudySpec, make_instance
from archive.dimse.listener import DicomListener
from archive.ingest.correct import correct_study
from archive.models import DicomDevice, Site, Study
from tests.archive.dimse.conftest import wait_idle
from tests.archive.dimse.test_find import c_find, send

pytestmark = pytest.mark.django_db(transaction=True)


def test_c_find_answers_with_the_corrected_patient(
    listener: DicomListener, sites: dict[str, Site], tmp_path: Path, admin_user: User
) -> None:
    spec = StudySpec(patient_name="WRONG^WANDA", patient_id="PAT-OLD", accession="ACC-OLD")
    send(listener.port, "MR2", [make_instance(spec, "CT", size=16), make_instance(spec, "CT", size=16)], tmp_path)
    wait_idle(listener)
    DicomDevice.objects.create(ae_title="WS1", site=sites["general"], may_query=True)
    study = Study.objects.get(study_instance_uid=spec.study_uid)
    correct_study(study, {"PatientID": "PAT-NEW", "PatientName": "RIGHT^RITA"}, "wrong patient", user=admin_user)

    keys = {"QueryRetrieveLevel": "STUDY", "PatientID": "PAT-OLD", "PatientName": "", "StudyInstanceUID": ""}
    assert [s for s, _ in c_find(listener.port, "WS1", keys)] == [0x0000]  # no match, only the final status
    found = c_find(listener.port, "WS1", {**keys, "PatientID": "PAT-NEW"})
    assert [s for s, _ in found] == [0xFF00, 0x0000]
    identifier = found[0][1]
    assert identifier is not None
    assert (identifier.PatientID, str(identifier.PatientName)) == ("PAT-NEW", "RIGHT^RITA")
    assert identifier.StudyInstanceUID == spec.study_uid
