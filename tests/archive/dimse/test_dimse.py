"""The DICOM DIMSE listener against real peers: DCMTK's echoscu/storescu and pynetdicom.

The listener runs in a background thread of the test process on a free port,
against the test database (transactional, so its association threads see
committed rows). Over DIMSE "identical" means: the data set bytes a peer
sends are kept exactly, and the File Meta Information is rebuilt from the
association. pynetdicom can send a file's data set bytes as they are
(``STORE_SEND_CHUNKED_DATASET``), so for it the stored data set must equal the
file's byte for byte. DCMTK's storescu re-encodes a data set while sending
(it drops group lengths and trailing padding), so for it every attribute and the
pixel data must come back equal. Either way WADO-RS with ``transfer-syntax=*``
must return exactly the stored object.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.test import Client
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.dimse.listener import DicomListener
from archive.dimse.peers import ConfigurationError, bootstrap_devices, parse_allowed
from archive.dimse.statuses import CONFLICT
from archive.ingest import store as ingest
from archive.ingest.store import Sender, store_instance
from archive.models import DicomDevice, Instance, Site, Study
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file
from audit.models import AuditEvent
from tests.archive.dimse.conftest import dcmtk, scu, wait_idle

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[3]
STORESCU = "/usr/bin/storescu"


def storescu(scp: DicomListener, *args: str, aet: str = "CT1") -> subprocess.CompletedProcess[str]:
    return dcmtk("storescu", "-v", "-nh", "-aet", aet, "-aec", "PACS", "127.0.0.1", str(scp.port), *args)


def data_set_bytes(part10: bytes) -> bytes:
    """What follows the File Meta Information of a Part 10 file."""
    assert part10[128:132] == b"DICM"
    return part10[144 + int.from_bytes(part10[140:144], "little") :]


def stored_bytes(sop_instance_uid: str) -> bytes:
    row = Instance.objects.get(sop_instance_uid=sop_instance_uid)
    return get_storage(row.tier).path(row.storage_key).read_bytes()


def as_sent_by_dcmtk(ds: Dataset) -> Dataset:
    """``ds`` without what storescu drops or rewrites while sending.

    Group lengths and trailing padding are dropped, and the VR of encapsulated
    Pixel Data is corrected to OB; Pixel Data is compared on its own.
    """
    for elem in list(ds):
        if (elem.tag.element == 0 and elem.tag.group != 0) or elem.tag in (0xFFFCFFFC, 0x7FE00010):
            del ds[elem.tag]
    return ds


def assert_wado_returns(client: Client, sop_instance_uid: str, stored: bytes) -> None:
    """WADO-RS with transfer-syntax=* returns the stored object unchanged.

    Except for Implicit VR Little Endian and Explicit VR Big Endian, which
    PS3.18 keeps off the web: those come back as Explicit VR Little Endian
    with the same attributes and pixels.
    """
    returned = wado_instance(client, sop_instance_uid)
    kept = pydicom.dcmread(io.BytesIO(stored))
    if kept.file_meta.TransferSyntaxUID not in (ImplicitVRLittleEndian, ExplicitVRBigEndian):
        assert returned == stored
        return
    sent = pydicom.dcmread(io.BytesIO(returned))
    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (sent.pixel_array == kept.pixel_array).all()
    assert as_sent_by_dcmtk(sent) == as_sent_by_dcmtk(kept)


def wado_instance(client: Client, sop_instance_uid: str) -> bytes:
    row = Instance.objects.select_related("series__study").get(sop_instance_uid=sop_instance_uid)
    url = (
        f"/dicom-web/studies/{row.series.study.study_instance_uid}/series/{row.series.series_instance_uid}"
        f"/instances/{sop_instance_uid}"
    )
    response = client.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert response.status_code == 200, response.content[:300]
    ctype = response["Content-Type"]
    boundary = next(p.split("=", 1)[1].strip('"') for p in ctype.split(";") if p.strip().startswith("boundary="))
    body = b"".join(response.streaming_content) if response.streaming else response.content
    parts = [chunk for chunk in body.split(b"--" + boundary.encode())[1:] if not chunk.startswith(b"--")]
    assert len(parts) == 1
    return parts[0].partition(b"\r\n\r\n")[2].removesuffix(b"\r\n")


def write_files(tmp_path: Path, parts: list[bytes]) -> list[str]:
    paths = []
    for i, raw in enumerate(parts):
        path = tmp_path / f"{i:04d}.dcm"
        path.write_bytes(raw)
        paths.append(str(path))
    return paths


@pytest.fixture
def send_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pynetdicom send a file's data set bytes without decoding them."""
    # pynetdicom documents its options as pynetdicom._config: there is no public config module.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def pynetdicom_store(scp: DicomListener, paths: list[str], title: str = "CT1") -> list[int]:
    ae = AE(ae_title=title)
    for path in paths:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="PACS")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        assoc.release()


