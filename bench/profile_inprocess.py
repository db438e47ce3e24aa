#!/usr/bin/env python3
"""In-process profile of the archive's hot paths (no HTTP server, no Orthanc).

Quicker to iterate on than ``bench/side_by_side.sh``: migrates a fresh SQLite
data directory, issues a bearer token to a superuser, stores instances built by
``../shared/bench/dicomweb_bench.py`` through ``django.test.Client`` (single
and batch STOW), then times QIDO, series metadata and one frame. Prints the
median milliseconds and SQL statements per request of each path; ``--profile
NAME`` adds a cProfile listing of that path.

    .venv/bin/python bench/profile_inprocess.py --count 300 [--profile stow_single]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_bench(shared: Path) -> Any:
    spec = importlib.util.spec_from_file_location("dicomweb_bench", shared / "dicomweb_bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = "PROFILEBOUNDARY" + os.urandom(6).hex()
    chunks: list[bytes] = []
    for p in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), p, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=200, help="requests per read path")
    ap.add_argument("--profile", default="", help="stow_single, stow_batch, qido, metadata or frame")
    ap.add_argument("--sql", default="", help="print the SQL of the last request of this path")
    ap.add_argument("--fsync", action="store_true", help="keep PACS_FSYNC on (the default server setting)")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="pacs-profile-")
    os.environ["PACS_DATA_DIR"] = data
    os.environ["PACS_FSYNC"] = "1" if args.fsync else "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pacs.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from archive.models import ApiToken

    call_command("migrate", verbosity=0)
    user = User.objects.create_superuser("profile", "p@example.org", "x" * 20)
    _, raw = ApiToken.issue(user, "profile")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_ACCEPT="application/dicom+json")

    bench = load_bench(Path(args.shared))
    plan = bench.build_plan(args.count, max(1, args.count // 20), 2, min(50, args.count // 2), "PROFILE")
    phantoms = bench.make_phantoms(k=4)
    blobs = list(bench.iter_instances(plan, phantoms))
    half = len(blobs) // 2
    results: dict[str, tuple[float, float]] = {}

    def measure(name: str, calls: list[Callable[[], Any]], per: int = 1) -> None:
        times: list[float] = []
        queries: list[int] = []
        prof = cProfile.Profile() if args.profile == name else None
        for call in calls:
            with CaptureQueriesContext(connection) as ctx:
                if prof:
                    prof.enable()
                t0 = time.perf_counter()
                response = call()
                times.append((time.perf_counter() - t0) * 1000 / per)
                if prof:
                    prof.disable()
            queries.append(len(ctx.captured_queries))
        if args.sql == name:
            for q in ctx.captured_queries:
                print(q["time"], q["sql"][:400])
            if response.status_code >= 300:
                raise SystemExit(f"{name}: HTTP {response.status_code} {response.content[:300]!r}")
        results[name] = (statistics.median(times), statistics.median(queries) / per)
        if prof:
            pstats.Stats(prof).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(45)

    def stow_call(parts: list[bytes]) -> Callable[[], Any]:
        body, ctype = multipart(parts)
        return lambda: client.post("/dicom-web/studies", body, content_type=ctype)

    measure("stow_single", [stow_call([b]) for b in blobs[:half]])
    batches = [blobs[i : i + 25] for i in range(half, len(blobs), 25)]
    measure("stow_batch", [stow_call(b) for b in batches], per=25)
    viewer = plan["viewer"]
    series_url = f"/dicom-web/studies/{viewer['study']}/series/{viewer['series']}"
    frame_url = f"{series_url}/instances/{viewer['instances'][0]}/frames/1"
    st = plan["studies"][1]
    reads = {
        "qido_name": lambda: client.get("/dicom-web/studies?PatientName=SMI*&limit=100"),
        "qido_accession": lambda: client.get(f"/dicom-web/studies?AccessionNumber={st['accession']}"),
        "metadata": lambda: client.get(f"{series_url}/metadata"),
        "frame": lambda: client.get(frame_url, HTTP_ACCEPT="multipart/related; type=application/octet-stream"),
    }
    for name, call in reads.items():
        measure(name, [call] * args.repeat)
    print(f"\n{'path':16s} {'median ms':>10s} {'SQL/req':>8s}")
    for name, (ms, q) in results.items():
        print(f"{name:16s} {ms:10.2f} {q:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
