"""A study in the trash is gone for DICOM devices too: C-FIND and C-GET see none of it; restored, both do.

Real peers: pynetdicom SCUs against the node's listener, with the fixtures of tests/archive/dimse.
"""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest

from archive.dimse.listener import DicomListener
from archive.ingest.trash import restore_study, trash_study
from archive.models import Study
from tests.archive.dimse.conftest import JANE, devices, listener, qr_archive, sites, wait_idle  # noqa: F401 (fixtures)
from tests.archive.dimse.test_find import c_find
from tests.archive.dimse.test_get import c_get

pytestmark = pytest.mark.django_db(transaction=True)


def found_studies(port: int) -> set[str]:
    responses = c_find(port, "WS1", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientID": ""})
    return {str(ds.StudyInstanceUID) for status, ds in responses if status in (0xFF00, 0xFF01) and ds is not None}


def test_c_find_and_c_get_do_not_see_a_study_in_the_trash_and_see_it_again_once_restored(
    listener: DicomListener,  # noqa: F811 (the fixture imported above)
    qr_archive: dict[str, Any],  # noqa: F811
) -> None:
    assert JANE.study_uid in found_studies(listener.port)
    trash_study(Study.objects.get(study_instance_uid=JANE.study_uid), actor="test")
    assert JANE.study_uid not in found_studies(listener.port)
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}
    received, responses = c_get(listener.port, "WS1", keys)
    assert received == [] and int(responses[-1][0].Status) == 0x0000
    restore_study(JANE.study_uid, actor="test")
    assert JANE.study_uid in found_studies(listener.port)
    received, _ = c_get(listener.port, "WS1", keys)
    assert {str(ds.SOPInstanceUID) for ds in received} == set(qr_archive["jane"])
    wait_idle(listener)


def test_a_c_store_into_a_study_in_the_trash_is_refused(
    listener: DicomListener,  # noqa: F811
    qr_archive: dict[str, Any],  # noqa: F811
) -> None:
    from pynetdicom import AE

    from archive.dicom.synthetic import make_instance
    from archive.models import Instance

    trash_study(Study.objects.get(study_instance_uid=JANE.study_uid), actor="test")
    data = make_instance(JANE, "CT", series_uid="1.2.3.100.9", instance_number=9, size=16)
    ds = pydicom.dcmread(io.BytesIO(data))
    ae = AE(ae_title="MR2")
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0124
    finally:
        assoc.release()
    wait_idle(listener)
    assert Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).count() == 0
