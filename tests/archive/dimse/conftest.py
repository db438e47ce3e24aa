"""Fixtures of the DICOM node's tests: two sites, their devices, a listener on a free port, stored studies.

The studies of the query and retrieve tests (Jane, John and another Doe)
arrive through the node's own C-STORE (:func:`send`); :func:`qr_archive`
adds the workstations that may query and retrieve them (C-GET, C-MOVE), and
:func:`many_slices` a 300-instance study that a C-CANCEL interrupts.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from archive.dicom.synthetic import StudySpec, make_instance, new_uid
from archive.dimse.listener import DicomListener
from archive.ingest.store import Sender, store_instances
from archive.models import DicomDevice, Site
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file
from audit.models import AuditEvent

JANE = StudySpec(patient_name="DOE^JANE", patient_id="PAT-A1", study_date="20240115", accession="ACC-A1")
JOHN = StudySpec(patient_name="SMITH^JOHN", patient_id="PAT-A2", study_date="20230310", accession="ACC-A2")
OTHER = StudySpec(patient_name="DOE^JOHN", patient_id="PAT-B1", study_date="20240116", accession="ACC-B1")
MANY_SLICES = 300  # instances of the study a C-CANCEL interrupts


@pytest.fixture
def sites(db: Any) -> dict[str, Site]:
    return {
        "general": Site.objects.create(code="general", name="General Hospital"),
        "elsewhere": Site.objects.create(code="elsewhere", name="St Elsewhere"),
    }


@pytest.fixture
def devices(sites: dict[str, Site]) -> dict[str, DicomDevice]:
    """CT1 (bound to 127.0.0.1) and MR2 store into "general", OTHER into "elsewhere"."""
    return {
        "CT1": DicomDevice.objects.create(ae_title="CT1", host="127.0.0.1", site=sites["general"], may_store=True),
        "MR2": DicomDevice.objects.create(ae_title="MR2", site=sites["general"], may_store=True),
        "OTHER": DicomDevice.objects.create(ae_title="OTHER", site=sites["elsewhere"], may_store=True),
    }


@pytest.fixture
def listener(devices: dict[str, DicomDevice]) -> Iterator[DicomListener]:
    scp = DicomListener("PACS", host="127.0.0.1", port=0)
    scp.start()
    yield scp
    scp.stop()


def wait_idle(scp: DicomListener, timeout: float = 10.0) -> None:
    """Wait until every association has ended and been audited."""
    deadline = time.monotonic() + timeout
    while scp.ae.active_associations or scp.sessions:
        assert time.monotonic() < deadline, "associations did not end"
        time.sleep(0.02)


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([f"/usr/bin/{tool}", *args], capture_output=True, text=True, timeout=120)


def scu(title: str = "CT1") -> AE:
    """A pynetdicom SCU proposing Verification."""
    ae = AE(ae_title=title)
    ae.add_requested_context(Verification)
    return ae


def send(port: int, title: str, files: list[bytes], tmp_path: Path) -> None:
    """C-STORE ``files`` to the node as ``title``, each answered with success."""
    ae = AE(ae_title=title)
    paths = []
    for data in files:
        path = tmp_path / f"{new_uid()}.dcm"
        path.write_bytes(data)
        paths.append(path)
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        for path in paths:
            assert assoc.send_c_store(str(path)).Status == 0x0000
    finally:
        assoc.release()


def identifier(keys: dict[str, Any]) -> Dataset:
    """A query or retrieve identifier with ``keys`` (keyword: value)."""
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def data_set_bytes(part10: bytes) -> bytes:
    """The data set of a Part 10 object: what follows its File Meta Information."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    # Preamble and "DICM" (132 bytes), the group length element (12 bytes), then the group it counts.
    return part10[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


@pytest.fixture
def qr_archive(listener: DicomListener, sites: dict[str, Site], tmp_path: Path) -> dict[str, Any]:
    """Jane (CT 2 + MR 1) and John (CT 1) at "general", another Doe at "elsewhere".

    WS1 and WS2 retrieve from each site; WSQ of "general" may only query.
    ``jane``: Jane's Part 10 files by SOP Instance UID.
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


def store_slices(site: Site, count: int, tmp_path: Path) -> tuple[StudySpec, str]:
    """A one-series CT study of ``count`` tiny instances at ``site``, stored directly (faster than C-STORE).

    Returns the study and its series UID.
    """
    spec = StudySpec(patient_name="MANY^SLICES", patient_id="PAT-M1", study_date="20240201", accession="ACC-M1")
    series = new_uid()
    staged = []
    for number in range(1, count + 1):
        path = tmp_path / f"{number}.dcm"
        path.write_bytes(make_instance(spec, "CT", series_uid=series, instance_number=number, size=8))
        staged.append(stage_file(get_storage("hot"), path))
    assert all(r.ok for r in store_instances(staged, sender=Sender(site=site)))
    return spec, series


@pytest.fixture
def many_slices(sites: dict[str, Site], tmp_path: Path) -> StudySpec:
    """A CT study of :data:`MANY_SLICES` instances at "general" (:func:`store_slices`)."""
    return store_slices(sites["general"], MANY_SLICES, tmp_path)[0]


def cancel_after_first_pending(assoc: Association, request: Callable[[int], Iterator[tuple[Dataset, Any]]]) -> Dataset:
    """The final status of a C-GET or C-MOVE (``request(msg_id)``) sent a real C-CANCEL after its first Pending.

    The association is released at the end.
    """
    msg_id = 7
    statuses: list[Dataset] = []
    try:
        context_id = assoc.accepted_contexts[0].context_id
        for status, _ in request(msg_id):
            statuses.append(status)
            if len(statuses) == 1:
                assoc.send_c_cancel(msg_id, context_id)
    finally:
        assoc.release()
    return statuses[-1]


def assert_cancelled_with_counts(listener: DicomListener, final: Dataset) -> None:
    """``final`` says Cancel (FE00) with the sub-operations done and left, and the audit trail agrees."""
    assert int(final.Status) == 0xFE00
    assert 1 <= final.NumberOfCompletedSuboperations < MANY_SLICES
    assert final.NumberOfRemainingSuboperations == MANY_SLICES - final.NumberOfCompletedSuboperations
    wait_idle(listener)
    (result,) = AuditEvent.objects.filter(action="retrieve_result")
    assert (result.outcome, result.detail["status"]) == ("cancelled", "0xFE00")
    assert result.detail["completed"] == final.NumberOfCompletedSuboperations
