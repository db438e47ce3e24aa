"""Storage Commitment Push Model: a pynetdicom modality asks, the node answers truthfully, on whichever association.

DCMTK has no storage commitment SCU, so the modality is a pynetdicom SCU in
the test (and, for reports on a new association, a pynetdicom SCP the test
starts on a free port). Instances arrive through the node's own C-STORE.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.utils import timezone
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from archive.dicom.synthetic import make_instance, new_uid
from archive.dimse.commitment import WELL_KNOWN_INSTANCE, Deliverer
from archive.dimse.listener import DicomListener
from archive.ingest.trash import trash_series, trash_study
from archive.models import DicomDevice, Instance, Site, StorageCommitment
from archive.storage.registry import get_storage
from audit.models import AuditEvent
from tests.archive.dimse.conftest import JANE, OTHER, send, wait_idle

pytestmark = pytest.mark.django_db(transaction=True)
SECOND = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage


class Modality:
    """A storage commitment SCU (pynetdicom) that records the reports it receives, on any association."""

    def __init__(self, title: str = "CT1") -> None:
        self.title = title
        self.reports: list[tuple[int, Dataset, str]] = []
        self.arrived = threading.Event()
        self.answer_after = 0.0  # seconds the modality takes to answer a report
        self.ae = AE(ae_title=title)
        self.ae.add_requested_context(StorageCommitmentPushModel)
        self.ae.add_requested_context(Verification)
        # As acceptor: the node proposes the SCP role of Storage Commitment when it calls back.
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)

    def on_report(self, event: Event) -> tuple[int, None]:
        time.sleep(self.answer_after)
        info = event.event_information
        self.reports.append((int(event.event_type), info, "new" if event.assoc.is_acceptor else "same"))
        self.arrived.set()
        return 0x0000, None

    def associate(self, port: int, takes_reports: bool = True, **more: Any) -> Association:
        """An association to the node; without ``takes_reports``, reports on it are refused (pynetdicom's default)."""
        handlers = [(evt.EVT_N_EVENT_REPORT, self.on_report)] if takes_reports else []
        handlers += more.pop("evt_handlers", [])
        assoc = self.ae.associate("127.0.0.1", port, ae_title="PACS", evt_handlers=handlers, **more)
        assert assoc.is_established
        _keep_paused(assoc)
        return assoc

    def listen(self) -> int:
        """Accept the node's reports on a free port; the port."""
        server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self.on_report)]
        )
        return int(server.server_address[1])

    def wait(self, timeout: float = 20.0) -> tuple[int, Dataset, str]:
        assert self.arrived.wait(timeout), "no N-EVENT-REPORT arrived"
        return self.reports[-1]

    def shutdown(self) -> None:
        self.ae.shutdown()


def _keep_paused(assoc: Association) -> None:
    """Work around a race of the pynetdicom 3.0 SCU used as the modality, not of the node.

    pynetdicom serves an incoming N-EVENT-REPORT on a thread of its own and
    then sets ``_is_paused`` to False even when the reactor is paused for a
    ``send_*()`` of the main thread, which then waits for it forever. After
    such a report, the flag is put back while the reactor is held paused.
    """
    serve = assoc._serve_request

    def _serve_request(msg: Any, context_id: int) -> None:
        serve(msg, context_id)
        if not assoc._reactor_checkpoint.is_set():
            assoc._is_paused = True

    assoc._serve_request = _serve_request  # type: ignore[method-assign]


@pytest.fixture
def modality() -> Iterator[Modality]:
    scu = Modality()
    yield scu
    scu.shutdown()


@pytest.fixture
def stored(listener: DicomListener, tmp_path: Path) -> dict[str, list[tuple[str, str]]]:
    """Three CT instances CT1 sent to "general", one OTHER sent to "elsewhere": their (class, instance) UIDs."""
    ours = [make_instance(JANE, "CT", instance_number=n, size=16) for n in (1, 2, 3)]
    theirs = [make_instance(OTHER, "CT", size=16)]
    send(listener.port, "CT1", ours, tmp_path)
    send(listener.port, "OTHER", theirs, tmp_path)
    wait_idle(listener)

    def refs(files: list[bytes]) -> list[tuple[str, str]]:
        return [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in (pydicom.dcmread(io.BytesIO(f)) for f in files)]

    return {"ours": refs(ours), "theirs": refs(theirs)}


