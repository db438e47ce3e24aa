"""The C-MOVE SCP sends a device's site's instances, as stored, to a registered move destination.

Studies arrive through the node's own C-STORE from a device of each site;
workstations of each site then move them with DCMTK's movescu or a pynetdicom
SCU to a DCMTK storescp the test starts on a free port (or to a pynetdicom
storage SCP, or to the node itself).
"""

from __future__ import annotations

import io
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)

from archive.dicom.synthetic import StudySpec, make_instance
from archive.dimse.listener import DicomListener
from archive.models import DicomDevice, Instance, Site
from audit.models import AuditEvent
from tests.archive.dimse.conftest import (
    JANE,
    OTHER,
    assert_cancelled_with_counts,
    cancel_after_first_pending,
    data_set_bytes,
    dcmtk,
    identifier,
    send,
    wait_idle,
)

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.05)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """DCMTK's storescp as AE title STORESCP on a free port, writing what it receives to a folder."""
    out = tmp_path / "received"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - a fixed DCMTK tool
        ["/usr/bin/storescp", "-aet", "STORESCP", "-od", str(out), "--fork", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        yield {"port": port, "out": out}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def archive(qr_archive: dict[str, Any], sites: dict[str, Site], storescp: dict[str, Any]) -> dict[str, Any]:
    """The studies and workstations of ``qr_archive``; STORESCP (the storescp fixture) is the move destination."""
    DicomDevice.objects.create(
        ae_title="STORESCP", host="127.0.0.1", port=storescp["port"], site=sites["general"], is_move_destination=True
    )
    return {**qr_archive, "out": storescp["out"]}


def c_move(
    port: int,
    title: str,
    destination: str,
    keys: dict[str, Any],
    model: Any = StudyRootQueryRetrieveInformationModelMove,
) -> list[tuple[Dataset, Dataset | None]]:
    """The (status, identifier) responses of one C-MOVE from a pynetdicom SCU."""
    ae = AE(ae_title=title)
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        return list(assoc.send_c_move(identifier(keys), destination, model))
    finally:
        assoc.release()


def received(out: Path, timeout: float = 5.0, expected: int = 0) -> dict[str, bytes]:
    """The objects storescp wrote, by SOP Instance UID (waiting for ``expected`` of them)."""
    deadline = time.monotonic() + timeout
    while len(list(out.iterdir())) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in out.iterdir()}


STUDY = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}


