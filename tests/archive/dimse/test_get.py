"""The C-GET SCP sends a device's site's instances back on the same association, as stored.

Studies arrive through the node's own C-STORE from a device of each site
(the ``qr_archive`` fixture of conftest.py); workstations of each site then
retrieve them with DCMTK's getscu or a pynetdicom SCU.
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

from archive.dicom.synthetic import StudySpec
from archive.dimse.listener import DicomListener
from archive.models import Instance
from audit.models import AuditEvent
from tests.archive.dimse.conftest import (
    JANE,
    assert_cancelled_with_counts,
    cancel_after_first_pending,
    data_set_bytes,
    dcmtk,
    identifier,
    wait_idle,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
    try:
        responses = list(assoc.send_c_get(identifier(keys), StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    return received, responses


def test_getscu_retrieves_a_study_whose_files_hold_the_stored_data_sets_byte_for_byte(
    listener: DicomListener, qr_archive: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "got"
    out.mkdir()
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={JANE.study_uid}"]
    args = [a for k in keys for a in ("-k", k)]
    done = dcmtk("getscu", "-S", "-od", str(out), "-aet", "WS1", "-aec", "PACS", *args, "127.0.0.1", str(listener.port))
    assert done.returncode == 0, done.stdout + done.stderr
    got = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in out.iterdir()}
    assert set(got) == set(qr_archive["jane"])
    for sop, part10 in got.items():
        assert data_set_bytes(part10) == data_set_bytes(qr_archive["jane"][sop])
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="retrieve")
    assert (event.actor, event.outcome, event.source_ip) == ("AE:WS1", "success", "127.0.0.1")
    assert (event.detail["via"], event.detail["level"], event.detail["instances"]) == ("DIMSE", "STUDY", 3)
    assert event.study_instance_uid == JANE.study_uid
    (result,) = AuditEvent.objects.filter(action="retrieve_result")
    assert (result.actor, result.outcome, result.detail["status"]) == ("AE:WS1", "success", "0x0000")
    assert (result.detail["completed"], result.detail["failed"], result.detail["warning"]) == (3, 0, 0)


def test_a_series_level_c_get_sends_the_series_instances_and_ends_with_success(
    listener: DicomListener, qr_archive: dict[str, Any]
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
    listener: DicomListener, qr_archive: dict[str, Any]
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
    listener: DicomListener, qr_archive: dict[str, Any]
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
    listener: DicomListener, qr_archive: dict[str, Any]
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
    listener: DicomListener, qr_archive: dict[str, Any]
) -> None:
    received, responses = c_get(listener.port, "WS1", {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "1.2.3"})
    assert (received, [int(r.Status) for r, _ in responses]) == ([], [0xA900])


def test_a_peer_accepting_only_implicit_vr_gets_the_stored_data_set_transcoded(
    listener: DicomListener, qr_archive: dict[str, Any]
) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}
    received, responses = c_get(listener.port, "WS1", keys, [ImplicitVRLittleEndian])
    assert [int(r.Status) for r, _ in responses][-1] == 0x0000
    assert {ds.SOPInstanceUID for ds in received} == set(qr_archive["jane"])
    for ds in received:
        stored = pydicom.dcmread(io.BytesIO(qr_archive["jane"][ds.SOPInstanceUID]))
        assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert ds.PixelData == stored.PixelData


def test_a_real_c_cancel_after_the_first_pending_ends_the_c_get_with_fe00_and_the_counts(
    listener: DicomListener, qr_archive: dict[str, Any], many_slices: StudySpec
) -> None:
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
    keys = identifier({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": many_slices.study_uid})
    final = cancel_after_first_pending(
        assoc, lambda msg_id: assoc.send_c_get(keys, StudyRootQueryRetrieveInformationModelGet, msg_id=msg_id)
    )
    assert len(got) == final.NumberOfCompletedSuboperations
    assert_cancelled_with_counts(listener, final)