def action_information(transaction_uid: str | None, references: list[tuple[str, str]] | None) -> Dataset:
    ds = Dataset()
    if transaction_uid is not None:
        ds.TransactionUID = transaction_uid
    if references is not None:
        ds.ReferencedSOPSequence = []
        for sop_class, sop_instance in references:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            ds.ReferencedSOPSequence.append(item)
    return ds


def ask(assoc: Association, info: Dataset, action_type: int = 1, instance: str = WELL_KNOWN_INSTANCE) -> Dataset:
    """Send one N-ACTION; its response status data set."""
    status, _ = assoc.send_n_action(info, action_type, StorageCommitmentPushModel, instance)
    assert "Status" in status, "no N-ACTION-RSP"
    return status


def sequence(ds: Dataset, keyword: str) -> list[tuple[Any, ...]]:
    if keyword not in ds:
        return []
    return [
        (
            str(i.ReferencedSOPClassUID),
            str(i.ReferencedSOPInstanceUID),
            *([int(i.FailureReason)] if "FailureReason" in i else []),
        )
        for i in ds[keyword].value
    ]


def records(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_report_comes_back_on_the_same_association_when_the_modality_keeps_it_open(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    transaction_uid = new_uid()
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(transaction_uid, stored["ours"])).Status == 0x0000
        event_type, info, via = modality.wait()
    finally:
        assoc.release()

    assert (event_type, via) == (1, "same")
    assert info.TransactionUID == transaction_uid
    assert info.RetrieveAETitle == "PACS"
    assert sequence(info, "ReferencedSOPSequence") == stored["ours"]
    assert "FailedSOPSequence" not in info
    wait_idle(listener)
    row = StorageCommitment.objects.get(transaction_uid=transaction_uid)
    assert (row.state, row.attempts, row.calling_ae) == ("delivered", 1, "CT1")
    request = records("storage_commitment")[-1]
    assert request.outcome == "success" and request.actor == "AE:CT1" and request.source_ip == "127.0.0.1"
    assert request.detail["transaction_uid"] == transaction_uid and request.detail["instances"] == 3
    report = records("storage_commitment_report")[-1]
    assert report.outcome == "success"
    assert report.detail["delivery"] == "same association"
    assert (report.detail["event_type"], report.detail["committed"], report.detail["failed"]) == (1, 3, 0)
    assert report.detail["transaction_uid"] == transaction_uid


def test_a_report_goes_on_a_new_association_to_the_device_when_the_modality_released(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    DicomDevice.objects.filter(ae_title="CT1").update(port=modality.listen())
    transaction_uid = new_uid()
    assoc = modality.associate(listener.port, takes_reports=False)  # and it releases at once
    assert ask(assoc, action_information(transaction_uid, stored["ours"][:2])).Status == 0x0000
    assoc.release()

    event_type, info, via = modality.wait()
    assert (event_type, via) == (1, "new")
    assert info.TransactionUID == transaction_uid
    assert sequence(info, "ReferencedSOPSequence") == stored["ours"][:2]
    wait_for(lambda: StorageCommitment.objects.get(transaction_uid=transaction_uid).state == "delivered")
    report = records("storage_commitment_report")[-1]
    assert report.outcome == "success" and report.detail["delivery"] == "new association"
    assert report.detail["destination"] == f"127.0.0.1:{DicomDevice.objects.get(ae_title='CT1').port}"


def test_what_is_missing_of_another_class_or_of_another_site_is_reported_failed_with_its_reason(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    good = stored["ours"][0]
    missing = (CTImageStorage, new_uid())
    wrong_class = (str(MRImageStorage), stored["ours"][1][1])
    other_site = stored["theirs"][0]
    not_storage = (str(Verification), new_uid())
    assoc = modality.associate(listener.port)
    try:
        refs = [good, missing, wrong_class, other_site, not_storage]
        assert ask(assoc, action_information(new_uid(), refs)).Status == 0x0000
        event_type, info, _ = modality.wait()
    finally:
        assoc.release()

    assert event_type == 2
    assert sequence(info, "ReferencedSOPSequence") == [good]
    assert sequence(info, "FailedSOPSequence") == [
        (*missing, 0x0112),
        (*wrong_class, 0x0119),
        (*other_site, 0x0112),  # another site's instance is not revealed: no such object instance
        (*not_storage, 0x0122),
    ]
    report = records("storage_commitment_report")[-1]
    assert report.detail["failure_reasons"] == {"0x0112": 2, "0x0119": 1, "0x0122": 1}


def test_an_object_corrupted_on_disk_is_reported_failed_not_committed(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    corrupted = Instance.objects.get(sop_instance_uid=stored["ours"][2][1])
    path = get_storage(corrupted.tier).path(corrupted.storage_key)  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte of pixel data: same size, still a readable instance
    path.write_bytes(bytes(data))
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(new_uid(), stored["ours"])).Status == 0x0000
        event_type, info, _ = modality.wait()
    finally:
        assoc.release()

    assert event_type == 2
    assert sequence(info, "ReferencedSOPSequence") == stored["ours"][:2]
    assert sequence(info, "FailedSOPSequence") == [(*stored["ours"][2], 0x0110)]


def test_an_instance_of_a_study_in_the_trash_is_reported_failed_as_missing_not_committed(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    trash_study(Instance.objects.get(sop_instance_uid=stored["ours"][0][1]).series.study, actor="test")
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(new_uid(), stored["ours"] + stored["theirs"])).Status == 0x0000
        event_type, info, _ = modality.wait()
    finally:
        assoc.release()

    assert event_type == 2
    assert sequence(info, "ReferencedSOPSequence") == []
    assert sequence(info, "FailedSOPSequence") == [(*ref, 0x0112) for ref in stored["ours"] + stored["theirs"]]


def test_an_instance_of_a_series_in_the_trash_fails_as_missing_while_the_rest_of_its_study_is_committed(
    listener: DicomListener, modality: Modality, tmp_path: Path
) -> None:
    kept, deleted = new_uid(), new_uid()
    files = [
        make_instance(JANE, "CT", series_uid=kept, series_number=1, instance_number=1, size=16),
        make_instance(JANE, "CT", series_uid=deleted, series_number=2, instance_number=1, size=16),
    ]
    send(listener.port, "CT1", files, tmp_path)
    wait_idle(listener)
    refs = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in (pydicom.dcmread(io.BytesIO(f)) for f in files)]
    trash_series(Instance.objects.get(sop_instance_uid=refs[1][1]).series, actor="test")
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(new_uid(), refs)).Status == 0x0000
        event_type, info, _ = modality.wait()
    finally:
        assoc.release()

    assert event_type == 2
    assert sequence(info, "ReferencedSOPSequence") == refs[:1]
    assert sequence(info, "FailedSOPSequence") == [(*refs[1], 0x0112)]


def test_a_reused_transaction_uid_fails_every_reference_with_0131(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    transaction_uid = new_uid()
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(transaction_uid, stored["ours"][:1])).Status == 0x0000
        assert modality.wait()[0] == 1
        modality.arrived.clear()
        assert ask(assoc, action_information(transaction_uid, stored["ours"][:1])).Status == 0x0000
        event_type, info, _ = modality.wait()
    finally:
        assoc.release()
    assert event_type == 2
    assert sequence(info, "FailedSOPSequence") == [(*stored["ours"][0], 0x0131)]


def test_a_report_that_cannot_be_delivered_is_kept_and_retried_by_any_node(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    DicomDevice.objects.filter(ae_title="CT1").update(port=free_port())  # nobody listens there yet
    transaction_uid = new_uid()
    assoc = modality.associate(listener.port, takes_reports=False)  # and it releases at once
    assert ask(assoc, action_information(transaction_uid, stored["ours"])).Status == 0x0000
    assoc.release()
    wait_for(lambda: StorageCommitment.objects.get(transaction_uid=transaction_uid).attempts == 1)
    row = StorageCommitment.objects.get(transaction_uid=transaction_uid)
    assert row.state == "pending" and "not established" in row.last_error
    assert row.next_attempt_at > timezone.now()  # the first retry waits Deliverer.retry_delays[0]
    failure = records("storage_commitment_report")[-1]
    assert failure.outcome == "failure" and failure.detail["delivery"] == "new association"

    # The modality comes back; the retry is due. Any node's deliverer (here a new one, as after a restart) sends
    # it; the listener's own retry thread is stopped so that the run observed is this one.
    listener.commitment_scp.deliverer.stop()
    DicomDevice.objects.filter(ae_title="CT1").update(port=modality.listen())
    StorageCommitment.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert Deliverer("PACS").run_due() == 1

    event_type, info, via = modality.wait()
    assert (event_type, via, info.TransactionUID) == (1, "new", transaction_uid)
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("delivered", 2)
    assert Deliverer("PACS").run_due() == 0  # delivered once, never again


def test_a_device_that_may_not_store_is_refused_with_0124(
    listener: DicomListener, sites: dict[str, Site], stored: dict[str, list[tuple[str, str]]]
) -> None:
    DicomDevice.objects.create(ae_title="WSQ", site=sites["general"], may_query=True)
    scu = Modality("WSQ")
    assoc = scu.associate(listener.port)
    try:
        status = ask(assoc, action_information(new_uid(), stored["ours"]))
    finally:
        assoc.release()
        scu.shutdown()
    assert status.Status == 0x0124
    assert not StorageCommitment.objects.exists()
    refusal = records("storage_commitment")[-1]
    assert refusal.outcome == "denied" and refusal.actor == "AE:WSQ"
    assert refusal.detail["reason"] == "this device may not ask for storage commitment"


def test_an_unknown_caller_allowed_to_echo_is_refused_with_0124(devices: dict[str, DicomDevice]) -> None:
    node = DicomListener("PACS", host="127.0.0.1", port=0, reject_unknown=False)
    node.start()
    scu = Modality("NOBODY")
    try:
        assoc = scu.associate(node.port)
        status = ask(assoc, action_information(new_uid(), [(CTImageStorage, new_uid())]))
        assoc.release()
    finally:
        scu.shutdown()
        node.stop()
    assert status.Status == 0x0124
    assert records("storage_commitment")[-1].detail["reason"] == "unknown device"


@pytest.mark.parametrize(
    ("case", "info", "action_type", "instance", "status"),
    [
        ("no Transaction UID", (None, "refs"), 1, WELL_KNOWN_INSTANCE, 0x0115),
        ("a Transaction UID that is no UID", ("1.2.abc", "refs"), 1, WELL_KNOWN_INSTANCE, 0x0115),
        ("no Referenced SOP Sequence", ("uid", None), 1, WELL_KNOWN_INSTANCE, 0x0115),
        ("an empty Referenced SOP Sequence", ("uid", []), 1, WELL_KNOWN_INSTANCE, 0x0115),
        ("an item without an instance UID", ("uid", [(CTImageStorage, "")]), 1, WELL_KNOWN_INSTANCE, 0x0115),
        ("action type 2", ("uid", "refs"), 2, WELL_KNOWN_INSTANCE, 0x0123),
        ("another SOP instance than the well-known one", ("uid", "refs"), 1, "1.2.3.4", 0x0112),
    ],
)
def test_a_malformed_n_action_gets_its_failure_status_and_the_association_goes_on(
    listener: DicomListener,
    stored: dict[str, list[tuple[str, str]]],
    modality: Modality,
    case: str,
    info: tuple[Any, Any],
    action_type: int,
    instance: str,
    status: int,
) -> None:
    transaction_uid = new_uid() if info[0] == "uid" else info[0]
    refs = stored["ours"] if info[1] == "refs" else info[1]
    assoc = modality.associate(listener.port)
    try:
        answer = ask(assoc, action_information(transaction_uid, refs), action_type, instance)
        assert assoc.send_c_echo().Status == 0x0000  # the node is still there, on the same association
    finally:
        assoc.release()
    assert answer.Status == status, case
    assert answer.ErrorComment
    assert not StorageCommitment.objects.exists()
    refusal = records("storage_commitment")[-1]
    assert refusal.outcome == "failure" and refusal.detail["status"] == f"0x{status:04X}"


def test_a_device_that_does_not_accept_the_scp_role_on_a_new_association_gets_no_report_and_it_is_retried(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    stubborn = AE(ae_title="CT1")
    stubborn.add_supported_context(StorageCommitmentPushModel)  # role selection proposals ignored: the node stays SCU
    server = stubborn.start_server(("127.0.0.1", 0), block=False)
    DicomDevice.objects.filter(ae_title="CT1").update(port=server.server_address[1])
    transaction_uid = new_uid()
    try:
        assoc = modality.associate(listener.port, takes_reports=False)
        assert ask(assoc, action_information(transaction_uid, stored["ours"][:1])).Status == 0x0000
        assoc.release()
        wait_for(lambda: StorageCommitment.objects.get(transaction_uid=transaction_uid).attempts == 1)
    finally:
        stubborn.shutdown()
    row = StorageCommitment.objects.get(transaction_uid=transaction_uid)
    assert (row.state, row.last_error) == ("pending", "the device did not accept the SCP role of Storage Commitment")
    assert not modality.reports


def test_a_request_not_delivered_within_max_age_expires_and_says_so(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]]
) -> None:
    listener.commitment_scp.deliverer.stop()  # the run observed is the one below
    device = DicomDevice.objects.get(ae_title="CT1")
    device.port = free_port()
    device.save()
    old = timezone.now() - Deliverer.max_age
    row = StorageCommitment.objects.create(
        transaction_uid=new_uid(),
        device=device,
        calling_ae="CT1",
        peer_address="127.0.0.1",
        references=[list(stored["ours"][0])],
        next_attempt_at=old,
        created_at=old,
    )
    assert Deliverer("PACS").run_due() == 1
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("expired", 1)
    assert row.result == {"committed": [list(stored["ours"][0])], "failed": []}  # checked before any delivery
    assert Deliverer("PACS").run_due() == 0
    last = records("storage_commitment_report")[-1]
    assert last.outcome == "failure" and last.detail["expired"] is True


def delivered_once(modality: Modality, transaction_uids: list[str]) -> None:
    """Each request's row is delivered after one attempt, and the modality got its report exactly once."""
    wait_for(
        lambda: (
            set(StorageCommitment.objects.filter(transaction_uid__in=transaction_uids).values_list("state", flat=True))
            == {"delivered"}
        )
    )
    time.sleep(0.5)  # room for a duplicate report, were one sent
    got = [str(info.TransactionUID) for _, info, _ in modality.reports]
    assert sorted(got) == sorted(transaction_uids)
    assert set(
        StorageCommitment.objects.filter(transaction_uid__in=transaction_uids).values_list("attempts", flat=True)
    ) == {1}


def test_two_n_actions_back_to_back_on_one_association_are_both_answered_and_both_reported_once(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    DicomDevice.objects.filter(ae_title="CT1").update(port=modality.listen())  # a duplicate report would show here
    modality.ae.dimse_timeout = 10
    modality.answer_after = 0.3  # the node waits for the response while the next requests come
    first, second = new_uid(), new_uid()
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(first, stored["ours"][:1])).Status == 0x0000
        assert ask(assoc, action_information(second, stored["ours"][1:])).Status == 0x0000
        delivered_once(modality, [first, second])
    finally:
        assoc.release()
    assert [via for _, _, via in modality.reports] == ["same", "same"]
    reports = records("storage_commitment_report")
    assert [r.detail["delivery"] for r in reports] == ["same association", "same association"]


def test_a_c_echo_right_after_an_n_action_is_answered_and_the_report_is_delivered_once(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    DicomDevice.objects.filter(ae_title="CT1").update(port=modality.listen())
    modality.ae.dimse_timeout = 10
    modality.answer_after = 0.3  # the node waits for the response while the next requests come
    transaction_uid = new_uid()
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(transaction_uid, stored["ours"])).Status == 0x0000
        echoes = [assoc.send_c_echo() for _ in range(3)]
        delivered_once(modality, [transaction_uid])
    finally:
        assoc.release()
    assert [e.get("Status") for e in echoes] == [0x0000, 0x0000, 0x0000]
    assert modality.reports[0][2] == "same"


def test_a_c_get_while_a_report_waits_for_its_response_is_served_after_it(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    DicomDevice.objects.filter(ae_title="CT1").update(port=modality.listen(), may_retrieve=True)
    modality.ae.dimse_timeout = 10
    modality.answer_after = 0.5  # the C-GET comes while the node waits for the report's response
    modality.ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    modality.ae.add_requested_context(CTImageStorage)
    received: list[str] = []

    def on_store(event: Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    transaction_uid = new_uid()
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = Instance.objects.get(
        sop_instance_uid=stored["ours"][0][1]
    ).series.study.study_instance_uid
    assoc = modality.associate(
        listener.port, ext_neg=[build_role(CTImageStorage, scp_role=True)], evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        assert ask(assoc, action_information(transaction_uid, stored["ours"])).Status == 0x0000
        responses = [
            status.Status for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
        ]
        delivered_once(modality, [transaction_uid])
    finally:
        assoc.release()
    assert responses[-1] == 0x0000
    assert sorted(received) == sorted(i for _, i in stored["ours"])
    assert modality.reports[0][2] == "same"


def due_row(device: DicomDevice, references: list[tuple[str, str]], **fields: Any) -> StorageCommitment:
    """A request of ``device`` whose report is due now."""
    fields.setdefault("transaction_uid", new_uid())
    fields.setdefault("next_attempt_at", timezone.now() - timezone.timedelta(seconds=1))
    return StorageCommitment.objects.create(
        device=device,
        calling_ae=device.ae_title,
        peer_address="127.0.0.1",
        references=[list(r) for r in references],
        **fields,
    )


def test_a_device_row_the_node_cannot_use_does_not_stop_the_reports_of_other_devices(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]]
) -> None:
    listener.commitment_scp.deliverer.stop()  # the loop observed is the one below
    mr2 = Modality("MR2")
    try:
        DicomDevice.objects.filter(ae_title="MR2").update(port=mr2.listen())
        DicomDevice.objects.filter(ae_title="CT1").update(host="not an address", port=free_port())  # bypasses clean()
        bad = due_row(DicomDevice.objects.get(ae_title="CT1"), stored["ours"][:1])
        StorageCommitment.objects.filter(pk=bad.pk).update(next_attempt_at=timezone.now() - timezone.timedelta(days=1))
        good = due_row(DicomDevice.objects.get(ae_title="MR2"), stored["ours"][1:2])
        deliverer = Deliverer("PACS")
        deliverer.poll_seconds = 0.1
        deliverer.start()
        try:
            event_type, info, via = mr2.wait()
            wait_for(lambda: StorageCommitment.objects.get(pk=good.pk).state == "delivered")
            assert deliverer.thread is not None and deliverer.thread.is_alive()
        finally:
            deliverer.stop()
    finally:
        mr2.shutdown()
    assert (event_type, via, info.TransactionUID) == (1, "new", good.transaction_uid)
    bad.refresh_from_db()
    assert (bad.state, bad.attempts, bad.last_error) == ("pending", 1, "internal error (ValueError)")
    assert bad.next_attempt_at > timezone.now()  # it backs off, and expires after Deliverer.max_age
    failure = AuditEvent.objects.filter(action="storage_commitment_report", outcome="failure").get()
    assert failure.detail["commitment"] == bad.pk


def test_a_device_that_never_accepts_the_connection_holds_the_retries_no_longer_than_the_connect_timeout(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]]
) -> None:
    listener.commitment_scp.deliverer.stop()
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(0)  # never accepts: once its backlog is full, further connections hang in SYN
    filling = []
    for _ in range(4):
        sock = socket.socket()
        sock.settimeout(0.3)
        try:
            sock.connect(black_hole.getsockname())
        except TimeoutError:
            pass
        filling.append(sock)
    probe = socket.socket()
    probe.settimeout(0.5)
    with pytest.raises(TimeoutError):
        probe.connect(black_hole.getsockname())  # the address really is a black hole now
    probe.close()
    try:
        DicomDevice.objects.filter(ae_title="CT1").update(port=black_hole.getsockname()[1])
        row = due_row(DicomDevice.objects.get(ae_title="CT1"), stored["ours"][:1])
        deliverer = Deliverer("PACS")
        deliverer.connect_seconds = 1.0
        started = time.monotonic()
        assert deliverer.run_due() == 1
        took = time.monotonic() - started
    finally:
        for sock in filling:
            sock.close()
        black_hole.close()
    assert took < 5, f"the attempt took {took:.1f} s"
    assert Deliverer.connect_seconds == 10.0
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("pending", 1) and "not established" in row.last_error