# --- Verification and association control ---


def test_it_answers_c_echo_from_a_known_ae_over_dcmtk_and_pynetdicom(listener: DicomListener) -> None:
    done = dcmtk("echoscu", "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(listener.port))
    assert done.returncode == 0, done.stderr
    assoc = scu("MR2").associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_it_rejects_an_unknown_calling_ae_at_association_and_audits_it(listener: DicomListener) -> None:
    done = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "PACS", "127.0.0.1", str(listener.port))
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr
    assoc = scu("NOBODY").associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_rejected and not assoc.is_established
    wait_idle(listener)
    denied = AuditEvent.objects.filter(action="dimse_association", outcome="denied").order_by("pk")
    assert [e.actor for e in denied] == ["AE:INTRUDER", "AE:NOBODY"]
    assert denied[0].source_ip == "127.0.0.1"
    assert denied[0].detail["called_ae"] == "PACS"


def test_it_rejects_a_known_ae_calling_from_an_address_it_is_not_bound_to(listener: DicomListener) -> None:
    # CT1 is bound to 127.0.0.1; the same title from 127.0.0.2 is someone else.
    assoc = scu("CT1").associate("127.0.0.1", listener.port, ae_title="PACS", bind_address=("127.0.0.2", 0))
    assert assoc.is_rejected
    # MR2 is not bound to an address.
    assoc = scu("MR2").associate("127.0.0.1", listener.port, ae_title="PACS", bind_address=("127.0.0.2", 0))
    assert assoc.is_established
    assoc.release()
    wait_idle(listener)
    (denied,) = AuditEvent.objects.filter(action="dimse_association", outcome="denied")
    assert denied.actor == "AE:CT1" and denied.source_ip == "127.0.0.2"
    assert denied.detail["reason"] == "address not allowed for this device (bound to 127.0.0.1)"
    (accepted,) = AuditEvent.objects.filter(action="dimse_association", outcome="success")
    assert accepted.actor == "AE:MR2" and accepted.source_ip == "127.0.0.2"


def test_a_bootstrap_peer_whose_site_does_not_exist_adds_no_device(sites: dict[str, Site]) -> None:
    with pytest.raises(ConfigurationError, match="nowhere"):
        bootstrap_devices(parse_allowed("CT8=general,CT9=nowhere"))
    assert not DicomDevice.objects.exists()


def test_accepted_sockets_have_tcp_nodelay(listener: DicomListener) -> None:
    assoc = scu().associate("127.0.0.1", listener.port, ae_title="PACS")
    try:
        (server_side,) = listener.ae.active_associations
        sock = server_side.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


