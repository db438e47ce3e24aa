"""Fixtures of the DICOM node's tests: two sites, their devices, and a listener on a free port."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from archive.dimse.listener import DicomListener
from archive.models import DicomDevice, Site


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