def test_movescu_moves_a_study_to_storescp_whose_files_hold_the_stored_data_sets_byte_for_byte(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={JANE.study_uid}"]
    args = [a for k in keys for a in ("-k", k)]
    done = dcmtk(
        "movescu", "-S", "-aet", "WS1", "-aec", "PACS", "-aem", "STORESCP", *args, "127.0.0.1", str(listener.port)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    got = received(archive["out"], expected=3)
    assert set(got) == set(archive["jane"])
    for sop, part10 in got.items():
        assert data_set_bytes(part10) == data_set_bytes(archive["jane"][sop])
    wait_idle(listener)
    (started,) = AuditEvent.objects.filter(action="retrieve")
    assert (started.actor, started.outcome, started.source_ip) == ("AE:WS1", "success", "127.0.0.1")
    assert started.study_instance_uid == JANE.study_uid
    assert started.detail["destination"] == {"ae": "STORESCP", "host": "127.0.0.1", "port": archive_port(started)}
    assert (started.detail["service"], started.detail["studies"], started.detail["instances"]) == (
        "C-MOVE",
        [JANE.study_uid],
        3,
    )
    (result,) = AuditEvent.objects.filter(action="retrieve_result")
    assert (result.outcome, result.detail["status"], result.detail["completed"], result.detail["failed"]) == (
        "success",
        "0x0000",
        3,
        0,
    )


def archive_port(event: AuditEvent) -> int:
    return int(DicomDevice.objects.get(ae_title="STORESCP").port or 0)


def test_a_series_move_answers_pending_with_sub_operation_counts_then_success(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": JANE.study_uid, "SeriesInstanceUID": "1.2.3.100.1"}
    responses = c_move(listener.port, "WS1", "STORESCP", keys)
    assert [int(r.Status) for r, _ in responses] == [0xFF00, 0x0000]
    pending, _ = responses[0]
    assert (
        pending.NumberOfRemainingSuboperations,
        pending.NumberOfCompletedSuboperations,
        pending.NumberOfFailedSuboperations,
        pending.NumberOfWarningSuboperations,
    ) == (1, 1, 0, 0)
    final, identifier = responses[-1]
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 0)
    assert final.NumberOfWarningSuboperations == 0
    assert "NumberOfRemainingSuboperations" not in final
    assert identifier is None
    assert len(received(archive["out"], expected=2)) == 2


def test_a_patient_root_image_level_move_sends_the_one_instance(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    sop = sorted(archive["jane"])[0]
    series = pydicom.dcmread(io.BytesIO(archive["jane"][sop])).SeriesInstanceUID
    keys = {
        "QueryRetrieveLevel": "IMAGE",
        "PatientID": JANE.patient_id,
        "StudyInstanceUID": JANE.study_uid,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": sop,
    }
    responses = c_move(listener.port, "WS1", "STORESCP", keys, PatientRootQueryRetrieveInformationModelMove)
    assert [int(r.Status) for r, _ in responses] == [0x0000]
    assert set(received(archive["out"], expected=1)) == {sop}


@pytest.mark.parametrize(
    ("title", "change", "reason"),
    [
        ("NOBODY", None, "unknown AE title"),
        ("STORESCP", {"is_move_destination": False}, "not a move destination"),
        ("STORESCP", {"port": None}, "no port registered"),
        ("STORESCP", {"host": ""}, "no single host address registered"),
        ("STORESCP", {"host": "127.0.0.0/8"}, "no single host address registered"),
        ("STORESCP", {"enabled": False}, "device disabled"),
    ],
)
def test_a_move_to_an_unknown_or_unusable_destination_is_refused_with_a801_and_audited(
    listener: DicomListener, archive: dict[str, Any], title: str, change: dict[str, Any] | None, reason: str
) -> None:
    if change:
        DicomDevice.objects.filter(ae_title="STORESCP").update(**change)
    responses = c_move(listener.port, "WS1", title, STUDY)
    assert [int(r.Status) for r, _ in responses] == [0xA801]
    assert received(archive["out"], timeout=0) == {}
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="retrieve")
    assert (event.actor, event.outcome, event.detail["status"]) == ("AE:WS1", "failure", "0xA801")
    assert event.detail["reason"] == f"move destination: {reason}"
    assert event.detail["destination"]["ae"] == title


def test_a_destination_that_is_down_fails_every_sub_operation_with_a702(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    DicomDevice.objects.filter(ae_title="STORESCP").update(port=free_port())  # nobody listens there
    responses = c_move(listener.port, "WS1", "STORESCP", STUDY)
    assert [int(r.Status) for r, _ in responses] == [0xA702]
    final, identifier = responses[0]
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 3)
    assert identifier is not None
    assert set(identifier.FailedSOPInstanceUIDList) == set(archive["jane"])
    wait_idle(listener)
    (result,) = AuditEvent.objects.filter(action="retrieve_result")
    assert (result.outcome, result.detail["status"], result.detail["failed"]) == ("failure", "0xA702", 3)


def test_a_device_of_another_site_moves_nothing_of_this_sites_study(
    listener: DicomListener, archive: dict[str, Any], sites: dict[str, Site], storescp: dict[str, Any]
) -> None:
    DicomDevice.objects.create(
        ae_title="WS2DEST", host="127.0.0.1", port=storescp["port"], site=sites["elsewhere"], is_move_destination=True
    )
    responses = c_move(listener.port, "WS2", "WS2DEST", STUDY)
    assert [int(r.Status) for r, _ in responses] == [0x0000]
    assert responses[0][0].NumberOfCompletedSuboperations == 0
    assert received(archive["out"], timeout=0.3) == {}
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="retrieve")
    assert (event.actor, event.detail["instances"], event.detail["studies"]) == ("AE:WS2", 0, [])


def test_a_device_cannot_move_its_own_sites_study_to_another_sites_destination(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    responses = c_move(
        listener.port, "WS2", "STORESCP", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": OTHER.study_uid}
    )
    assert [int(r.Status) for r, _ in responses] == [0xA801]
    assert received(archive["out"], timeout=0.3) == {}
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="retrieve")
    assert (event.actor, event.outcome, event.detail["status"]) == ("AE:WS2", "failure", "0xA801")
    assert event.detail["reason"] == "move destination: not a destination of the requesting device's site"


def test_a_device_without_may_retrieve_is_refused_not_authorized_without_contacting_the_destination(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    responses = c_move(listener.port, "WSQ", "STORESCP", STUDY)
    assert [int(r.Status) for r, _ in responses] == [0x0124]
    assert received(archive["out"], timeout=0.3) == {}
    wait_idle(listener)
    (event,) = AuditEvent.objects.filter(action="retrieve")
    assert (event.actor, event.outcome, event.detail["status"]) == ("AE:WSQ", "denied", "0x0124")


@pytest.mark.parametrize(
    ("keys", "status"),
    [
        ({"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "1.2.3"}, 0xA900),
        ({"QueryRetrieveLevel": "WARD"}, 0xA900),
        ({"QueryRetrieveLevel": "STUDY", "StudyDate": "2024-01-01"}, 0xC000),
    ],
)
def test_a_bad_identifier_is_refused_as_c_get_refuses_it(
    listener: DicomListener, archive: dict[str, Any], keys: dict[str, Any], status: int
) -> None:
    responses = c_move(listener.port, "WS1", "STORESCP", keys)
    assert [int(r.Status) for r, _ in responses] == [status]


def test_an_instance_whose_stored_object_is_gone_fails_with_b000_and_its_uid_listed(
    listener: DicomListener, archive: dict[str, Any]
) -> None:
    lost = Instance.objects.get(series__series_instance_uid="1.2.3.100.2")
    Instance.objects.filter(pk=lost.pk).update(storage_key="missing/object.dcm")
    responses = c_move(listener.port, "WS1", "STORESCP", STUDY)
    final, identifier = responses[-1]
    assert int(final.Status) == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert identifier is not None and identifier.FailedSOPInstanceUIDList == lost.sop_instance_uid
    assert len(received(archive["out"], expected=2)) == 2


def test_a_destination_accepting_only_explicit_vr_gets_an_implicit_vr_instance_transcoded(
    listener: DicomListener, archive: dict[str, Any], sites: dict[str, Site], tmp_path: Path
) -> None:
    spec = StudySpec(patient_name="IMPLICIT^ONE", patient_id="PAT-I1", study_date="20240301", accession="ACC-I1")
    ds = pydicom.dcmread(io.BytesIO(make_instance(spec, "CT", size=16)))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "implicit.dcm"
    ds.save_as(path, enforce_file_format=True)
    send(listener.port, "MR2", [path.read_bytes()], tmp_path)
    assert Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID).transfer_syntax_uid == ImplicitVRLittleEndian
    got: list[Dataset] = []

    originators: list[tuple[str, int]] = []

    def on_store(event: Event) -> int:
        out = event.dataset
        out.file_meta = event.file_meta
        got.append(out)
        request = event.request
        originators.append((request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID))
        return 0x0000

    dest = AE(ae_title="EXPLICIT")
    dest.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    server = dest.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        DicomDevice.objects.create(
            ae_title="EXPLICIT",
            host="127.0.0.1",
            port=server.server_address[1],
            site=sites["general"],
            is_move_destination=True,
        )
        responses = c_move(
            listener.port, "WS1", "EXPLICIT", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": spec.study_uid}
        )
    finally:
        server.shutdown()
    assert [int(r.Status) for r, _ in responses] == [0x0000]
    (sent,) = got
    assert originators == [("WS1", 1)]  # the C-MOVE's requester and Message ID
    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (sent.SOPInstanceUID, sent.PixelData) == (ds.SOPInstanceUID, ds.PixelData)


def test_movescu_to_the_node_itself_stores_nothing_twice_and_succeeds(
    listener: DicomListener, archive: dict[str, Any], sites: dict[str, Site]
) -> None:
    DicomDevice.objects.create(
        ae_title="PACS",
        host="127.0.0.1",
        port=listener.port,
        site=sites["general"],
        may_store=True,
        is_move_destination=True,
    )
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={JANE.study_uid}"]
    args = [a for k in keys for a in ("-k", k)]
    done = dcmtk("movescu", "-S", "-aet", "WS1", "-aec", "PACS", "-aem", "PACS", *args, "127.0.0.1", str(listener.port))
    assert done.returncode == 0, done.stdout + done.stderr
    wait_idle(listener)
    (result,) = AuditEvent.objects.filter(action="retrieve_result")
    assert (result.outcome, result.detail["completed"]) == ("success", 3)
    stores = AuditEvent.objects.filter(action="store", actor="AE:PACS")
    assert stores.count() == 3
    assert Instance.objects.filter(series__study__study_instance_uid=JANE.study_uid).count() == 3


def test_a_real_c_cancel_after_the_first_pending_ends_the_move_with_fe00_and_the_counts(
    listener: DicomListener, archive: dict[str, Any], many_slices: StudySpec
) -> None:
    ae = AE(ae_title="WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_established
    keys = identifier({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": many_slices.study_uid})
    final = cancel_after_first_pending(
        assoc,
        lambda msg_id: assoc.send_c_move(keys, "STORESCP", StudyRootQueryRetrieveInformationModelMove, msg_id=msg_id),
    )
    assert final.NumberOfFailedSuboperations == 0
    assert_cancelled_with_counts(listener, final)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["+xa"], RLELossless),  # storescp accepts every syntax: the stored RLE bytes as they are
        ([], ExplicitVRLittleEndian),  # storescp's default, uncompressed only: decompressed on the fallback context
    ],
)
def test_movescu_sends_an_rle_instance_as_stored_or_decompressed_when_storescp_accepts_nothing_else(
    listener: DicomListener,
    archive: dict[str, Any],
    sites: dict[str, Site],
    tmp_path: Path,
    options: list[str],
    expected: str,
) -> None:
    spec = StudySpec(patient_name="RLE^ONE", patient_id="PAT-R1", study_date="20240302", accession="ACC-R1")
    ds = pydicom.dcmread(io.BytesIO(make_instance(spec, "CT", size=16)))
    pixels = ds.pixel_array.tobytes()
    ds.compress(RLELossless, generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    send(listener.port, "MR2", [buffer.getvalue()], tmp_path)
    out = tmp_path / "rle-received"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - a fixed DCMTK tool
        ["/usr/bin/storescp", *options, "-aet", "RLESCP", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        DicomDevice.objects.create(
            ae_title="RLESCP", host="127.0.0.1", port=port, site=sites["general"], is_move_destination=True
        )
        keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={spec.study_uid}"]
        args = [a for k in keys for a in ("-k", k)]
        peer = ["127.0.0.1", str(listener.port)]
        done = dcmtk("movescu", "-S", "-aet", "WS1", "-aec", "PACS", "-aem", "RLESCP", *args, *peer)
        assert done.returncode == 0, done.stdout + done.stderr
        (part10,) = received(out, expected=1).values()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    got = pydicom.dcmread(io.BytesIO(part10))
    assert got.file_meta.TransferSyntaxUID == expected
    assert got.pixel_array.tobytes() == pixels
    if expected == RLELossless:
        assert data_set_bytes(part10) == data_set_bytes(buffer.getvalue())