@pytest.mark.parametrize(
    "raw, message",
    [
        ("CT1", "AE@host=site"),
        ("CT1@not-an-ip=general", "not an IP address"),
        ("WAY-TOO-LONG-AE-TITLE=general", "1-16 printable"),
        ("BACK\\SLASH=general", "1-16 printable"),
    ],
)
def test_it_refuses_a_malformed_allowed_list(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_allowed(raw)


def test_the_command_refuses_to_start_for_sites_that_do_not_exist(settings: Any, sites: dict[str, Site]) -> None:
    settings.PACS_DIMSE_ALLOWED = "CT1=general,CT2=nowhere"
    with pytest.raises(CommandError, match="nowhere"):
        call_command("dicom_listener", "--port", "0")
    settings.PACS_DIMSE_ALLOWED = "CT1=general,=x"
    with pytest.raises(CommandError, match="AE@host=site"):
        call_command("dicom_listener", "--port", "0")


# --- C-STORE from DCMTK's storescu ---

# (pydicom test file, storescu option proposing its transfer syntax first)
TEST_FILES = [
    ("CT_small.dcm", "-xe"),
    ("MR_small_implicit.dcm", "-xi"),
    ("MR_small_bigendian.dcm", "-xb"),
    ("JPEG2000.dcm", "-xw"),
    ("MR_small_RLE.dcm", "-xr"),
    ("SC_rgb_jpeg_gdcm.dcm", "-xs"),
    ("MR_small_jpeg_ls_lossless.dcm", "-xt"),
]


@pytest.mark.parametrize("name, propose", TEST_FILES)
def test_storescu_stores_a_file_in_its_own_transfer_syntax(
    listener: DicomListener, reader_client: Client, name: str, propose: str
) -> None:
    path = get_testdata_file(name)
    assert path is not None
    original = pydicom.dcmread(path)
    done = storescu(listener, propose, path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Received Store Response (Success)" in done.stdout + done.stderr
    wait_idle(listener)

    row = Instance.objects.select_related("series__study__site").get(sop_instance_uid=original.SOPInstanceUID)
    assert row.transfer_syntax_uid == original.file_meta.TransferSyntaxUID
    assert row.series.study.site is not None and row.series.study.site.code == "general"
    stored = stored_bytes(row.sop_instance_uid)
    assert hashlib.sha256(stored).hexdigest() == row.sha256
    again = pydicom.dcmread(get_storage().path(row.storage_key))
    assert again.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert again.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert again.file_meta.SendingApplicationEntityTitle == "CT1"
    assert again.PixelData == original.PixelData
    assert as_sent_by_dcmtk(again) == as_sent_by_dcmtk(original)
    # A reader of the sender's site retrieves it.
    assert_wado_returns(reader_client, row.sop_instance_uid, stored)
    (audit,) = AuditEvent.objects.filter(action="store")
    assert audit.actor == "AE:CT1" and audit.outcome == "success"
    assert audit.study_instance_uid == original.StudyInstanceUID
    assert audit.detail["via"] == "DIMSE" and audit.detail["stored"] == 1
    assert audit.detail["sop_instance_uid"] == original.SOPInstanceUID


def test_storescu_stores_a_synthetic_series_in_one_association_with_an_audit_record_per_instance(
    listener: DicomListener, tmp_path: Path
) -> None:
    spec = StudySpec(patient_id="DIMSE-1", patient_name="DIMSE^SERIES")
    parts = make_series(spec, "CT", count=6, size=128)
    done = storescu(listener, *write_files(tmp_path, parts))
    assert done.returncode == 0, done.stdout + done.stderr
    wait_idle(listener)
    study = Study.objects.get(study_instance_uid=spec.study_uid)
    assert study.number_of_instances == 6 and study.number_of_series == 1
    audits = AuditEvent.objects.filter(action="store").order_by("pk")
    assert [a.study_instance_uid for a in audits] == [spec.study_uid] * 6
    assert {a.detail["sop_instance_uid"] for a in audits} == set(
        Instance.objects.values_list("sop_instance_uid", flat=True)
    )
    assert all(
        {k: v for k, v in a.detail.items() if k != "sop_instance_uid"}
        == {"stored": 1, "failed": 0, "via": "DIMSE", "calling_ae": "CT1", "called_ae": "PACS"}
        for a in audits
    )


def test_a_stored_instance_is_in_the_audit_trail_before_its_association_ends(
    listener: DicomListener, send_as_is: None, tmp_path: Path
) -> None:
    (path,) = write_files(tmp_path, [make_instance(StudySpec(patient_id="DIMSE-5"), "CT")])
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="CT1")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_established
    try:
        assert int(assoc.send_c_store(path).Status) == 0x0000
        # The association is still open: a server stopped now would leave no unaudited instance.
        stored = Instance.objects.get()
        (audit,) = AuditEvent.objects.filter(action="store")
        assert audit.outcome == "success" and audit.detail["sop_instance_uid"] == stored.sop_instance_uid
    finally:
        assoc.release()
    wait_idle(listener)
    assert AuditEvent.objects.filter(action="store").count() == 1


# --- C-STORE from pynetdicom, data set bytes sent as they are in the file ---


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "image_dfl.dcm"]
)
def test_pynetdicom_stores_a_data_set_that_is_kept_byte_for_byte(
    listener: DicomListener, send_as_is: None, admin_client_token: Client, name: str
) -> None:
    path = get_testdata_file(name)
    assert path is not None
    assert pynetdicom_store(listener, [path]) == [0x0000]
    wait_idle(listener)
    sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    stored = stored_bytes(sop)
    assert data_set_bytes(stored) == data_set_bytes(Path(path).read_bytes())
    assert_wado_returns(admin_client_token, sop, stored)


