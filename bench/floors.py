#!/usr/bin/env python3
"""What a Python WSGI server costs before the archive does anything: the floors under our figures.

Starts gunicorn, configured as ``make run`` configures it (gthread workers),
on a bare WSGI application with no Django, no database and no DICOM, and
times from the benchmark's side of the socket (``http.client``, keep-alive,
as ``../shared/bench/dicomweb_bench.py`` does):

- ``get_small``: a 1 KiB JSON answer (the floor under a QIDO search);
- ``get_512k``: a 512 KiB answer in three pieces, as a multipart frame is
  sent (the floor under one raw frame of the benchmark's 512×512 CT images);
- ``post_512k``: a 512 KiB body read and dropped (the floor under one
  single-instance STOW, before any storage);
- ``post_512k_durable``: the same body written to a new file and
  ``fdatasync``-ed, as any archive that acknowledges only durable objects
  must, Orthanc included (the floor under a durable single-instance STOW).

Compare each with the Orthanc figure it sits under, from the same machine
and preferably the same hour::

    .venv/bin/python bench/floors.py [--rounds 400]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

APP = """
import os
SMALL = b'[{"00080050":{"vr":"SH","Value":["A1"]}}]' * 24
FRAME = os.urandom(524288)
HEAD, TAIL = b"--b\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n", b"\\r\\n--b--\\r\\n"
SPOOL = os.environ["FLOORS_SPOOL"]

def _read_body(environ):
    left, source, parts = int(environ.get("CONTENT_LENGTH") or 0), environ["wsgi.input"], []
    while left:
        chunk = source.read(min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return parts

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/small":
        body = [SMALL]
    elif path == "/frame":
        body = [HEAD, FRAME, TAIL]
    elif path == "/post":
        _read_body(environ)
        body = [b'{"ok":true}']
    elif path == "/durable":
        fd = os.open(os.path.join(SPOOL, "object"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in _read_body(environ):
                os.write(fd, chunk)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        body = [b'{"ok":true}']
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(sum(len(b) for b in body)))])
    return body
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median_ms(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        conn.request(method, path, body=body, headers={"Accept-Encoding": "identity"})
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - t0)
        assert response.status == 200, response.status
    return statistics.median(times[rounds // 10 :]) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pacs-floors-") as work:
        (Path(work) / "floors_app.py").write_text(APP)
        port = free_port()
        env = {**os.environ, "FLOORS_SPOOL": work, "PORT": str(port), "HOST": "127.0.0.1", "WEB_LOG_LEVEL": "warning"}
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "scripts" / "gunicorn.conf.py"),
             "--chdir", work, "floors_app:application"],
            env=env,
        )  # fmt: skip
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(100):
                try:
                    conn.request("GET", "/small")
                    conn.getresponse().read()
                    break
                except OSError:
                    conn.close()
                    time.sleep(0.1)
            body = os.urandom(524288 + 400)
            figures = {
                "get_small": median_ms(conn, "GET", "/small", None, args.rounds),
                "get_512k": median_ms(conn, "GET", "/frame", None, args.rounds),
                "post_512k": median_ms(conn, "POST", "/post", body, args.rounds),
                "post_512k_durable": median_ms(conn, "POST", "/durable", body, args.rounds),
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{'floor (bare gunicorn, no Django)':36s} {'median ms':>10s}")
    for name, value in figures.items():
        print(f"{name:36s} {value:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
