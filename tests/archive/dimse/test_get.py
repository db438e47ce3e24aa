"""The C-GET SCP sends a device's site's instances back on the same association, as stored.

Studies arrive through the node's own C-STORE from a device of each site;
workstations of each site then retrieve them with DCMTK's getscu or a
pynetdicom SCU.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from archive.dicom.synthetic import StudySpec, make_instance, new_uid
from archive.dimse.listener import DicomListener
from archive.ingest.store import Sender, store_instances
from archive.models import DicomDevice, Instance, Site
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file
from audit.models import AuditEvent
from tests.archive.dimse.conftest import dcmtk, wait_idle
from tests.archive.dimse.test_find import JANE, JOHN, OTHER, send

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def archive(listener: DicomListener, sites: dict[str, Site], tmp_path: Path) -> dict[str, Any]:
    """Jane (CT 2 + MR 1) and John (CT 1) at "general", another Doe at "elsewhere".

    WS1 and WS2 retrieve from each site; WSQ of "general" may only query.
    """
    jane = [
        make_instance(JANE, "CT", series_uid="1.2.3.100.1", series_number=1, instance_number=1, size=16),
        make_instance(JANE, "CT", series_uid="1.2.3.100.1", series_number=1, instance_number=2, size=16),
        make_instance(JANE, "MR", series_uid="1.2.3.100.2", series_number=2, instance_number=1, size=16),
    ]
    send(listener.port, "MR2", [*jane, make_instance(JOHN, "CT", size=16)], tmp_path)
    send(listener.port, "OTHER", [make_instance(OTHER, "CT", size=16)], tmp_path)
    DicomDevice.objects.create(ae_title="WS1", site=sites["general"], may_query=True, may_retrieve=True)
    DicomDevice.objects.create(ae_title="WS2", site=sites["elsewhere"], may_query=True, may_retrieve=True)
    DicomDevice.objects.create(ae_title="WSQ", site=sites["general"], may_query=True)
    wait_idle(listener)
    return {"jane": {pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID: b for b in jane}}


def data_set_bytes(part10: bytes) -> bytes:
    """The data set of a Part 10 object: what follows its File Meta Information."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    # Preamble and "DICM" (132 bytes), the group length element (12 bytes), then the group it counts.
    return part10[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


def c_get(
    port: int, title: str, keys: dict[str, Any], syntaxes: list[str] | None = None
) -> tuple[list[Dataset], list[Any]]:
    """The data sets received and the (status, identifier) responses of one Study Root C-GET from a pynetdicom SCU."""
    received: list[Dataset] = []

    def on_store(event: Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta  # the transfer syntax it came in
        received.append(ds)
        return 0x0000

    ae = AE(ae_title=title)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, syntaxes or DEFAULT_TRANSFER_SYNTAXES)
    roles: list[Any] = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    try:
        responses = list(assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    return received, responses


def test_getscu_retrieves_a_study_whose_files_hold_the_stored_data_sets_byte_for_byte(
    listener: DicomListener, archive: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "got"
    out.mkdir()
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={JANE.study_uid}"]
    args = [a for k in keys for a in ("-k", k)]
    done = dcmtk("getscu", "-S", "-od", str(out), "-aet", "WS1", "-aec", "PACS", *args, "127.0.0.1", str(listener.port))
    assert done.returncode == 0, done.stdout + done.stderr
    got = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in out.iterdir()}
    assert set(got) == set(archive["jane"])
    for sop, part10 in got.items():
        assert data_set_bytes(part10) == data_set_bytes(archive["jane"][sop])
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="retrieve")
    assert (event.actor, event.outcome, event.source_ip) == ("AE:WS1", "success", "127.0.0.1")
    assert (event.detail["via"], event.detail["level"], event.detail["instances"]) == ("DIMSE", "STUDY", 3)
    assert event.study_instance_uid == JANE.study_uid
    (result,) = AuditEvent.objects.filter(action="retrieve_result")
    assert (result.actor, result.outcome, result.detail["status"]) == ("AE:WS1", "success", "0x0000")
    assert (result.detail["completed"], result.detail["failed"], result.detail["warning"]) == (3, 0, 0)


def test_a_series_level_c_get_sends_the_series_instances_and_ends_with_success(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": JANE.study_uid, "SeriesInstanceUID": "1.2.3.100.1"}
    received, responses = c_get(listener.port, "WS1", keys)
    assert len(received) == 2
    assert {ds.SeriesInstanceUID for ds in received} == {"1.2.3.100.1"}
    assert [int(r.Status) for r, _ in responses] == [0xFF00, 0x0000]  # no Pending with nothing remaining
    final, _ = responses[-1]
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 0)
    assert responses[0][0].NumberOfRemainingSuboperations == 1


def test_a_device_without_may_retrieve_is_refused_not_authorized_and_audited(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    received, responses = c_get(
        listener.port, "WSQ", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}
    )
    assert received == []
    assert [int(r.Status) for r, _ in responses] == [0x0124]
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="retrieve")
    assert (event.actor, event.outcome, event.detail["status"]) == ("AE:WSQ", "denied", "0x0124")


