#!/usr/bin/env python3
"""What recording the last access costs the frame fast path: the same frame requests with it on and off.

Every read path calls :func:`archive.ingest.lastaccess.touch_study`; on the
frame fast path (:mod:`archive.dicomweb.fastpath`) that must stay a
dictionary lookup. This stores ``--studies`` small CT studies, then sends
one-frame GET requests with a bearer token straight into the WSGI
application (``pacs.wsgi.application``, as gunicorn calls it), round after
round, alternating between the frame path as it is (on) and with its
touch replaced by a no-op (off: the path as it was before), so drift hits
both equally, and prints the median microseconds
per request of each, the median of the per-round differences, the cost of a
touch that finds the study recently touched, and how many statements wrote
to the study table over a whole run with it on (one per study, the first time).

    .venv/bin/python bench/last_access.py [--studies 20] [--rounds 40] [--per-round 100]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pacs.settings")
os.environ["PACS_DATA_DIR"] = tempfile.mkdtemp(prefix="last-access-bench-")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("PACS_FSYNC", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from archive.dicom.synthetic import StudySpec, make_series  # noqa: E402
from archive.dicomweb import frames  # noqa: E402
from archive.ingest import lastaccess  # noqa: E402
from archive.ingest.store import store_instances  # noqa: E402
from archive.models import ApiToken, Instance, Study  # noqa: E402
from archive.storage.registry import get_storage  # noqa: E402
from archive.storage.staging import stage_file  # noqa: E402
from pacs.wsgi import application  # noqa: E402

ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def store(studies: int, workdir: Path) -> list[str]:
    """``studies`` CT studies of 10 slices of 256 x 256; returns every instance's frame URL."""
    for n in range(studies):
        staged = []
        for i, raw in enumerate(make_series(StudySpec(patient_id=f"LA{n}"), "CT", count=10, size=256)):
            path = workdir / f"{n}-{i}.dcm"
            path.write_bytes(raw)
            staged.append(stage_file(get_storage("hot"), path))
        store_instances(staged)
    return [
        f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1"
        for study, series, sop in Instance.objects.values_list(
            "series__study__study_instance_uid", "series__series_instance_uid", "sop_instance_uid"
        )
    ]


def request(environ: dict[str, Any]) -> int:
    status: list[str] = []
    body = application(dict(environ), lambda s, h, e=None: status.append(s))
    for _ in body:
        pass
    body.close()  # type: ignore[attr-defined]
    return int(status[0].split()[0])


def timed(environs: list[dict[str, Any]], count: int) -> list[float]:
    times = []
    for environ in random.choices(environs, k=count):
        started = time.perf_counter()
        assert request(environ) == 200
        times.append((time.perf_counter() - started) * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=100)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    user = User.objects.create_superuser("bench", "b@example.org", "x" * 20)
    _, token = ApiToken.issue(user, "bench")
    with tempfile.TemporaryDirectory() as workdir:
        urls = store(args.studies, Path(workdir))
    factory = RequestFactory()
    environs = [factory.get(url, HTTP_ACCEPT=ACCEPT, HTTP_AUTHORIZATION=f"Bearer {token}").environ for url in urls]
    settings.PACS_LAST_ACCESS_INTERVAL_SECONDS = 3600
    with CaptureQueriesContext(connection) as queries:
        timed(environs, len(environs) * 3)
    sqls = [q["sql"] for q in queries.captured_queries]
    study_writes = [sql for sql in sqls if sql.startswith("UPDATE") and "archive_study" in sql]
    touched = Study.objects.exclude(last_accessed_at=None).count()
    print(f"{len(environs) * 3} frame requests over {args.studies} studies:")
    print(f"  statements writing the study table: {len(study_writes)} ({touched} studies now have a last access)")

    timed(environs, 200)  # warm up
    real_touch = frames.touch_study

    def untouched(uid: str, now: Any = None) -> bool:
        return False

    on: list[float] = []
    off: list[float] = []
    differences = []
    for n in range(args.rounds):
        medians = {}
        for recording in (True, False) if n % 2 else (False, True):
            frames.touch_study = real_touch if recording else untouched  # type: ignore[assignment]
            times = timed(environs, args.per_round)
            (on if recording else off).extend(times)
            medians[recording] = statistics.median(times)
        differences.append(medians[True] - medians[False])
    frames.touch_study = real_touch  # type: ignore[assignment]
    print(f"frame fast path, median per request: recording on {statistics.median(on):.1f} µs, ", end="")
    print(f"off {statistics.median(off):.1f} µs; median per-round difference {statistics.median(differences):+.1f} µs")
    print(f"  (p95 on {sorted(on)[int(0.95 * len(on))]:.1f} µs, off {sorted(off)[int(0.95 * len(off))]:.1f} µs)")

    settings.PACS_LAST_ACCESS_INTERVAL_SECONDS = 3600
    uid = Study.objects.values_list("study_instance_uid", flat=True).first() or ""
    lastaccess.touch_study(uid)
    loops = 200_000
    started = time.perf_counter()
    for _ in range(loops):
        lastaccess.touch_study(uid)
    print(f"a touch of a study touched within the hour: {(time.perf_counter() - started) / loops * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