def test_pynetdicom_stores_synthetic_instances_byte_for_byte(
    listener: DicomListener, send_as_is: None, tmp_path: Path
) -> None:
    parts = make_series(StudySpec(patient_id="DIMSE-2"), "MR", count=3, size=64)
    assert pynetdicom_store(listener, write_files(tmp_path, parts), title="MR2") == [0x0000] * 3
    wait_idle(listener)
    for raw in parts:
        sop = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID
        assert data_set_bytes(stored_bytes(sop)) == data_set_bytes(raw)


# --- Refusals ---


def test_a_conflicting_instance_gets_a_failure_status_and_the_stored_object_is_kept(
    listener: DicomListener, send_as_is: None, tmp_path: Path
) -> None:
    spec = StudySpec(patient_id="DIMSE-3")
    first = make_instance(spec, "CT", sop_uid="2.25.4242", series_uid="2.25.4243")
    changed = make_instance(spec, "CT", sop_uid="2.25.4242", series_uid="2.25.4243", instance_number=7)
    a = tmp_path / "first.dcm"
    a.write_bytes(first)
    assert pynetdicom_store(listener, [str(a)]) == [0x0000]
    b = tmp_path / "changed.dcm"
    b.write_bytes(changed)
    assert pynetdicom_store(listener, [str(b)]) == [CONFLICT]
    done = storescu(listener, str(b))
    assert "Error: CannotUnderstand" in done.stdout + done.stderr
    wait_idle(listener)
    row = Instance.objects.get(sop_instance_uid="2.25.4242")
    assert data_set_bytes(stored_bytes("2.25.4242")) == data_set_bytes(first)
    assert row.instance_number == 1
    assert AuditEvent.objects.filter(action="store", outcome="failure").count() == 2


def test_the_same_data_set_from_another_ae_is_a_duplicate_not_a_conflict(
    listener: DicomListener, send_as_is: None, tmp_path: Path
) -> None:
    (path,) = write_files(tmp_path, [make_instance(StudySpec(patient_id="DIMSE-4"), "CT")])
    assert pynetdicom_store(listener, [path], title="CT1") == [0x0000]
    assert pynetdicom_store(listener, [path], title="MR2") == [0x0000]
    wait_idle(listener)
    assert Instance.objects.count() == 1
    assert AuditEvent.objects.filter(action="store", outcome="success").count() == 2


def test_a_garbage_data_set_gets_a_failure_status_and_stores_nothing(
    listener: DicomListener, send_as_is: None, tmp_path: Path
) -> None:
    good = pydicom.dcmread(io.BytesIO(make_instance(StudySpec(), "CT")))
    path = tmp_path / "garbage.dcm"
    good.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - len(data_set_bytes(raw))] + os.urandom(3000))
    assert pynetdicom_store(listener, [str(path)]) == [0xC000]
    wait_idle(listener)
    assert Instance.objects.count() == 0
    assert list(get_storage().keys()) == []
    assert list(get_storage().staging_dir.iterdir()) == []
    assert AuditEvent.objects.get(action="store").outcome == "failure"


def test_a_data_set_whose_uids_differ_from_the_request_is_refused(
    listener: DicomListener, send_as_is: None, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_instance(StudySpec(), "CT")))
    ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.999")  # the C-STORE request's Affected SOP Instance UID
    path = tmp_path / "liar.dcm"
    ds.save_as(path)  # as it is: enforce_file_format would correct the meta
    assert pynetdicom_store(listener, [str(path)]) == [0xA900]
    wait_idle(listener)
    assert Instance.objects.count() == 0


