"""A STOW-RS body far larger than a worker's memory budget is streamed, not held.

A real gunicorn server receives one multi-frame instance of about 300 MB,
sent by a generator so the test itself never holds it either. The peak
resident memory of every server process must stay far below the body size,
and the object must come back bit for bit, frames included.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from archive.dicom.synthetic import SOP_CLASSES, new_uid
from tests.archive.ingest.test_crash import Server, database_url, prepare_server  # noqa: F401 - fixture re-used

pytestmark = pytest.mark.slow

ROWS = COLS = 512
FRAMES = 600  # 600 × 512 × 512 × 2 bytes ≈ 300 MiB of pixel data
FRAME_BYTES = ROWS * COLS * 2
MEMORY_CEILING_MB = 200


def header_bytes(study: str, series: str, sop: str) -> bytes:
    """A Part 10 header up to and including the Pixel Data element's length."""
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASSES["CT"]
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.Modality = "LARGE^BODY", "LARGE-1", "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLS, FRAMES
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, FRAMES * FRAME_BYTES)


def frame(index: int) -> bytes:
    """Frame ``index`` (0-based): a recognisable, cheap pattern."""
    return struct.pack("<H", index % 4096) * (FRAME_BYTES // 2)


def peak_rss_mb(pgid: int) -> float:
    """The highest VmHWM among the server's processes (master and workers)."""
    peak = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return peak


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str | None) -> Iterator[tuple[Server, str]]:  # noqa: F811
    data = tmp_path_factory.mktemp("large")
    env, token = prepare_server(data, database_url, "large")
    srv = Server(env, data / "gunicorn.log")
    srv.start()
    yield srv, token
    srv.stop()


def test_a_300_mb_instance_streams_through_in_bounded_memory_and_comes_back_identical(
    server: tuple[Server, str],
) -> None:
    srv, token = server
    assert srv.proc is not None
    study, series, sop = new_uid(), new_uid(), new_uid()
    head = header_bytes(study, series, sop)
    boundary = "large" + secrets.token_hex(6)
    opening = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    closing = f"\r\n--{boundary}--\r\n".encode()
    sent = hashlib.sha256(head)
    for i in range(FRAMES):
        sent.update(frame(i))

    def body() -> Iterator[bytes]:
        yield opening + head
        for i in range(FRAMES):
            yield frame(i)
        yield closing

    length = len(opening) + len(head) + FRAMES * FRAME_BYTES + len(closing)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)
    conn.request(
        "POST",
        "/dicom-web/studies",
        body(),
        {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Content-Length": str(length),
            "Accept": "application/dicom+json",
            "Authorization": f"Bearer {token}",
        },
    )
    response = conn.getresponse()
    payload = json.loads(response.read())
    assert response.status == 200, payload
    assert payload["00081199"]["Value"][0]["00081155"]["Value"] == [sop]
    peak = peak_rss_mb(srv.proc.pid)
    print(f"large STOW: {length / 2**20:.0f} MiB body, server peak RSS {peak:.0f} MiB")
    assert peak < MEMORY_CEILING_MB, f"a server process grew to {peak:.0f} MiB for a {length / 2**20:.0f} MiB body"

    base = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom"}
    conn.request("GET", base, headers=headers)
    response = conn.getresponse()
    assert response.status == 200
    received = hashlib.sha256()
    while chunk := response.read(1 << 20):
        received.update(chunk)
    assert received.hexdigest() == sent.hexdigest()

    frame_headers = {"Authorization": f"Bearer {token}", "Accept": "application/octet-stream"}
    conn.request("GET", f"{base}/frames/{FRAMES}", headers=frame_headers)
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == frame(FRAMES - 1)
    conn.close()
