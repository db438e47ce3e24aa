"""The C-FIND SCP answers DCMTK's findscu and a pynetdicom SCU as QIDO-RS would, within the device's site.

Studies arrive through the node's own C-STORE from a device of each site;
workstations of each site then query them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContextTuple
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from archive.dicom.synthetic import make_instance, new_uid
from archive.dimse.find import FindSCP
from archive.dimse.listener import DicomListener
from archive.dimse.store import Session
from archive.ingest.store import Sender
from archive.models import Availability, DicomDevice, Instance, Site
from audit.models import AuditEvent
from tests.archive.dimse.conftest import JANE, JOHN, OTHER, dcmtk, identifier, send, store_slices, wait_idle

pytestmark = pytest.mark.django_db(transaction=True)
MANY = 1000  # instances in the series a C-CANCEL interrupts: far more than are sent before it arrives


@pytest.fixture
def archive(listener: DicomListener, sites: dict[str, Site], tmp_path: Path) -> dict[str, Any]:
    """Jane (CT 2 + MR 1) and John (CT 1) at "general", another Doe at "elsewhere"; WS1 and WS2 query each site."""
    ct, mr = new_uid(), new_uid()
    jane = [
        make_instance(JANE, "CT", series_uid=ct, series_number=1, instance_number=1, size=16),
        make_instance(JANE, "CT", series_uid=ct, series_number=1, instance_number=2, size=16),
        make_instance(JANE, "MR", series_uid=mr, series_number=2, instance_number=1, size=16),
    ]
    send(listener.port, "MR2", [*jane, make_instance(JOHN, "CT", size=16)], tmp_path)
    send(listener.port, "OTHER", [make_instance(OTHER, "CT", size=16)], tmp_path)
    DicomDevice.objects.create(ae_title="WS1", site=sites["general"], may_query=True)
    DicomDevice.objects.create(ae_title="WS2", site=sites["elsewhere"], may_query=True)
    wait_idle(listener)
    return {"jane_ct": ct, "jane_mr": mr, "jane_sops": [pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID for b in jane]}


def c_find(
    port: int, title: str, keys: dict[str, Any], model: str = StudyRootQueryRetrieveInformationModelFind
) -> list[tuple[int, Dataset | None]]:
    """The (status, identifier) pairs of one C-FIND from a pynetdicom SCU calling as ``title``."""
    ae = AE(ae_title=title)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        return [(int(status.Status), found) for status, found in assoc.send_c_find(identifier(keys), model)]
    finally:
        assoc.release()


def statuses(responses: list[tuple[int, Dataset | None]]) -> list[int]:
    return [status for status, _ in responses]


def test_findscu_study_root_finds_the_sites_study_with_the_keys_a_workstation_expects(
    listener: DicomListener, archive: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "rsp"
    out.mkdir()
    keys = ["QueryRetrieveLevel=STUDY", "PatientName=DOE*", "StudyInstanceUID", "StudyDate", "PatientID"]
    keys += ["NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries", "ModalitiesInStudy", "StudyDescription"]
    args = [a for k in keys for a in ("-k", k)]
    done = dcmtk(
        "findscu", "-S", "-X", "-od", str(out), "-aet", "WS1", "-aec", "PACS", *args, "127.0.0.1", str(listener.port)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert found.PatientName == "DOE^JANE"
    assert found.PatientID == "PAT-A1"
    assert found.StudyInstanceUID == JANE.study_uid
    assert found.StudyDate == "20240115"
    assert found.QueryRetrieveLevel == "STUDY"
    assert found.SpecificCharacterSet == "ISO_IR 192"
    assert (found.NumberOfStudyRelatedInstances, found.NumberOfStudyRelatedSeries) == (3, 2)
    assert sorted(found.ModalitiesInStudy) == ["CT", "MR"]
    assert found.StudyDescription == "CT CHEST"
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="search")
    assert (event.actor, event.outcome, event.source_ip) == ("AE:WS1", "success", "127.0.0.1")
    assert event.detail["via"] == "DIMSE"
    assert (event.detail["level"], event.detail["model"], event.detail["results"]) == ("STUDY", "study", 1)


def test_findscu_patient_root_lists_the_sites_patients_with_their_study_counts(
    listener: DicomListener, archive: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "rsp"
    out.mkdir()
    keys = ["QueryRetrieveLevel=PATIENT", "PatientName", "PatientID", "NumberOfPatientRelatedStudies"]
    args = [a for k in keys for a in ("-k", k)]
    done = dcmtk(
        "findscu", "-P", "-X", "-od", str(out), "-aet", "WS1", "-aec", "PACS", *args, "127.0.0.1", str(listener.port)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = sorted(
        (str(ds.PatientID), str(ds.PatientName), ds.NumberOfPatientRelatedStudies)
        for ds in map(pydicom.dcmread, out.iterdir())
    )
    assert found == [("PAT-A1", "DOE^JANE", 1), ("PAT-A2", "SMITH^JOHN", 1)]


def test_a_device_of_one_site_never_gets_another_sites_studies(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "PatientName": "*DOE*", "StudyInstanceUID": ""}
    general = c_find(listener.port, "WS1", keys)
    elsewhere = c_find(listener.port, "WS2", keys)
    assert statuses(general) == [0xFF00, 0x0000]
    assert general[0][1].StudyInstanceUID == JANE.study_uid  # type: ignore[union-attr]
    assert statuses(elsewhere) == [0xFF00, 0x0000]
    assert elsewhere[0][1].StudyInstanceUID == OTHER.study_uid  # type: ignore[union-attr]


def test_a_device_without_may_query_is_refused_not_authorized_and_audited(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    responses = c_find(listener.port, "MR2", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""})
    assert statuses(responses) == [0x0124]
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="search")
    assert (event.actor, event.outcome, event.source_ip) == ("AE:MR2", "denied", "127.0.0.1")
    assert event.detail["reason"] == "this device may not query (C-FIND)"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"StudyDate": "20240101-"}, [JANE.study_uid]),
        ({"StudyDate": "-20231231"}, [JOHN.study_uid]),
        ({"StudyDate": "20230101-20241231"}, [JANE.study_uid, JOHN.study_uid]),
        ({"PatientName": "SM?TH*"}, [JOHN.study_uid]),
        ({"AccessionNumber": "ACC-A*"}, [JANE.study_uid, JOHN.study_uid]),
        ({"ModalitiesInStudy": "MR"}, [JANE.study_uid]),
    ],
)
def test_wildcards_and_date_ranges_match_as_in_qido(
    listener: DicomListener, archive: dict[str, Any], keys: dict[str, str], expected: list[str]
) -> None:
    responses = c_find(listener.port, "WS1", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", **keys})
    assert statuses(responses) == [0xFF00] * len(expected) + [0x0000]
    assert sorted(str(ds.StudyInstanceUID) for _, ds in responses[:-1]) == sorted(expected)  # type: ignore[union-attr]


def test_series_level_lists_the_series_of_one_study(listener: DicomListener, archive: dict[str, Any]) -> None:
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": JANE.study_uid, "SeriesInstanceUID": "", "Modality": ""}
    responses = c_find(listener.port, "WS1", {**keys, "NumberOfSeriesRelatedInstances": ""})
    assert statuses(responses) == [0xFF00, 0xFF00, 0x0000]
    found = sorted(
        (str(ds.Modality), str(ds.SeriesInstanceUID), ds.NumberOfSeriesRelatedInstances) for _, ds in responses[:-1]
    )  # type: ignore[union-attr]
    assert found == sorted([("CT", archive["jane_ct"], 2), ("MR", archive["jane_mr"], 1)])


def test_series_level_without_the_study_uid_does_not_match_the_sop_class(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    responses = c_find(listener.port, "WS1", {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""})
    assert statuses(responses) == [0xA900]


def test_patient_level_is_not_part_of_the_study_root_model(listener: DicomListener, archive: dict[str, Any]) -> None:
    assert statuses(c_find(listener.port, "WS1", {"QueryRetrieveLevel": "PATIENT", "PatientID": ""})) == [0xA900]


def test_a_malformed_date_is_unable_to_process(listener: DicomListener, archive: dict[str, Any]) -> None:
    responses = c_find(listener.port, "WS1", {"QueryRetrieveLevel": "STUDY", "StudyDate": "2024-01-01-"})
    assert statuses(responses) == [0xC000]


def test_image_level_lists_the_instances_of_one_series_in_the_patient_root(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    keys = {
        "QueryRetrieveLevel": "IMAGE",
        "PatientID": "PAT-A1",
        "StudyInstanceUID": JANE.study_uid,
        "SeriesInstanceUID": archive["jane_ct"],
        "SOPInstanceUID": "",
        "InstanceNumber": "",
    }
    responses = c_find(listener.port, "WS1", keys, PatientRootQueryRetrieveInformationModelFind)
    assert statuses(responses) == [0xFF00, 0xFF00, 0x0000]
    found = [(str(ds.SOPInstanceUID), ds.InstanceNumber, ds.QueryRetrieveLevel) for _, ds in responses[:-1]]  # type: ignore[union-attr]
    assert found == [(archive["jane_sops"][0], 1, "IMAGE"), (archive["jane_sops"][1], 2, "IMAGE")]


def test_a_c_cancel_after_the_first_match_ends_the_search_with_cancel_status_and_is_audited(
    archive: dict[str, Any], sites: dict[str, Site]
) -> None:
    # With a few matches the SCP answers before any C-CANCEL can arrive (and pynetdicom drops one sent ahead of
    # its request), so the handler gets pynetdicom's own C-FIND event, with a C-CANCEL arriving after one match;
    # the real-peer test below cancels a search of many matches.
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    request = C_FIND()
    request.MessageID = 7
    request.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    request.Identifier = io.BytesIO(encode(identifier, True, True))
    context = PresentationContextTuple(1, StudyRootQueryRetrieveInformationModelFind, ImplicitVRLittleEndian)
    arrived = iter([False, True])
    event = Event(
        cast(Any, None),
        evt.EVT_C_FIND,
        {"request": request, "context": context, "_is_cancelled": lambda msg_id: msg_id == 7 and next(arrived)},
    )
    device = DicomDevice.objects.get(ae_title="WS1")
    session = Session("WS1", "PACS", "127.0.0.1", Sender(site=sites["general"]), device=device)
    responses = list(FindSCP("PACS").on_c_find(session, event))
    assert [status for status, _ in responses] == [0xFF00, 0xFE00]
    cancelled = AuditEvent.objects.get(action="search", outcome="cancelled")
    assert (cancelled.detail["results"], cancelled.detail["sent"]) == (2, 1)


@pytest.mark.parametrize(
    ("level", "keys"),
    [
        ("STUDY", {"StudyInstanceUID": JANE.study_uid}),
        ("SERIES", {"StudyInstanceUID": JANE.study_uid, "SeriesInstanceUID": ""}),
        ("IMAGE", {"StudyInstanceUID": JANE.study_uid, "SeriesInstanceUID": "", "SOPInstanceUID": ""}),
    ],
)
def test_every_match_carries_the_nodes_retrieve_ae_title_and_the_indexs_availability(
    listener: DicomListener, archive: dict[str, Any], level: str, keys: dict[str, str]
) -> None:
    if level == "IMAGE":
        keys = {**keys, "SeriesInstanceUID": archive["jane_mr"]}
    asked = {"QueryRetrieveLevel": level, **keys, "RetrieveAETitle": "", "InstanceAvailability": ""}
    responses = c_find(listener.port, "WS1", asked)
    expected = {"STUDY": 1, "SERIES": 2, "IMAGE": 1}[level]
    assert statuses(responses) == [0xFF00] * expected + [0x0000]
    found = [(ds.RetrieveAETitle, ds.InstanceAvailability) for _, ds in responses[:-1]]  # type: ignore[union-attr]
    assert found == [("PACS", "ONLINE")] * expected


def test_instance_availability_is_the_least_available_instance_of_the_study_and_series(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    Instance.objects.filter(sop_instance_uid=archive["jane_sops"][0]).update(availability=Availability.NEARLINE)
    asked = {"StudyInstanceUID": JANE.study_uid, "InstanceAvailability": ""}
    (study, done) = c_find(listener.port, "WS1", {"QueryRetrieveLevel": "STUDY", **asked})
    assert (study[0], study[1].InstanceAvailability, done[0]) == (0xFF00, "NEARLINE", 0x0000)  # type: ignore[union-attr]
    series = c_find(listener.port, "WS1", {"QueryRetrieveLevel": "SERIES", **asked, "SeriesInstanceUID": ""})
    found = sorted((str(ds.SeriesInstanceUID), ds.InstanceAvailability) for _, ds in series[:-1])  # type: ignore[union-attr]
    assert found == sorted([(archive["jane_ct"], "NEARLINE"), (archive["jane_mr"], "ONLINE")])


@pytest.mark.parametrize(
    ("level", "extra", "expected"),
    [
        ("STUDY", {"OperatorsName": ""}, ["00081070"]),  # kept by the index at no level but IMAGE
        ("STUDY", {"SOPInstanceUID": "", "PatientWeight": ""}, ["00080018"]),  # a matching key below the level
        ("SERIES", {"SeriesInstanceUID": "", "NumberOfPatientRelatedStudies": ""}, ["00201200"]),
    ],
)
def test_a_key_the_scp_can_neither_match_nor_return_makes_each_match_pending_ff01(
    listener: DicomListener, archive: dict[str, Any], level: str, extra: dict[str, str], expected: list[str]
) -> None:
    keys = {"QueryRetrieveLevel": level, "StudyInstanceUID": JANE.study_uid, **extra}
    responses = c_find(listener.port, "WS1", keys)
    assert statuses(responses) == [0xFF01] * (1 if level == "STUDY" else 2) + [0x0000]
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="search")
    assert event.detail["unsupported"] == expected


def test_at_image_level_every_key_is_returnable_so_matches_stay_pending_ff00(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    keys = {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": JANE.study_uid,
        "SeriesInstanceUID": archive["jane_mr"],
        "SOPInstanceUID": "",
        "Manufacturer": "",
        "RetrieveAETitle": "",
    }
    responses = c_find(listener.port, "WS1", keys)
    assert statuses(responses) == [0xFF00, 0x0000]
    assert (responses[0][1].Manufacturer, responses[0][1].RetrieveAETitle) == ("SYNTHETIC", "PACS")  # type: ignore[union-attr]


def test_a_real_c_cancel_after_the_first_pending_ends_the_search_with_cancel_status_and_is_audited(
    listener: DicomListener, sites: dict[str, Site], tmp_path: Path
) -> None:
    spec, series = store_slices(sites["general"], MANY, tmp_path)
    DicomDevice.objects.create(ae_title="WS1", site=sites["general"], may_query=True)
    ae = AE(ae_title="WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = spec.study_uid
    identifier.SeriesInstanceUID = series
    identifier.SOPInstanceUID = ""
    found: list[int] = []
    try:
        context_id = assoc.accepted_contexts[0].context_id
        for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind, msg_id=9):
            found.append(int(status.Status))
            if len(found) == 1:
                assoc.send_c_cancel(9, context_id)
    finally:
        assoc.release()
    assert found[-1] == 0xFE00
    pending = found[:-1]
    assert set(pending) == {0xFF00}
    assert 1 <= len(pending) < MANY
    wait_idle(listener)
    cancelled = AuditEvent.objects.get(action="search", outcome="cancelled")
    assert (cancelled.actor, cancelled.detail["results"], cancelled.detail["sent"]) == ("AE:WS1", MANY, len(pending))
