"""``scripts/run.sh`` (``make run``) starts the web server, the DICOM node and the task worker, and stops them all.

The real script on a scratch data folder (SQLite), free ports, no demo studies:
the web server answers /health, the node answers DCMTK's echoscu (unknown
callers may echo: ``PACS_DIMSE_REJECT_UNKNOWN=false``, as no device is
registered), the worker runs; SIGTERM to the script leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo.extend(children.get(child, []))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(what: str, check: object, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.fixture
def run_sh(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PACS_DIMSE_ALLOWED")}
    web, dimse = free_port(), free_port()
    env.update(
        PACS_DATA_DIR=str(tmp_path / "data"),
        SECRET_KEY="run-sh-test",
        PORT=str(web),
        PACS_DIMSE_PORT=str(dimse),
        PACS_DEMO="0",
        PACS_DIMSE_REJECT_UNKNOWN="false",
        WEB_WORKERS="1",
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        ["scripts/run.sh"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc, web, dimse
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_run_sh_starts_the_web_server_the_dicom_node_and_the_worker_and_stops_them_all(
    run_sh: tuple[subprocess.Popen[bytes], int, int], tmp_path: Path
) -> None:
    proc, web, dimse = run_sh

    def healthy() -> bool:
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/health", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def echoes() -> bool:
        done = subprocess.run(
            ["/usr/bin/echoscu", "-aet", "ANYONE", "-aec", "PACS", "127.0.0.1", str(dimse)], capture_output=True
        )
        return done.returncode == 0

    wait_for("/health", healthy)
    wait_for("C-ECHO", echoes, timeout=60)
    children = descendants(proc.pid)
    commands = list(children.values())
    assert any("gunicorn" in c for c in commands), commands
    assert any("manage.py dicom_listener" in c for c in commands), commands
    worker = [pid for pid, c in children.items() if "manage.py db_worker" in c]
    assert len(worker) == 1 and alive(worker[0]), commands

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    wait_for("every child to be gone", lambda: not any(alive(pid) for pid in children), timeout=30)
    log = (tmp_path / "run.log").read_text()
    assert f"DICOM node PACS on 127.0.0.1:{dimse}" in log