def test_a_device_of_another_site_retrieves_nothing_of_this_sites_study(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    received, responses = c_get(
        listener.port, "WS2", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}
    )
    assert received == []
    assert [int(r.Status) for r, _ in responses] == [0x0000]
    assert responses[0][0].NumberOfCompletedSuboperations == 0
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="retrieve")
    assert (event.actor, event.detail["instances"]) == ("AE:WS2", 0)


def test_an_instance_whose_stored_object_is_gone_fails_with_warning_b000_and_its_uid_listed(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    lost = Instance.objects.get(series__series_instance_uid="1.2.3.100.2")
    Instance.objects.filter(pk=lost.pk).update(storage_key="missing/object.dcm")
    received, responses = c_get(
        listener.port, "WS1", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}
    )
    assert len(received) == 2
    final, failed = responses[-1]
    assert int(final.Status) == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert failed.FailedSOPInstanceUIDList == lost.sop_instance_uid


def test_a_series_level_c_get_without_the_study_uid_does_not_match_the_sop_class(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    received, responses = c_get(listener.port, "WS1", {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "1.2.3"})
    assert (received, [int(r.Status) for r, _ in responses]) == ([], [0xA900])


def test_a_peer_accepting_only_implicit_vr_gets_the_stored_data_set_transcoded(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}
    received, responses = c_get(listener.port, "WS1", keys, [ImplicitVRLittleEndian])
    assert [int(r.Status) for r, _ in responses][-1] == 0x0000
    assert {ds.SOPInstanceUID for ds in received} == set(archive["jane"])
    for ds in received:
        stored = pydicom.dcmread(io.BytesIO(archive["jane"][ds.SOPInstanceUID]))
        assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert ds.PixelData == stored.PixelData


def test_a_real_c_cancel_after_the_first_pending_ends_the_c_get_with_fe00_and_the_counts(
    listener: DicomListener, archive: dict[str, Any], sites: dict[str, Site], tmp_path: Path
) -> None:
    spec = StudySpec(patient_name="MANY^SLICES", patient_id="PAT-M1", study_date="20240201", accession="ACC-M1")
    series = new_uid()
    staged = []
    for number in range(1, 301):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(make_instance(spec, "CT", series_uid=series, instance_number=number, size=8))
        staged.append(stage_file(get_storage("hot"), path))
    assert all(r.ok for r in store_instances(staged, sender=Sender(site=sites["general"])))
    got: list[str] = []

    def on_store(event: Event) -> int:
        got.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    ae = AE(ae_title="WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    roles = [build_role(CTImageStorage, scp_role=True)]
    assoc = ae.associate(
        "127.0.0.1", listener.port, ae_title="PACS", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = spec.study_uid
    statuses: list[Dataset] = []
    try:
        context_id = assoc.accepted_contexts[0].context_id
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet, msg_id=5):
            statuses.append(status)
            if len(statuses) == 1:
                assoc.send_c_cancel(5, context_id)
    finally:
        assoc.release()
    final = statuses[-1]
    assert int(final.Status) == 0xFE00
    assert 1 <= final.NumberOfCompletedSuboperations < 300
    assert final.NumberOfRemainingSuboperations == 300 - final.NumberOfCompletedSuboperations
    assert len(got) == final.NumberOfCompletedSuboperations
    wait_idle(listener)
    (result,) = AuditEvent.objects.filter(action="retrieve_result")
    assert (result.outcome, result.detail["status"]) == ("cancelled", "0xFE00")
    assert result.detail["completed"] == final.NumberOfCompletedSuboperations
