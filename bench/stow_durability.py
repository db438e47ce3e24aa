#!/usr/bin/env python3
"""What durable commits cost a STOW-RS: single-instance uploads of 512 KiB, one client and four.

Sets up a fresh data folder (SQLite, local files, ``PACS_FSYNC`` on, as
``make run`` and ``bench/side_by_side.sh`` do), starts gunicorn with
``scripts/gunicorn.conf.py`` and times from the client's side of the socket
(``http.client``, keep-alive):

- ``sequential``: N requests one after another, one 512×512 16-bit CT
  instance each (a new SOP Instance every time);
- ``concurrent``: N requests from four client threads at once;
- ``qido``: N sequential searches for the study (each one audited, so each
  commits a record: what a durable audit trail costs a read).

It prints the median and 90th percentile latency and the throughput of
each. Run it from the checkout to measure (``--repo`` for another one, e.g.
an older commit unpacked with ``git archive``)::

    .venv/bin/python bench/stow_durability.py [--requests 200] [--repo .]
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archive.dicom.synthetic import StudySpec, make_instance  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body_of(instance: bytes, boundary: str) -> bytes:
    return (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + instance
        + f"\r\n--{boundary}--\r\n".encode()
    )


def timed(
    port: int, method: str, path: str, headers: dict[str, str], bodies: list[bytes | None], times: list[float]
) -> None:
    """Send one request per body on one keep-alive connection; append each one's latency to ``times``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for body in bodies:
        start = time.perf_counter()
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"{method} {path} answered {response.status}")
        times.append(time.perf_counter() - start)
    conn.close()


def report(label: str, times: list[float], wall: float) -> None:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[int(len(ms) * 0.9) - 1]
    median = statistics.median(ms)
    print(f"{label:<11} {len(ms):>5} req  median {median:7.2f} ms  p90 {p90:7.2f} ms  {len(ms) / wall:7.1f} req/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose server is measured")
    args = parser.parse_args()
    repo = args.repo.resolve()
    py = str(ROOT / ".venv" / "bin" / "python")
    data = Path(tempfile.mkdtemp(prefix="stow-durability-", dir=os.environ.get("BENCH_DIR")))
    port = free_port()
    env = {
        **os.environ,
        "PACS_DATA_DIR": str(data),
        "SECRET_KEY": secrets.token_hex(16),
        "PACS_FSYNC": "true",
        "DJANGO_SETTINGS_MODULE": "pacs.settings",
        "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(16),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_LOG_LEVEL": "warning",
    }

    def manage(*command: str) -> str:
        return subprocess.run(
            [py, "manage.py", *command], cwd=repo, env=env, check=True, capture_output=True, text=True
        ).stdout

    manage("migrate", "--noinput", "-v0")
    manage("createsuperuser", "--noinput", "--username", "bench", "--email", "bench@example.org")
    token = manage("issue_token", "bench", "--name", "bench").strip().split()[-1]
    n = args.requests
    spec = StudySpec(patient_id="BENCH")
    instances = [make_instance(spec, "CT", instance_number=i + 1, size=512) for i in range(2 * n)]
    boundary = "durability-bench"
    bodies: list[bytes | None] = [body_of(instance, boundary) for instance in instances]
    stow = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
        "Authorization": f"Bearer {token}",
    }
    qido = {"Accept": "application/dicom+json", "Authorization": f"Bearer {token}"}
    server = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "scripts/gunicorn.conf.py", "pacs.wsgi:application"],
        cwd=repo,
        env=env,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        print(f"{repo} on {data}: {len(instances[0]) // 1024} KiB per instance")
        times: list[float] = []
        timed(port, "POST", "/dicom-web/studies", stow, bodies[:5], [])  # warm the workers
        start = time.perf_counter()
        timed(port, "POST", "/dicom-web/studies", stow, bodies[5:n], times)
        report("sequential", times, time.perf_counter() - start)
        times = []
        share = [bodies[n + i :: 4][: n // 4] for i in range(4)]
        threads = [
            threading.Thread(target=timed, args=(port, "POST", "/dicom-web/studies", stow, s, times)) for s in share
        ]
        start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        report("concurrent", times, time.perf_counter() - start)
        times = []
        start = time.perf_counter()
        timed(port, "GET", "/dicom-web/studies?PatientID=BENCH", qido, [None] * n, times)
        report("qido", times, time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