def test_a_device_with_too_many_requests_not_yet_reported_is_refused_with_0213_and_it_is_audited(
    listener: DicomListener, stored: dict[str, list[tuple[str, str]]], modality: Modality
) -> None:
    from archive.dimse.commitment import MAX_PENDING_PER_DEVICE

    listener.commitment_scp.deliverer.stop()
    device = DicomDevice.objects.get(ae_title="CT1")
    for _ in range(MAX_PENDING_PER_DEVICE):
        due_row(device, stored["ours"][:1], next_attempt_at=timezone.now() + timezone.timedelta(hours=1))
    transaction_uid = new_uid()
    assoc = modality.associate(listener.port)
    try:
        status = ask(assoc, action_information(transaction_uid, stored["ours"][:1]))
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert status.Status == 0x0213
    assert "not yet reported" in status.ErrorComment
    assert not StorageCommitment.objects.filter(transaction_uid=transaction_uid).exists()
    refusal = records("storage_commitment")[-1]
    assert (refusal.outcome, refusal.detail["status"]) == ("failure", "0x0213")
    assert refusal.detail["transaction_uid"] == transaction_uid

    StorageCommitment.objects.filter(device=device).update(state="delivered")  # reported: room again
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(transaction_uid, stored["ours"][:1])).Status == 0x0000
    finally:
        assoc.release()


