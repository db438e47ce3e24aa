#!/usr/bin/env python3
"""The trash: how fast studies go to it, come back from it, and are purged (objects and rows removed).

Stores ``--studies`` CT studies of ``--instances`` slices each (128 x 128,
16-bit) through the one store path, moves every study to the trash, restores
20 of them and trashes them again, then purges them all and prints studies
and instances per second for each step. Durability as in production: fsync on
(each trash, restore and purge commits durably with its audit record).

    .venv/bin/python bench/trash.py [--studies 100] [--instances 10]

It runs on SQLite in a temporary PACS_DATA_DIR (or the DATABASE_URL given,
which must be empty).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pacs.settings")
if not os.environ.get("DATABASE_URL") and not os.environ.get("PACS_DATA_DIR"):
    os.environ["PACS_DATA_DIR"] = tempfile.mkdtemp(prefix="trash-bench-")
os.environ.setdefault("SECRET_KEY", "bench")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from archive.dicom.synthetic import StudySpec, make_series  # noqa: E402
from archive.ingest.store import store_instance  # noqa: E402
from archive.ingest.trash import purge, restore_study, trash_study  # noqa: E402
from archive.models import Instance, Study  # noqa: E402
from archive.storage.registry import get_storage  # noqa: E402
from archive.storage.staging import StagingWriter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--instances", type=int, default=10)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    if Study.objects.exists():
        sys.exit("the database is not empty: give an empty DATABASE_URL")
    for n in range(args.studies):
        for data in make_series(StudySpec(patient_id=f"BENCH-{n}"), "CT", count=args.instances, size=128):
            writer = StagingWriter(get_storage("hot"), max_bytes=len(data))
            writer.write(data)
            store_instance(writer.finish())
    size = sum(Instance.objects.values_list("size", flat=True))
    studies = list(Study.objects.select_related("patient"))
    started = time.perf_counter()
    for study in studies:
        trash_study(study, actor="bench")
    trashed = time.perf_counter() - started
    some = [s.study_instance_uid for s in studies[:20]]
    started = time.perf_counter()
    for uid in some:
        restore_study(uid, actor="bench")
    restored = time.perf_counter() - started
    for study in Study.objects.filter(study_instance_uid__in=some).select_related("patient"):
        trash_study(study, actor="bench")
    started = time.perf_counter()
    report = purge(older_than=timedelta(0))
    purged = time.perf_counter() - started
    print(f"{args.studies} studies x {args.instances} instances, {size / 1e6:.1f} MB, fsync={settings.PACS_FSYNC}")
    print(f"trash:   {args.studies / trashed:7.0f} studies/s")
    print(f"restore: {len(some) / restored:7.0f} studies/s ({restored / len(some) * 1000:.1f} ms each)")
    print(
        f"purge:   {len(report.purged) / purged:7.0f} studies/s, {report.instances / purged:.0f} instances/s "
        f"({len(report.purged)} studies, {report.instances} instances, objects and rows removed)"
    )


if __name__ == "__main__":
    main()
