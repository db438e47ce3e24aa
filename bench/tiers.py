#!/usr/bin/env python3
"""Storage tiers: mover throughput, zstd compression of noisy CT, verify throughput, frame latency, rule evaluation.

Stores ``--instances`` CT slices of 512 x 512 (16-bit, about 0.5 MB each)
whose pixels are the synthetic phantom plus Gaussian noise of ``--noise`` HU
and a little texture, as a real CT slice has (a flat phantom compresses far
better than any patient), then prints:

- the mover's throughput filesystem → filesystem (``hot`` → a ``warm`` folder)
  and hot → zstd cold (with the compression ratio), fsync on, throttle off,
  ``PACS_TIER_MOVE_CONCURRENCY`` moves at a time; every copy is verified
  (re-read, SHA-256) before the index switches, so each byte is read twice;
- ``tiers verify`` throughput on hot and on cold (files in the page cache);
- the latency of one stored frame read (``Instance.read_stored_ranges``, what
  WADO-RS frames do) from hot and from cold: median and 95th percentile;
- frame latency from hot, cold and an S3 tier (SeaweedFS, STANDARD class)
  side by side, ``GET …/frames/1`` through gunicorn and in process, median
  and 90th percentile over ``--frame-requests`` requests a tier, and what S3
  adds over hot (``bench/frame_tiers.py``);
- the time to evaluate three lifecycle rules over ``--rows`` instance rows
  written directly (no files), which plans the moves in SQL.

    .venv/bin/python bench/tiers.py [--instances 200] [--rows 100000]
    BENCH_COLD_LEVEL=3 .venv/bin/python bench/tiers.py  # another zstd level for the cold tier

It runs on SQLite in a temporary PACS_DATA_DIR (or the DATABASE_URL given,
which must be empty).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pacs.settings")
if not os.environ.get("DATABASE_URL") and not os.environ.get("PACS_DATA_DIR"):
    os.environ["PACS_DATA_DIR"] = tempfile.mkdtemp(prefix="tiers-bench-")
os.environ.setdefault("SECRET_KEY", "bench")
WARM = Path(os.environ["PACS_DATA_DIR"]) / "warm"
WARM.mkdir(parents=True, exist_ok=True)
COLD_LEVEL = os.environ.get("BENCH_COLD_LEVEL", "1")  # zstd level of the cold tier
os.environ["PACS_TIERS"] = json.dumps(
    {"warm": {"backend": "filesystem", "root": str(WARM)}, "cold": {"backend": "zstd", "level": COLD_LEVEL}}
)
os.environ["PACS_TIER_MOVE_BYTES_PER_SECOND"] = "0"
os.environ.setdefault("PACS_TIER_MOVE_GRACE_SECONDS", "0")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from frame_tiers import compare_frame_tiers  # noqa: E402 - the same folder: hot / cold / S3 frames over HTTP

from archive.dicom.synthetic import StudySpec, make_instance, phantom  # noqa: E402
from archive.ingest.lifecycle import apply_rules, rule_selections  # noqa: E402
from archive.ingest.mover import Mover, plan_moves  # noqa: E402
from archive.ingest.store import store_instances  # noqa: E402
from archive.ingest.verify import verify_tier  # noqa: E402
from archive.models import Instance, LifecycleRule, Patient, RuleBasis, Series, Site, Study, TierMove  # noqa: E402
from archive.storage.registry import get_storage  # noqa: E402
from archive.storage.staging import stage_file  # noqa: E402


def noisy_ct(spec: StudySpec, series: str, number: int, noise: float, rng: np.random.Generator) -> bytes:
    """One 512 x 512 CT slice: the phantom with quantum noise and tissue texture, as stored values."""
    raw = make_instance(spec, "CT", series_uid=series, instance_number=number, size=512)
    ds = pydicom.dcmread(io.BytesIO(raw))
    base = phantom("CT", 512, number).astype(np.float32)
    texture = np.repeat(np.repeat(rng.normal(0, noise / 2, (128, 128)), 4, 0), 4, 1)
    pixels = np.clip(base + rng.normal(0, noise, base.shape) + texture, 0, 4095).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def store(count: int, noise: float, workdir: Path) -> int:
    rng = np.random.default_rng(1)
    spec = StudySpec(study_uid=f"2.25.{uuid.uuid4().int}")
    series = f"2.25.{uuid.uuid4().int}"
    total = 0
    for start in range(0, count, 50):
        staged = []
        for n in range(start, min(count, start + 50)):
            data = noisy_ct(spec, series, n + 1, noise, rng)
            total += len(data)
            path = workdir / f"{n}.dcm"
            path.write_bytes(data)
            staged.append(stage_file(get_storage("hot"), path))
            path.unlink()
        store_instances(staged)
    return total


def move(target: str) -> tuple[float, int, int]:
    batch, _ = plan_moves(Instance.objects.exclude(tier=target), target)
    report = Mover(batch).run()
    stored = sum(TierMove.objects.filter(batch=batch).values_list("stored_size", flat=True))
    return report.seconds, report.bytes, stored


def frame_latency(samples: int = 300) -> tuple[float, float]:
    rows = list(Instance.objects.all())
    times = []
    for _ in range(samples):
        row = random.choice(rows)
        started = time.perf_counter()
        row.read_stored_ranges(row.frames[0])
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times)) - 1]


def generate_rows(count: int) -> None:
    """``count`` instance rows in studies of 100, over three sites, four modalities and a year of receipts."""
    sites = [Site.objects.create(code=f"s{i}", name=f"Site {i}") for i in range(3)]
    patient = Patient.objects.create(patient_id="BENCH")
    now = timezone.now()
    modalities = ["CT", "MR", "CR", "US"]
    bodies = ["CHEST", "HEAD", "ABDOMEN"]
    for s in range(count // 100):
        study = Study.objects.create(
            study_instance_uid=f"2.25.9{s}",
            patient=patient,
            site=sites[s % 3],
            study_description=random.choice(["CT CHEST", "MR HEAD", "RESEARCH PROTOCOL 7", "XR CHEST"]),
            created_at=now - timedelta(days=random.randint(0, 365)),
        )
        series = Series.objects.create(
            series_instance_uid=f"2.25.8{s}",
            study=study,
            modality=modalities[s % 4],
            body_part_examined=bodies[s % 3],
        )
        Instance.objects.bulk_create(
            Instance(
                sop_instance_uid=f"2.25.7{s}.{n}",
                series=series,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                size=525_000,
                sha256="0" * 64,
                storage_key=f"2.25.9{s}/2.25.8{s}/2.25.7{s}.{n}.0000000000000000.dcm",
                metadata="{}",
            )
            for n in range(100)
        )


# --------------------------------------------------------------------------- rule evaluation at scale


def generate_index(count: int, per_study: int = 100) -> None:
    """``count`` instance rows written by the database itself (``INSERT … SELECT``), in studies of ``per_study``.

    Studies are received over five years, a third were read at some point (a
    few in the last week), patients are 0-95 years old at the study date (a
    tenth known only by (0010,1010) Patient's Age), a fifth of the series are
    on cold already; three sites, four modalities, three body parts.
    """
    rng = random.Random(7)
    sites = [Site.objects.get_or_create(code=f"s{i}", defaults={"name": f"Site {i}"})[0] for i in range(3)]
    now = timezone.now()
    studies = count // per_study
    patients = Patient.objects.bulk_create(
        Patient(patient_id=f"B{p}", patient_birth_date=f"{rng.randint(1930, 2023)}{rng.randint(1, 12):02d}15")
        for p in range(max(1, studies // 2))
    )
    descriptions = ["CT CHEST", "MR HEAD", "RESEARCH PROTOCOL 7", "XR CHEST", "CT ABDOMEN"]
    rows = []
    for s in range(studies):
        received = now - timedelta(days=rng.uniform(0, 5 * 365))
        patient = patients[s % len(patients)]
        by_age = s % 10 == 0
        read = rng.random()
        rows.append(
            Study(
                study_instance_uid=f"2.25.9{s}",
                patient=patient,
                site=sites[s % 3],
                study_date=received.strftime("%Y%m%d"),
                study_description=rng.choice(descriptions),
                attributes={"00101010": {"vr": "AS", "Value": [f"{rng.randint(0, 95):03d}Y"]}} if by_age else {},
                created_at=received,
                last_accessed_at=(
                    None
                    if read > 0.33
                    else now - timedelta(days=rng.uniform(0, 6))
                    if read < 0.02
                    else received + (now - received) * rng.random()
                ),
            )
        )
    Study.objects.bulk_create(rows, batch_size=2000)
    if studies:
        Patient.objects.filter(pk__in=[p.pk for p in patients[::10]]).update(patient_birth_date="")
    study_ids = list(Study.objects.filter(study_instance_uid__startswith="2.25.9").values_list("id", flat=True))
    modalities, bodies = ["CT", "MR", "CR", "US"], ["CHEST", "HEAD", "ABDOMEN"]
    Series.objects.bulk_create(
        (
            Series(
                series_instance_uid=f"2.25.8{n}",
                study_id=pk,
                modality=modalities[n % 4],
                body_part_examined=bodies[n % 3],
                number_of_instances=per_study,
            )
            for n, pk in enumerate(study_ids)
        ),
        batch_size=2000,
    )
    instance, series, study = Instance._meta.db_table, Series._meta.db_table, Study._meta.db_table
    # Table names from model metadata, every value a parameter.
    sql = (
        f"WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < %s) "  # noqa: S608
        f"INSERT INTO {instance} (sop_instance_uid, series_id, sop_class_uid, instance_number, transfer_syntax_uid,"
        " number_of_frames, size, sha256, storage_key, tier, availability, metadata, created_at)"
        f" SELECT s.series_instance_uid || '.' || n.k, s.id, %s, n.k, %s, 1, 525000, %s,"
        f" st.study_instance_uid || '/' || s.series_instance_uid || '/' || n.k || '.dcm',"
        " CASE WHEN s.id %% 5 = 0 THEN 'cold' ELSE 'hot' END, 'ONLINE', '{}', st.created_at"
        f" FROM {series} s JOIN {study} st ON st.id = s.study_id CROSS JOIN n"
        " WHERE s.series_instance_uid LIKE '2.25.8%%'"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [per_study, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "0" * 64])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # what autovacuum does after a bulk load


def scale_rules() -> None:
    """The rules of a site that uses every kind: promotion, idle time, age, receipt."""
    LifecycleRule.objects.all().delete()
    s1 = Site.objects.get(code="s1")
    rules = [
        dict(name="read this week", basis=RuleBasis.ACCESSED_WITHIN, after_days=7, target_tier="hot"),
        dict(name="research", after_days=30, description_pattern="research", target_tier="cold"),
        dict(name="site 1 MR", after_days=60, modality="MR", site=s1, target_tier="warm"),
        dict(name="chest CT idle 90 d", basis=RuleBasis.LAST_ACCESS, after_days=90, modality="CT", body_part="CHEST"),
        dict(name="65+ idle 180 d", basis=RuleBasis.LAST_ACCESS, after_days=180, min_patient_age=65),
        dict(name="children 2 y", after_days=730, max_patient_age=17),
        dict(name="all after a year", after_days=365),
    ]
    for priority, rule in enumerate(rules, 1):
        LifecycleRule.objects.create(priority=priority, **{"target_tier": "cold", **rule})


def explain(queryset: Any) -> list[str]:
    """The database's plan for the SELECT behind a rule's INSERT … SELECT."""
    sql, params = queryset.order_by().values("id").query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return [row[-1] for row in cursor.fetchall()]
        cursor.execute("EXPLAIN " + sql, params)
        return [row[0] for row in cursor.fetchall()]


def rule_scale(counts: list[int], show_plans: bool) -> None:
    """Rule evaluation time (planning every move in SQL) at each size in ``counts``, on this database."""
    vendor = connection.vendor
    for count in counts:
        TierMove.objects.all().delete()
        Instance.objects.all().delete()
        Series.objects.all().delete()
        Study.objects.all().delete()
        Patient.objects.all().delete()
        started = time.perf_counter()
        generate_index(count)
        generated = time.perf_counter() - started
        scale_rules()
        if show_plans:
            for rule, instances in rule_selections(timezone.now()):
                print(f"-- plan of rule {rule.name!r} ({vendor})")
                print("\n".join("   " + line for line in explain(instances)))
        started = time.perf_counter()
        plans = apply_rules()
        seconds = time.perf_counter() - started
        total = Instance.objects.count()
        print(
            f"rules on {vendor}: {len(plans)} rules over {total:,} instances in {seconds:.1f} s"
            f" ({sum(p.planned for p in plans):,} moves planned; rows generated in {generated:.1f} s)"
        )
        print("   " + ", ".join(f"{p.rule.name}: {p.planned:,}" for p in plans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--noise", type=float, default=15.0, help="standard deviation of the noise, in HU")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--rule-scale",
        help="only time rule evaluation at these instance counts (e.g. 100000,1000000), on generated index rows",
    )
    parser.add_argument("--plans", action="store_true", help="with --rule-scale: print each rule's query plan")
    parser.add_argument(
        "--frame-requests", type=int, default=300, help="frame requests a tier (hot, cold, S3) over HTTP"
    )
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    if Instance.objects.exists():
        sys.exit("the database already holds instances: give an empty one")
    if args.rule_scale:
        rule_scale([int(n) for n in args.rule_scale.split(",")], args.plans)
        return
    with tempfile.TemporaryDirectory() as workdir:
        size = store(args.instances, args.noise, Path(workdir))
    mb = size / 1e6
    print(f"{args.instances} noisy CT slices (512x512, noise {args.noise} HU): {mb:.1f} MB on hot")

    seconds, moved, _ = move("warm")
    print(f"mover hot -> warm (filesystem -> filesystem): {moved / 1e6 / seconds:7.1f} MB/s ({seconds:.2f} s)")
    seconds, moved, _ = move("hot")
    print(f"mover warm -> hot (filesystem -> filesystem): {moved / 1e6 / seconds:7.1f} MB/s ({seconds:.2f} s)")
    hot_median, hot_p95 = frame_latency()
    report = verify_tier("hot")
    print(f"verify hot:  {report.bytes / 1e6 / report.seconds:7.1f} MB/s ({report.checked} objects)")

    seconds, moved, stored = move("cold")
    print(
        f"mover hot -> cold (zstd level {COLD_LEVEL}): {moved / 1e6 / seconds:7.1f} MB/s ({seconds:.2f} s); "
        f"compression {moved / stored:.2f}:1 ({stored / 1e6:.1f} MB on cold)"
    )
    cold_median, cold_p95 = frame_latency()
    report = verify_tier("cold")
    print(f"verify cold: {report.bytes / 1e6 / report.seconds:7.1f} MB/s of Part 10 bytes ({report.checked} objects)")
    seconds, moved, _ = move("hot")
    print(f"mover cold -> hot: {moved / 1e6 / seconds:7.1f} MB/s ({seconds:.2f} s)")
    print(f"frame read (512 KB) hot:  median {hot_median:.2f} ms, p95 {hot_p95:.2f} ms")
    print(f"frame read (512 KB) cold: median {cold_median:.2f} ms, p95 {cold_p95:.2f} ms")
    compare_frame_tiers(args.frame_requests)

    Instance.objects.all().delete()
    generate_rows(args.rows)
    LifecycleRule.objects.create(
        name="research", priority=1, after_days=30, description_pattern="research", target_tier="cold"
    )
    LifecycleRule.objects.create(
        name="site 1 MR", priority=2, after_days=60, modality="MR", site=Site.objects.get(code="s1"), target_tier="warm"
    )
    LifecycleRule.objects.create(
        name="chest CT after 90 days", priority=3, after_days=90, modality="CT", body_part="CHEST", target_tier="cold"
    )
    started = time.perf_counter()
    plans = apply_rules()
    seconds = time.perf_counter() - started
    planned = ", ".join(f"{p.rule.name}: {p.planned}" for p in plans)
    print(f"rule evaluation over {Instance.objects.count():,} instances: {seconds:.2f} s ({planned} moves planned)")


if __name__ == "__main__":
    main()