def test_checks_run_on_a_bounded_pool_whatever_the_number_of_requests(
    listener: DicomListener,
    stored: dict[str, list[tuple[str, str]]],
    modality: Modality,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from archive.dimse import commitment

    running, most = 0, 0
    lock = threading.Lock()
    rehashes = commitment.rehashes

    def slow_rehashes(tier: str, key: str, sha256: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return rehashes(tier, key, sha256)

    monkeypatch.setattr(commitment, "rehashes", slow_rehashes)
    uids = [new_uid() for _ in range(6)]
    scus = [Modality() for _ in uids]
    assocs = [scu.associate(listener.port) for scu in scus]
    try:
        for assoc, uid in zip(assocs, uids, strict=True):  # six requests on six associations, all at once
            assert ask(assoc, action_information(uid, stored["ours"][:1])).Status == 0x0000
        for scu in scus:
            assert scu.wait()[0] == 1
    finally:
        for assoc, scu in zip(assocs, scus, strict=True):
            assoc.release()
            scu.shutdown()
    assert most == 2  # never more at once, and both used


def test_the_index_takes_one_new_request_per_transaction_uid(
    devices: dict[str, DicomDevice], stored: dict[str, list[tuple[str, str]]]
) -> None:
    from django.db import IntegrityError, transaction

    first = due_row(devices["CT1"], stored["ours"][:1])
    with pytest.raises(IntegrityError), transaction.atomic():
        due_row(devices["CT1"], stored["ours"][:1], transaction_uid=first.transaction_uid)
    reused = due_row(devices["CT1"], stored["ours"][:1], transaction_uid=first.transaction_uid, reused=True)
    assert reused.pk != first.pk


def test_a_transaction_uid_taken_meanwhile_by_another_request_is_reported_as_reused(
    listener: DicomListener,
    stored: dict[str, list[tuple[str, str]]],
    modality: Modality,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.db.models import QuerySet

    earlier = due_row(
        DicomDevice.objects.get(ae_title="CT1"), stored["ours"][:1], next_attempt_at=timezone.now() + Deliverer.lease
    )
    monkeypatch.setattr(QuerySet, "exists", lambda self: False)  # the race: the earlier request is not seen yet
    assoc = modality.associate(listener.port)
    try:
        assert ask(assoc, action_information(earlier.transaction_uid, stored["ours"][:1])).Status == 0x0000
        event_type, info, _ = modality.wait()
    finally:
        assoc.release()
    assert event_type == 2
    assert sequence(info, "FailedSOPSequence") == [(*stored["ours"][0], 0x0131)]
    rows = StorageCommitment.objects.filter(transaction_uid=earlier.transaction_uid).order_by("pk")
    assert [row.reused for row in rows] == [False, True]
    assert records("storage_commitment")[-1].detail["duplicate"] is True
