"""The mover killed for real (SIGKILL of ``manage.py tiers``) again and again: nothing lost, every SHA-256 unchanged.

A data folder of its own, fsync on, a throttled mover (so kills land
mid-move), a one-second lease (so a restart does not wait long for the
dead worker's rows). After each kill a separate process checks that every
index row names a tier holding its object with the right SHA-256; then
``tiers resume`` carries on from what the killed run left, until done. Each
kill waits until the worker has recorded a step, so kills land mid-move.
Hot → cold → hot.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from archive.dicom.synthetic import StudySpec, make_instance
from tests.archive.ingest.test_crash import REPO, manage, prepare_server

CHECK = """
import hashlib
from archive.models import Instance
from archive.storage.registry import get_storage
rows = list(Instance.objects.values_list("tier", "storage_key", "sha256"))
for tier, key, sha in rows:
    with get_storage(tier).open(key) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == sha, key
tiers = ",".join(sorted({t for t, _, _ in rows}))
print(len(rows), tiers, hashlib.sha256("".join(sorted(s for _, _, s in rows)).encode()).hexdigest())
"""


def ledger(database: Path) -> dict[str, int]:
    """Moves per state, read straight from the server's SQLite file."""
    with sqlite3.connect(database, timeout=30) as db:
        rows = db.execute("SELECT state, COUNT(*) FROM archive_tiermove GROUP BY state").fetchall()
    return {"done": 0} | dict(rows)


def check(env: dict[str, str]) -> str:
    """The checker's last line (``manage.py shell`` may print its imports first)."""
    return manage(env, "shell", "-c", CHECK).strip().splitlines()[-1]


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "tiers", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_at_random_moments_of_moves_there_and_back_loses_nothing(tmp_path: Path) -> None:
    env, _ = prepare_server(tmp_path / "data", None, "mover")
    env.update(
        PACS_TIER_MOVE_BYTES_PER_SECOND=str(1_000_000),
        PACS_TIER_MOVE_GROUP="4",
        PACS_TIER_MOVE_LEASE_SECONDS="1",
        PACS_TIER_MOVE_GRACE_SECONDS="0",
        PACS_TIER_MOVE_CONCURRENCY="2",
    )
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    spec = StudySpec(study_uid=f"2.25.{uuid.uuid4().int}")
    for n in range(24):
        (incoming / f"{n}.dcm").write_bytes(make_instance(spec, instance_number=n + 1, size=256))
    hot = tmp_path / "data" / "objects" / "hot"
    # Objects placed as ingest names them, then indexed from the files alone.
    script = (
        "import hashlib, pathlib, pydicom\n"
        "from archive.storage.keys import object_key\n"
        f"for p in sorted(pathlib.Path({str(incoming)!r}).iterdir()):\n"
        "    raw = p.read_bytes(); ds = pydicom.dcmread(p)\n"
        "    key = object_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,"
        " hashlib.sha256(raw).hexdigest())\n"
        f"    t = pathlib.Path({str(hot)!r}) / key; t.parent.mkdir(parents=True, exist_ok=True); t.write_bytes(raw)\n"
    )
    manage(env, "shell", "-c", script)
    manage(env, "reindex")
    before = check(env)
    assert before.startswith("24 hot ")
    rng = random.Random(int(os.environ.get("MOVER_KILL_SEED", "5")))
    database = tmp_path / "data" / "pacs.sqlite3"
    kills = mid_move_kills = 0
    for target in ("cold", "hot"):
        assert "planned 24 moves" in manage(env, "tiers", "move", "--to", target, "--background")
        for _ in range(60):  # rounds of resume and kill, until every move is done
            if ledger(database)["done"] == 24 * (1 if target == "cold" else 2):
                break
            assert check(env).split()[0] == "24"  # every row readable, its SHA-256 intact
            time.sleep(1.1)  # the dead worker's lease runs out
            before_run = ledger(database)
            worker = start(env, "resume")
            while worker.poll() is None and ledger(database) == before_run:
                time.sleep(0.02)  # until the worker has recorded a step
            time.sleep(rng.uniform(0, 0.4))
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                kills += 1
                progress = ledger(database)
                if progress["done"] < 24 * (1 if target == "cold" else 2):
                    mid_move_kills += 1
            worker.wait()
        after = check(env)
        assert after.split()[:2] == ["24", target]
        assert after.split(None, 2)[2] == before.split(None, 2)[2]
        status = manage(env, "tiers", "status")
        assert "failed 0" in status and "pending 0" in status and "switched 0" in status
    assert mid_move_kills >= 4  # kills landed with part of the objects moved
    other = "cold" if target == "hot" else "hot"
    leftovers = [p for p in (tmp_path / "data" / "objects" / other).rglob("*.dcm*")]
    assert leftovers == []


def test_moves_left_to_the_task_worker_are_carried_out_by_db_worker(tmp_path: Path) -> None:
    env, _ = prepare_server(tmp_path / "data", None, "worker")
    env.update(PACS_TIER_MOVE_GRACE_SECONDS="0")
    manage(env, "load_demo")
    before = check(env)
    count = before.split()[0]
    assert f"planned {count} moves to cold" in manage(env, "tiers", "move", "--to", "cold", "--background")
    assert check(env).split()[1] == "hot"  # nothing moved until a worker runs
    manage(env, "db_worker", "--batch", "--no-startup-delay")
    after = check(env)
    assert after.split()[:2] == [count, "cold"] and after.split()[2] == before.split()[2]