def test_a_peer_may_not_add_to_a_study_of_another_site(
    listener: DicomListener, sites: dict[str, Site], send_as_is: None, tmp_path: Path
) -> None:
    spec = StudySpec(patient_id="DIMSE-5")
    theirs, ours = make_series(spec, "CT", count=2)
    (path,) = write_files(tmp_path, [theirs])
    store_instance(stage_file(get_storage(), path), sender=Sender(site=sites["elsewhere"]))
    path2 = tmp_path / "ours.dcm"
    path2.write_bytes(ours)
    assert pynetdicom_store(listener, [str(path2)], title="CT1") == [0x0124]
    assert pynetdicom_store(listener, [str(path2)], title="OTHER") == [0x0000]
    wait_idle(listener)
    assert Study.objects.get(study_instance_uid=spec.study_uid).number_of_instances == 2


# --- The management command, as a real process ---


def test_the_command_serves_concurrent_senders_into_one_study_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real process on its own SQLite file (WAL, busy timeout), as deployed."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PACS_DATA_DIR=str(tmp_path / "data"), SECRET_KEY="dimse-test", DJANGO_SETTINGS_MODULE="pacs.settings")
    env.update(PACS_DIMSE_ALLOWED="CT1@127.0.0.1=general", LOG_LEVEL="WARNING")

    def manage(*args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "-v", "0")
    manage("shell", "-v", "0", "-c", "from archive.models import Site; Site.objects.create(code='general', name='G')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "dicom_listener", "--host", "127.0.0.1", "--port", port, "--ae", "ARCHIVE"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first == "DICOM device CT1@127.0.0.1 added from PACS_DIMSE_ALLOWED (store only)\n"
        assert second.startswith("DICOM listener ARCHIVE on 127.0.0.1:")
        assert dcmtk("echoscu", "-aet", "CT1", "-aec", "ARCHIVE", "127.0.0.1", port).returncode == 0
        assert dcmtk("echoscu", "-aet", "CT2", "-aec", "ARCHIVE", "127.0.0.1", port).returncode != 0
        spec = StudySpec(patient_id="DIMSE-6")
        senders = []
        for n in range(3):
            folder = tmp_path / f"s{n}"
            folder.mkdir()
            files = write_files(folder, make_series(spec, "CT", count=5, size=64))
            args = ["-v", "-nh", "-aet", "CT1", "-aec", "ARCHIVE", "127.0.0.1", port, *files]
            senders.append(subprocess.Popen([STORESCU, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outputs = [p.communicate(timeout=120)[0].decode() for p in senders]
        assert [o.count("Received Store Response (Success)") for o in outputs] == [5, 5, 5], outputs
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    # PACS_DIMSE_ALLOWED bootstrapped the device, store only, bound to its address.
    listed = manage("dicom_device", "list").splitlines()
    assert listed[1].split() == ["CT1", "127.0.0.1", "general", "store", "yes", "Added", "from", "PACS_DIMSE_ALLOWED"]
    code = (
        "from archive.models import Study; "
        f"s = Study.objects.get(study_instance_uid={spec.study_uid!r}); "
        "print(s.number_of_instances, s.number_of_series, s.site.code, "
        "sum(x.instances.count() for x in s.series.all()))"
    )
    assert manage("shell", "-v", "0", "-c", code).split() == ["15", "3", "general", "15"]


def test_it_accepts_storage_in_the_first_proposed_compressed_syntax_and_verification(
    listener: DicomListener,
) -> None:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, [JPEG2000Lossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="PACS")
    accepted = {cx.abstract_syntax: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
    assert accepted == {CTImageStorage: JPEG2000Lossless, Verification: ImplicitVRLittleEndian}
    assoc.release()


# --- Hostile input: refused on its own, audited, nothing left behind (STOW-RS: test_ingest_hostile.py) ---


def assert_refused_without_a_trace() -> None:
    assert not Instance.objects.exists()
    assert list(get_storage().keys()) == [] and list(get_storage().staging_dir.iterdir()) == []
    assert AuditEvent.objects.get(action="store").outcome == "failure"


def test_a_truncated_data_set_gets_a_failure_status_and_stores_nothing(
    listener: DicomListener, send_as_is: None, tmp_path: Path
) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(make_instance(StudySpec(patient_id="DIMSE-7"), "CT", size=32)[:-1000])
    assert pynetdicom_store(listener, [str(path)]) == [0xC000]
    wait_idle(listener)
    assert_refused_without_a_trace()


def test_a_value_the_index_refuses_gets_a_failure_status_and_an_audit_record(
    listener: DicomListener, send_as_is: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest.parse_instance

    def beyond_64_bits(path: Any, **options: Any) -> Any:
        parsed = real(path, **options)
        parsed.index = replace(parsed.index, instance_number=10**30)  # SQLite: OverflowError; PostgreSQL: DataError
        return parsed

    monkeypatch.setattr(ingest, "parse_instance", beyond_64_bits)
    (path,) = write_files(tmp_path, [make_instance(StudySpec(patient_id="DIMSE-8"), "CT")])
    assert pynetdicom_store(listener, [path]) == [0xC000]
    wait_idle(listener)
    assert_refused_without_a_trace()


@pytest.mark.parametrize("error", [OperationalError("database is locked"), RuntimeError("a bug of ours")])
def test_a_failure_of_the_index_or_the_archive_gets_out_of_resources_and_an_audit_record(
    listener: DicomListener, send_as_is: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def failing(*args: Any) -> int:
        raise error

    monkeypatch.setattr(ingest.IndexWriter, "add", failing)
    (path,) = write_files(tmp_path, [make_instance(StudySpec(patient_id="DIMSE-9"), "CT")])
    assert pynetdicom_store(listener, [path]) == [0xA700]
    wait_idle(listener)
    assert_refused_without_a_trace()


def test_an_association_cut_in_the_middle_of_a_c_store_leaves_nothing_visible(listener: DicomListener) -> None:
    """The sender dies halfway through the data set: no row, no object, no staging file, and the node keeps serving."""
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu import P_DATA_TF

    ds = pydicom.dcmread(io.BytesIO(make_instance(StudySpec(patient_id="DIMSE-CUT"), "CT", size=256)))
    body = io.BytesIO()
    pydicom.dcmwrite(body, ds, implicit_vr=False, little_endian=True)  # the data set alone, no File Meta
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="PACS")
    assert assoc.is_established
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 2
    primitive.DataSet = io.BytesIO(body.getvalue())
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    context_id = assoc.accepted_contexts[0].context_id
    pdus = list(message.encode_msg(context_id, 16_384))
    assert len(pdus) > 4  # a command and a data set in several fragments
    raw = assoc.dul.socket.socket
    assert raw is not None
    for p_data in pdus[: len(pdus) // 2]:
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        raw.sendall(pdu.encode())
    raw.shutdown(socket.SHUT_RDWR)  # the modality loses power
    raw.close()
    wait_idle(listener)
    assert not Instance.objects.exists()
    assert list(get_storage().keys()) == [] and list(get_storage().staging_dir.iterdir()) == []
    assert not AuditEvent.objects.filter(action="store").exists()
    echo = scu().associate("127.0.0.1", listener.port, ae_title="PACS")
    assert echo.is_established and int(echo.send_c_echo().Status) == 0x0000
    echo.release()


def test_an_object_over_the_size_limit_gets_out_of_resources_and_stores_nothing(
    devices: dict[str, DicomDevice], settings: Any, tmp_path: Path
) -> None:
    settings.PACS_STOW_MAX_BYTES = 50_000
    small = DicomListener("PACS", host="127.0.0.1", port=0)
    small.start()
    try:
        path = tmp_path / "big.dcm"
        path.write_bytes(make_instance(StudySpec(patient_id="DIMSE-BIG"), "CT", size=256))  # 128 KiB of pixels
        assert pynetdicom_store(small, [str(path)]) == [0xA700]
        wait_idle(small)
    finally:
        small.stop()
    assert_refused_without_a_trace()
