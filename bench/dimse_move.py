#!/usr/bin/env python3
"""Time a C-MOVE of one 50-image series from the node to DCMTK's storescp (the issue's target: at most 1 s).

Migrates a fresh SQLite data directory, stores a series of CT images
(512x512, 16-bit, about 0.5 MB each) through the one ingest path, starts the
node's listener in this process on a free port and DCMTK's storescp (writing
what it receives to a temporary folder), then runs DCMTK's movescu several
times and prints the wall time of each run (process start included) and the
median; a C-GET of the same series with getscu for comparison.

    .venv/bin/python bench/dimse_move.py [--count 50] [--repeat 5] [--fsync]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # noqa: S603 - fixed DCMTK tools
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {done.stdout}{done.stderr}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fsync", action="store_true", help="keep PACS_FSYNC on while storing the series")
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="pacs-move-bench-")
    for name in [k for k in os.environ if k.startswith("PACS_") or k == "DATABASE_URL"]:
        del os.environ[name]  # a configured host's database, storage and tiers must not leak in
    os.environ["PACS_DATA_DIR"] = data
    os.environ["PACS_FSYNC"] = "1" if args.fsync else "0"
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pacs.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    from archive.dicom.synthetic import StudySpec, make_instance, new_uid
    from archive.dimse.listener import DicomListener
    from archive.ingest.store import Sender, store_instances
    from archive.models import DicomDevice, Site
    from archive.storage.registry import get_storage
    from archive.storage.staging import stage_file

    call_command("migrate", verbosity=0)
    site, _ = Site.objects.get_or_create(code="bench", defaults={"name": "Bench"})
    spec = StudySpec(patient_name="BENCH^MOVE", patient_id="BENCH-1", study_date="20240101", accession="B1")
    series = new_uid()
    folder = Path(data) / "series"
    folder.mkdir()
    staged = []
    for n in range(1, args.count + 1):
        path = folder / f"{n}.dcm"
        path.write_bytes(make_instance(spec, "CT", series_uid=series, instance_number=n, size=512))
        staged.append(stage_file(get_storage("hot"), path))
    assert all(r.ok for r in store_instances(staged, sender=Sender(site=site)))

    out = Path(data) / "received"
    out.mkdir()
    scp_port = free_port()
    storescp = subprocess.Popen(  # noqa: S603
        ["/usr/bin/storescp", "-aet", "STORESCP", "-od", str(out), str(scp_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    DicomDevice.objects.create(ae_title="WS1", site=site, may_query=True, may_retrieve=True)
    DicomDevice.objects.create(
        ae_title="STORESCP", host="127.0.0.1", port=scp_port, site=site, is_move_destination=True
    )
    listener = DicomListener("PACS", host="127.0.0.1", port=0)
    listener.start()
    keys = ["-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={spec.study_uid}"]
    keys += ["-k", f"SeriesInstanceUID={series}"]
    peer = ["127.0.0.1", str(listener.port)]
    move = ["/usr/bin/movescu", "-S", "-aet", "WS1", "-aec", "PACS", "-aem", "STORESCP", *keys, *peer]
    try:
        time.sleep(0.3)
        moves = []
        for _ in range(args.repeat):
            for f in out.iterdir():
                f.unlink()
            moves.append(timed(move))
            assert len(list(out.iterdir())) == args.count, "storescp did not receive every instance"
        got_dir = Path(data) / "got"
        got_dir.mkdir()
        gets = [
            timed(["/usr/bin/getscu", "-S", "-od", str(got_dir), "-aet", "WS1", "-aec", "PACS", *keys, *peer])
            for _ in range(args.repeat)
        ]
    finally:
        listener.stop()
        storescp.terminate()
        storescp.wait(timeout=10)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"C-MOVE of {args.count} images ({size:.1f} MB) to storescp, movescu wall time per run (s):")
    print("  " + " ".join(f"{t:.3f}" for t in moves) + f"   median {statistics.median(moves):.3f}")
    print(f"C-GET of the same series with getscu (s): median {statistics.median(gets):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
