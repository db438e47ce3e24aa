"""DICOM devices decide who may associate with the node and what each may do, against real peers.

Peers are DCMTK's echoscu/storescu and pynetdicom SCUs; the listener runs in
this process on a free port (see conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE

from archive.dicom.synthetic import StudySpec, make_instance
from archive.dimse.listener import DicomListener
from archive.dimse.peers import bootstrap_devices, parse_allowed
from archive.models import DicomDevice, Instance, Site
from audit.models import AuditEvent
from tests.archive.dimse.conftest import dcmtk, scu, wait_idle

pytestmark = pytest.mark.django_db(transaction=True)


def instance_file(tmp_path: Path, patient_id: str) -> str:
    path = tmp_path / f"{patient_id}.dcm"
    path.write_bytes(make_instance(StudySpec(patient_id=patient_id), "CT", size=32))
    return str(path)


def c_store(port: int, path: str, title: str) -> int:
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title=title)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def test_a_registered_device_stores_and_its_association_and_echo_are_audited(
    listener: DicomListener, tmp_path: Path
) -> None:
    path = instance_file(tmp_path, "DEV-1")
    done = dcmtk("storescu", "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(listener.port), path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert dcmtk("echoscu", "-aet", "MR2", "-aec", "PACS", "127.0.0.1", str(listener.port)).returncode == 0
    wait_idle(listener)
    assert Instance.objects.get().series.study.site.code == "general"  # type: ignore[union-attr]
    ct1, mr2 = AuditEvent.objects.filter(action="dimse_association").order_by("pk")
    assert (ct1.actor, ct1.outcome, ct1.source_ip) == ("AE:CT1", "success", "127.0.0.1")
    assert ct1.detail == {
        "calling_ae": "CT1",
        "called_ae": "PACS",
        "peer": "127.0.0.1",
        "device": DicomDevice.objects.get(ae_title="CT1").pk,
        "site": "general",
        "capabilities": ["store"],
    }
    assert mr2.actor == "AE:MR2"
    (echo,) = AuditEvent.objects.filter(action="dimse_echo")
    assert (echo.actor, echo.outcome, echo.source_ip) == ("AE:MR2", "success", "127.0.0.1")
    assert echo.detail == {"calling_ae": "MR2", "called_ae": "PACS"}
    assert AuditEvent.objects.get(action="store").outcome == "success"


def test_a_device_without_may_store_gets_not_authorized_and_an_audit_record(
    listener: DicomListener, sites: dict[str, Site], tmp_path: Path
) -> None:
    DicomDevice.objects.create(ae_title="WS1", site=sites["general"], may_query=True, may_retrieve=True)
    path = instance_file(tmp_path, "DEV-2")
    assert c_store(listener.port, path, "WS1") == 0x0124
    done = dcmtk("storescu", "-v", "-aet", "WS1", "-aec", "PACS", "127.0.0.1", str(listener.port), path)
    assert "Received Store Response (Unknown Status: 0x124)" in done.stdout + done.stderr  # DCMTK names no 0x0124
    assert dcmtk("echoscu", "-aet", "WS1", "-aec", "PACS", "127.0.0.1", str(listener.port)).returncode == 0
    wait_idle(listener)
    assert not Instance.objects.exists()
    refusals = AuditEvent.objects.filter(action="store").order_by("pk")
    assert [(a.actor, a.outcome, a.source_ip) for a in refusals] == [("AE:WS1", "failure", "127.0.0.1")] * 2
    assert refusals[0].detail["reason"] == "this device may not store (C-STORE)"
    assert refusals[0].detail["sop_instance_uid"] == pydicom.dcmread(path).SOPInstanceUID


def test_a_device_bound_to_another_network_is_rejected(listener: DicomListener, sites: dict[str, Site]) -> None:
    DicomDevice.objects.create(ae_title="CT7", host="10.1.0.0/16", site=sites["general"], may_store=True)
    done = dcmtk("echoscu", "-aet", "CT7", "-aec", "PACS", "127.0.0.1", str(listener.port))
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr
    wait_idle(listener)
    denied = AuditEvent.objects.get(action="dimse_association")
    assert (denied.actor, denied.outcome, denied.source_ip) == ("AE:CT7", "denied", "127.0.0.1")
    assert denied.detail["reason"] == "address not allowed for this device (bound to 10.1.0.0/16)"


def test_an_unregistered_ae_is_rejected_with_its_reason_in_the_trail(listener: DicomListener) -> None:
    assoc = scu("STRANGER").associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_rejected
    wait_idle(listener)
    denied = AuditEvent.objects.get(action="dimse_association")
    assert (denied.actor, denied.outcome, denied.source_ip) == ("AE:STRANGER", "denied", "127.0.0.1")
    assert denied.detail["reason"] == "unknown calling AE title"
    assert not AuditEvent.objects.filter(action="dimse_echo").exists()


def test_disabling_a_device_stops_its_next_association(listener: DicomListener) -> None:
    assoc = scu("MR2").associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_established
    assoc.release()
    DicomDevice.objects.filter(ae_title="MR2").update(enabled=False)
    assoc = scu("MR2").associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_rejected
    wait_idle(listener)
    outcomes = AuditEvent.objects.filter(action="dimse_association").order_by("pk")
    assert [(a.outcome, a.detail.get("reason")) for a in outcomes] == [
        ("success", None),
        ("denied", "device disabled"),
    ]


@pytest.fixture
def lenient_listener(devices: dict[str, DicomDevice]) -> Iterator[DicomListener]:
    scp = DicomListener("PACS", host="127.0.0.1", port=0, reject_unknown=False)
    scp.start()
    yield scp
    scp.stop()


def test_unknown_callers_may_only_echo_when_not_rejected(
    lenient_listener: DicomListener, settings: Any, tmp_path: Path
) -> None:
    assert dcmtk("echoscu", "-aet", "VISITOR", "-aec", "PACS", "127.0.0.1", str(lenient_listener.port)).returncode == 0
    assert c_store(lenient_listener.port, instance_file(tmp_path, "DEV-3"), "VISITOR") == 0x0124
    wait_idle(lenient_listener)
    assert not Instance.objects.exists()
    accepted = AuditEvent.objects.filter(action="dimse_association").order_by("pk")
    assert [(a.actor, a.outcome) for a in accepted] == [("AE:VISITOR", "success")] * 2
    assert accepted[0].detail["device"] is None and accepted[0].detail["capabilities"] == ["echo"]
    assert AuditEvent.objects.get(action="dimse_echo").actor == "AE:VISITOR"
    refused = AuditEvent.objects.get(action="store")
    assert refused.outcome == "failure" and refused.detail["reason"] == "unknown device"


def test_the_listener_rejects_unknown_callers_by_default_setting(settings: Any, devices: Any) -> None:
    settings.PACS_DIMSE_REJECT_UNKNOWN = False
    assert DicomListener("PACS", host="127.0.0.1", port=0).reject_unknown is False
    settings.PACS_DIMSE_REJECT_UNKNOWN = True
    assert DicomListener("PACS", host="127.0.0.1", port=0).reject_unknown is True


def test_the_allowed_list_adds_missing_devices_store_only_and_leaves_registered_ones(
    sites: dict[str, Site],
) -> None:
    DicomDevice.objects.create(ae_title="CT1", site=sites["elsewhere"], may_query=True)
    added = bootstrap_devices(parse_allowed("CT1@10.0.0.21=general,NEW@10.0.0.0/24=general,ONE@10.0.0.9/32=general"))
    assert [str(d) for d in added] == ["NEW@10.0.0.0/24", "ONE@10.0.0.9"]
    ct1 = DicomDevice.objects.get(ae_title="CT1")
    assert (ct1.host, ct1.site.code, ct1.capabilities()) == ("", "elsewhere", ["query"])
    new = DicomDevice.objects.get(ae_title="NEW")
    assert (new.site.code, new.capabilities(), new.enabled) == ("general", ["store"], True)
    records = AuditEvent.objects.filter(action="admin-add").order_by("pk")
    assert [(r.actor, r.detail["object"]) for r in records] == [
        ("PACS_DIMSE_ALLOWED", "NEW@10.0.0.0/24"),
        ("PACS_DIMSE_ALLOWED", "ONE@10.0.0.9"),
    ]
    assert bootstrap_devices(parse_allowed("NEW=general")) == []
