"""STOW-RS bodies sent chunked (``Transfer-Encoding: chunked``, no Content-Length).

A client that streams what it has not measured (dicomweb-client with
``chunk_size``, requests with a generator) sends its body in chunks. A real
gunicorn decodes them; the archive must read the body to its end, store what
it holds, and still refuse a body over the size limit, leaving nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import RequestFactory

from archive.dicom.synthetic import StudySpec, make_series
from archive.dicomweb.stow import BATCH
from archive.models import Instance
from tests.archive.ingest.test_crash import Server, database_url, prepare_server  # noqa: F401 - fixture re-used
from tests.conftest import bearer_client

pytestmark = pytest.mark.slow

LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database_url: str | None) -> Iterator[tuple[Server, str, Path]]:  # noqa: F811
    data = tmp_path_factory.mktemp("chunked")
    env, token = prepare_server(data, database_url, "chunked")
    srv = Server({**env, "PACS_STOW_MAX_BYTES": str(LIMIT)}, data / "gunicorn.log")
    srv.start()
    yield srv, token, data
    srv.stop()


def client_for(srv: Server, token: str) -> DICOMwebClient:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return DICOMwebClient(f"http://127.0.0.1:{srv.port}/dicom-web", session=session, chunk_size=4096)


def send_chunked(srv: Server, token: str, content_type: str, pieces: list[bytes]) -> tuple[int, Any]:
    """POST ``pieces`` as chunks over a plain socket, then read the answer.

    A server may answer (413) and stop reading before the body ends; the
    write then fails, but the answer is already on its way, so it is read anyway.
    """
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    head = (
        "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: {content_type}\r\nAccept: application/dicom+json\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    try:
        sock.sendall(head.encode())
        for piece in pieces:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading: its answer says why
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    sock.close()
    return response.status, json.loads(body) if body else None


def staged_files(data: Path) -> list[Path]:
    return [p for p in (data / "objects").rglob("*.part")]


def test_dicomweb_client_stores_a_series_in_chunks_and_gets_it_back_byte_for_byte(
    server: tuple[Server, str, Path],
) -> None:
    srv, token, _ = server
    spec = StudySpec(patient_id="CHUNK-1", patient_name="CHUNKED^SERIES")
    parts = make_series(spec, "CT", count=3, size=64)
    client = client_for(srv, token)
    response = client.store_instances([pydicom.dcmread(io.BytesIO(p)) for p in parts])
    assert len(response.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in response
    back = client.retrieve_study(spec.study_uid)
    sent = {str(pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID): p for p in parts}
    assert {str(ds.SOPInstanceUID) for ds in back} == set(sent)
    for ds in back:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        original = pydicom.dcmread(io.BytesIO(sent[str(ds.SOPInstanceUID)]))
        assert ds.PixelData == original.PixelData


def test_a_bare_dicom_body_sent_in_chunks_is_stored_whole(server: tuple[Server, str, Path]) -> None:
    srv, token, _ = server
    (part,) = make_series(StudySpec(patient_id="CHUNK-2"), "MR", count=1, size=64)
    pieces = [part[i : i + 1000] for i in range(0, len(part), 1000)]
    status, body = send_chunked(srv, token, "application/dicom", pieces)
    assert status == 200, body
    sop = str(pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID)
    assert body["00081199"]["Value"][0]["00081155"]["Value"] == [sop]
    study = str(pydicom.dcmread(io.BytesIO(part)).StudyInstanceUID)
    series = str(pydicom.dcmread(io.BytesIO(part)).SeriesInstanceUID)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request(
        "GET",
        f"/dicom-web/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": "application/dicom", "Authorization": f"Bearer {token}"},
    )
    got = conn.getresponse()
    assert got.status == 200
    assert hashlib.sha256(got.read()).hexdigest() == hashlib.sha256(part).hexdigest()


@pytest.mark.parametrize("multipart", [True, False])
def test_a_chunked_body_over_the_limit_gets_413_and_leaves_nothing_staged(
    server: tuple[Server, str, Path], multipart: bool
) -> None:
    srv, token, data = server
    piece = secrets.token_bytes(256 * 1024)
    count = LIMIT // len(piece) + 2
    if multipart:
        boundary = "chunky" + secrets.token_hex(4)
        pieces = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), *[piece] * count]
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    else:
        pieces, content_type = [piece] * count, "application/dicom"
    status, body = send_chunked(srv, token, content_type, pieces)
    assert status == 413, body
    assert staged_files(data) == []


def test_a_chunked_body_past_the_limit_after_a_stored_batch_lists_what_was_stored(
    server: tuple[Server, str, Path],
) -> None:
    srv, token, data = server
    good = make_series(StudySpec(patient_id="CHUNK-PARTIAL"), "CT", count=BATCH + 5, size=128)
    boundary = "partial" + secrets.token_hex(4)
    pieces = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in good]
    assert 1024 * 1024 < sum(map(len, pieces)) < LIMIT  # read in several pieces, all before the limit
    pieces.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
    pieces += [secrets.token_bytes(256 * 1024)] * 4  # the part that crosses the limit
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    status, body = send_chunked(srv, token, content_type, pieces)
    assert status == 202, body
    sops = [str(pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID) for p in good]
    assert [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]] == sops
    assert "00081198" not in body  # the part past the limit was never read whole: it cannot be named
    assert staged_files(data) == []
    ds = pydicom.dcmread(io.BytesIO(good[-1]), stop_before_pixels=True)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request(
        "GET",
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
        headers={"Accept": "application/dicom", "Authorization": f"Bearer {token}"},
    )
    got = conn.getresponse()
    assert got.status == 200
    assert got.read() == good[-1]


def test_a_chunked_body_behind_a_server_that_cannot_end_it_gets_411(db: Any, uploader: Any) -> None:
    (part,) = make_series(StudySpec(patient_id="CHUNK-3"), "CT", count=1, size=32)
    token = bearer_client(uploader).defaults["HTTP_AUTHORIZATION"]
    environ = (
        RequestFactory()
        .generic(
            "POST",
            "/dicom-web/studies",
            part,
            "application/dicom",
            HTTP_AUTHORIZATION=token,
            HTTP_ACCEPT="application/dicom+json",
            HTTP_TRANSFER_ENCODING="chunked",
        )
        .environ
    )
    del environ["CONTENT_LENGTH"]  # a chunked request has none, and wsgi.input_terminated is not set
    statuses: list[str] = []
    # As Django's test client does: the test's database connection must survive the request signals.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = WSGIHandler()(environ, lambda status, headers: statuses.append(status))
        body = b"".join(response)
        response.close()  # type: ignore[attr-defined]
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    assert statuses[0].startswith("411"), body
    assert Instance.objects.count() == 0
