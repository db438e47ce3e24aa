"""The crash test: SIGKILL the server in the middle of concurrent STOW-RS uploads.

A real gunicorn (the ``make run`` configuration) serves a fresh data folder
and database (SQLite by default, a new PostgreSQL database when the suite runs
with ``DATABASE_URL``). Four client threads upload continuously; once a share
of the requests has been acknowledged, the whole server process group gets
SIGKILL. After a restart, every acknowledged instance (a 200/202 response
listing it in (0008,1199) Referenced SOP Sequence) must be in the index and on
disk with its original SHA-256 and retrievable over WADO-RS; no index row may
point at a missing or partial file; and ``sweep`` must clear what the crash
left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest

from archive.dicom.synthetic import StudySpec, make_series
from tests.conftest import multipart

REPO = Path(__file__).resolve().parents[3]
THREADS = 4
REQUESTS_PER_THREAD = 25
INSTANCES_PER_REQUEST = 3
KILL_AFTER_ACKS = 30  # of THREADS * REQUESTS_PER_THREAD requests

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A gunicorn process group serving one data folder and database."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**self.env, "HOST": "127.0.0.1", "PORT": str(self.port), "WEB_WORKERS": "2", "WEB_THREADS": "4"}
        gunicorn = Path(sys.executable).parent / "gunicorn"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(gunicorn), "-c", "scripts/gunicorn.conf.py", "pacs.wsgi:application"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("gunicorn did not become healthy:\n" + self.log.read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL the master and every worker at once, as a crash would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def prepare_server(data: Path, database_url: str | None, name: str) -> tuple[dict[str, str], str]:
    """Environment for a server on its own data folder, migrated, with a superuser and its token."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        PACS_DATA_DIR=str(data),
        SECRET_KEY=f"{name}-test-" + secrets.token_hex(8),
        PACS_FSYNC="true",
        DJANGO_SETTINGS_MODULE="pacs.settings",
        DJANGO_SUPERUSER_PASSWORD=secrets.token_urlsafe(16),
        LOG_LEVEL="WARNING",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "createsuperuser", "--noinput", "--username", name, "--email", f"{name}@example.org")
    return env, manage(env, "issue_token", name, "--name", f"{name}-test").strip()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str | None]:
    """None for SQLite; a brand-new PostgreSQL database when the suite runs on PostgreSQL."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        yield None
        return
    import psycopg

    name = "pacs_crash_" + secrets.token_hex(4)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def upload(port: int, token: str, bodies: list[tuple[bytes, str]], stop: threading.Event, out: dict[str, Any]) -> None:
    """Send requests until done or the server dies; record what was acknowledged."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for body, ctype in bodies:
        try:
            conn.request(
                "POST",
                "/dicom-web/studies",
                body,
                {"Content-Type": ctype, "Accept": "application/dicom+json", "Authorization": f"Bearer {token}"},
            )
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            out["failed"] += 1
            conn.close()
            if stop.is_set():
                return
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        if response.status in (200, 202):
            referenced = json.loads(payload).get("00081199", {}).get("Value", [])
            out["acked"].extend(item["00081155"]["Value"][0] for item in referenced)
            out["ack_requests"] += 1
        else:
            out["refused"].append((response.status, payload[:200]))
    conn.close()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump_index(env: dict[str, str], target: Path) -> dict[str, Any]:
    code = (
        "import json; from archive.models import Instance, Study; "
        "rows = list(Instance.objects.values('sop_instance_uid', 'storage_key', 'tier', 'sha256', 'size',"
        " 'series__series_instance_uid', 'series__study__study_instance_uid')); "
        "studies = {s.study_instance_uid: [s.number_of_instances, s.instances] for s in "
        "Study.objects.annotate(instances=__import__('django.db.models', fromlist=['Count'])"
        ".Count('series__instances'))}; "
        f"open({str(target)!r}, 'w').write(json.dumps({{'rows': rows, 'studies': studies}}))"
    )
    manage(env, "shell", "-v", "0", "-c", code)
    return dict(json.loads(target.read_text()))


@dataclass
class CrashOutcome:
    originals: dict[str, bytes]
    acked: list[str]
    failed_requests: int
    refused: list[Any]
    before_sweep: dict[str, Any]
    files_before_sweep: dict[str, str]
    staging_before_sweep: list[str]
    after_sweep: dict[str, Any]
    files_after_sweep: dict[str, str]
    staging_after_sweep: list[str]
    objects: Path
    server: Server
    token: str


