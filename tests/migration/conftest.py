"""Fixtures of the migration tests: a real Orthanc on loopback as the legacy PACS, and our node beside it.

Orthanc (Debian's ``orthanc``) starts per test on free ports with a fresh
store, knows our node as the modality ``PACS`` (its C-MOVE destination), and
is loaded over its REST API with synthetic studies; it keeps each uploaded
Part 10 file as it received it. Our DICOM node (the listener) runs in-process
on a free port, and the legacy PACS is the registered device ``LEGACY`` of
the site "general", allowed to store.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests

from archive.dicom.synthetic import StudySpec, make_instance
from archive.dimse.listener import DicomListener
from archive.models import DicomDevice, Site

ORTHANC = "/usr/sbin/Orthanc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its REST base URL, DICOM port and AE title, and what was uploaded to it."""

    url: str
    port: int
    ae_title: str
    process: subprocess.Popen[bytes]
    uploaded: dict[str, bytes] = field(default_factory=dict)  # SOP Instance UID -> Part 10 bytes
    ids: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> Orthanc's instance id

    def upload(self, part10: bytes) -> str:
        response = requests.post(f"{self.url}/instances", data=part10, timeout=30)
        response.raise_for_status()
        uid = str(pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).SOPInstanceUID)
        self.uploaded[uid] = part10
        self.ids[uid] = response.json()["ID"]
        return uid

    def delete(self, uid: str) -> None:
        requests.delete(f"{self.url}/instances/{self.ids[uid]}", timeout=30).raise_for_status()
        del self.uploaded[uid]


def start_orthanc(directory: Path, our_port: int, **config: Any) -> Orthanc:
    http, dicom = free_port(), free_port()
    (directory / "db").mkdir(parents=True)
    settings = {
        "Name": "Legacy",
        "StorageDirectory": str(directory / "db"),
        "IndexDirectory": str(directory / "db"),
        "StorageCompression": False,
        "HttpPort": http,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "LEGACY",
        "DicomPort": dicom,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowGet": True,
        "DicomModalities": {"PACS": ["PACS", "127.0.0.1", our_port]},
        "Plugins": [],
        "SaveJobs": False,
        "StorageAccessOnFind": "Always",
        "WebDavEnabled": False,
        "HttpCompressionEnabled": False,
        **config,
    }
    (directory / "orthanc.json").write_text(json.dumps(settings))
    log = (directory / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(directory / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/system", timeout=1).raise_for_status()
            break
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"Orthanc did not start: {(directory / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.1)
    return Orthanc(url, dicom, "LEGACY", process)


@pytest.fixture
def general(db: Any) -> Site:
    return Site.objects.create(code="general", name="General Hospital")


@pytest.fixture
def legacy_device(general: Site) -> DicomDevice:
    return DicomDevice.objects.create(ae_title="LEGACY", host="127.0.0.1", site=general, may_store=True)


@pytest.fixture
def node(legacy_device: DicomDevice) -> Iterator[DicomListener]:
    scp = DicomListener("PACS", host="127.0.0.1", port=0)
    scp.bind()
    scp.start()
    yield scp
    scp.stop()


@pytest.fixture
def orthanc(node: DicomListener, tmp_path: Path) -> Iterator[Orthanc]:
    if not Path(ORTHANC).exists():
        pytest.fail("Orthanc is not installed: run `make test`, which installs Debian's orthanc package")
    server = start_orthanc(tmp_path / "orthanc", node.port)
    yield server
    server.process.terminate()
    server.process.wait(timeout=30)


_rng = np.random.default_rng(20261205)


def instance(spec: StudySpec, modality: str, series_uid: str, number: int, size: int = 32, **kw: Any) -> bytes:
    """A synthetic instance whose pixel data is its own (random), unless ``pixels`` says otherwise."""
    pixels = kw.pop("pixels", None)
    if pixels is None:
        dtype = np.uint8 if modality == "US" else np.uint16
        pixels = _rng.integers(0, 4000 if dtype is np.uint16 else 255, (size, size)).astype(dtype).tobytes()
    return make_instance(
        spec,
        modality,
        series_uid=series_uid,
        series_number=number // 1000 + 1,
        instance_number=number,
        size=size,
        extra={"PixelData": pixels},
        **kw,
    )


@dataclass
class Layout:
    """What was loaded: study UID -> (study date, {series UID: (modality, [SOP Instance UIDs])})."""

    studies: dict[str, tuple[str, dict[str, tuple[str, list[str]]]]] = field(default_factory=dict)

    def uids(self, modality: str | None = None, dates: tuple[str, str] | None = None) -> set[str]:
        found = set()
        for date, series in self.studies.values():
            if dates and not dates[0] <= date <= dates[1]:
                continue
            for mod, uids in series.values():
                if modality is None or mod == modality:
                    found.update(uids)
        return found


def load(orthanc: Orthanc, plan: list[tuple[str, list[tuple[str, int]]]], patient: str = "P") -> Layout:
    """Upload studies: each ``(study date, [(modality, instance count), ...])``."""
    layout = Layout()
    for index, (date, series_plan) in enumerate(plan):
        spec = StudySpec(
            patient_id=f"{patient}{index:03d}", study_date=date, study_time=f"{8 + index % 10:02d}{index % 60:02d}00"
        )
        series: dict[str, tuple[str, list[str]]] = {}
        for number, (modality, count) in enumerate(series_plan, start=1):
            series_uid = f"{spec.study_uid}.{number}"
            uids = [orthanc.upload(instance(spec, modality, series_uid, n)) for n in range(1, count + 1)]
            series[series_uid] = (modality, uids)
        layout.studies[spec.study_uid] = (date, series)
    return layout


#: Six studies over four days, CT, MR and CR, 260 instances.
PLAN = [
    ("20240110", [("CT", 60), ("CT", 20)]),
    ("20240110", [("MR", 30), ("MR", 30)]),
    ("20240111", [("CR", 2)]),
    ("20240112", [("CT", 50), ("MR", 20)]),
    ("20240115", [("CT", 40)]),
    ("20240115", [("CR", 3), ("CR", 5)]),
]