def stored_files(objects: Path) -> dict[str, str]:
    """SHA-256 of every object file outside staging, by key."""
    return {
        str(p.relative_to(objects / "hot")): sha256_of(p)
        for p in (objects / "hot").rglob("*.dcm")
        if ".staging" not in p.parts
    }


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory, database_url: str | None) -> Iterator[CrashOutcome]:
    data = tmp_path_factory.mktemp("crash")
    env, token = prepare_server(data, database_url, "crash")

    originals: dict[str, bytes] = {}
    per_thread: list[list[tuple[bytes, str]]] = []
    for t in range(THREADS):
        bodies = []
        for r in range(REQUESTS_PER_THREAD):
            spec = StudySpec(patient_id=f"CRASH-{t}", patient_name=f"CRASH^T{t}R{r}")
            parts = make_series(spec, "CT", count=INSTANCES_PER_REQUEST, size=128)
            for raw in parts:
                originals[pydicom.dcmread(__import__("io").BytesIO(raw), stop_before_pixels=True).SOPInstanceUID] = raw
            bodies.append(multipart(parts, boundary=f"crash{t}x{r}"))
        per_thread.append(bodies)

    server = Server(env, data / "gunicorn.log")
    server.start()
    stop = threading.Event()
    results = [{"acked": [], "failed": 0, "refused": [], "ack_requests": 0} for _ in range(THREADS)]
    threads = [
        threading.Thread(target=upload, args=(server.port, token, per_thread[t], stop, results[t]), daemon=True)
        for t in range(THREADS)
    ]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 120
    while sum(int(r["ack_requests"]) for r in results) < KILL_AFTER_ACKS and time.monotonic() < deadline:
        if not any(th.is_alive() for th in threads):
            break
        time.sleep(0.005)
    stop.set()
    server.kill()
    for th in threads:
        th.join(timeout=120)
    acked = [sop for r in results for sop in r["acked"]]

    server.start()  # same data, same database, new processes
    objects = data / "objects"
    before = dump_index(env, data / "before.json")
    files_before = stored_files(objects)
    staging_before = [p.name for p in (objects / "hot" / ".staging").glob("*")]
    manage(env, "sweep", "--grace-minutes", "0")
    after = dump_index(env, data / "after.json")
    outcome = CrashOutcome(
        originals=originals,
        acked=acked,
        failed_requests=sum(int(r["failed"]) for r in results),
        refused=[x for r in results for x in r["refused"]],
        before_sweep=before,
        files_before_sweep=files_before,
        staging_before_sweep=staging_before,
        after_sweep=after,
        files_after_sweep=stored_files(objects),
        staging_after_sweep=[p.name for p in (objects / "hot" / ".staging").glob("*")],
        objects=objects,
        server=server,
        token=token,
    )
    yield outcome
    server.stop()


def test_the_kill_lands_in_the_middle_of_the_batch(crash: CrashOutcome) -> None:
    total = THREADS * REQUESTS_PER_THREAD * INSTANCES_PER_REQUEST
    print(
        f"crash: {len(crash.acked)}/{total} acknowledged, {crash.failed_requests} requests cut off, "
        f"{len(crash.before_sweep['rows'])} indexed, {len(crash.files_before_sweep)} files, "
        f"{len(crash.staging_before_sweep)} staging leftovers before sweep"
    )
    assert crash.refused == []
    assert KILL_AFTER_ACKS * INSTANCES_PER_REQUEST <= len(crash.acked) < total
    assert crash.failed_requests >= 1, "no request was in flight when the server died"


def test_every_acknowledged_instance_survives_with_its_original_sha256(crash: CrashOutcome) -> None:
    assert crash.acked and crash.before_sweep["rows"]
    rows = {r["sop_instance_uid"]: r for r in crash.after_sweep["rows"]}
    for sop in crash.acked:
        original = hashlib.sha256(crash.originals[sop]).hexdigest()
        assert sop in rows, f"acknowledged instance {sop} is not in the index"
        assert rows[sop]["sha256"] == original
        assert crash.files_after_sweep[rows[sop]["storage_key"]] == original


def test_no_index_row_points_at_a_missing_or_partial_file(crash: CrashOutcome) -> None:
    assert crash.acked and crash.before_sweep["rows"]
    for row in crash.before_sweep["rows"]:
        assert crash.files_before_sweep.get(row["storage_key"]) == row["sha256"], row
        assert row["sha256"] == hashlib.sha256(crash.originals[row["sop_instance_uid"]]).hexdigest()
        assert (crash.objects / "hot" / row["storage_key"]).stat().st_size == row["size"]
    for key, digest in crash.files_before_sweep.items():
        assert key.endswith(f".{digest[:16]}.dcm"), f"{key} holds bytes that are not the object it names"
    for uid, (counted, actual) in crash.before_sweep["studies"].items():
        assert counted == actual, f"study {uid} counts {counted} instances but has {actual}"


def test_sweep_clears_staging_leftovers_and_indexes_the_objects_the_crash_left_without_rows(
    crash: CrashOutcome,
) -> None:
    indexed = {r["storage_key"] for r in crash.after_sweep["rows"]}
    assert crash.staging_after_sweep == []
    assert set(crash.files_after_sweep) == indexed == set(crash.files_before_sweep)
    assert {r["storage_key"] for r in crash.before_sweep["rows"]} <= indexed


def parse_multipart(body: bytes, content_type: str) -> list[bytes]:
    boundary = next(
        p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().lower().startswith("boundary=")
    )
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload.removesuffix(b"\r\n"))
    return parts


def test_acknowledged_instances_are_retrievable_byte_for_byte_over_wado_rs(crash: CrashOutcome) -> None:
    assert crash.acked and crash.before_sweep["rows"]
    rows = {r["sop_instance_uid"]: r for r in crash.after_sweep["rows"]}
    conn = http.client.HTTPConnection("127.0.0.1", crash.server.port, timeout=60)
    for sop in crash.acked:
        row = rows[sop]
        url = (
            f"/dicom-web/studies/{row['series__study__study_instance_uid']}"
            f"/series/{row['series__series_instance_uid']}/instances/{sop}"
        )
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        conn.request("GET", url, headers={"Accept": accept, "Authorization": f"Bearer {crash.token}"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body[:300]
        parts = parse_multipart(body, response.getheader("Content-Type", ""))
        assert len(parts) == 1
        assert hashlib.sha256(parts[0]).hexdigest() == hashlib.sha256(crash.originals[sop]).hexdigest()
    conn.close()
