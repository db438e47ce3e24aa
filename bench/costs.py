#!/usr/bin/env python3
"""The storage cost page at scale: render time and query count with ``--rows`` instance rows (default 100,000).

Index rows are written directly (no files): studies of 50 instances over five
sites (two sharing a cost tag), four modalities, two years of receipts, a
third of them on the zstd cold tier with a stored size, plus a ledger of moves,
three lifecycle rules and three budgets. Then it renders
``/admin/archive/budget/costs/`` as a signed-in administrator ``--renders``
times and prints the median and slowest render and the queries per render,
and the time of ``cost_report`` alone (the SQL aggregates).

    .venv/bin/python bench/costs.py [--rows 100000] [--renders 5]

It runs on SQLite in a temporary PACS_DATA_DIR (or the DATABASE_URL given,
which must be empty).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pacs.settings")
if not os.environ.get("DATABASE_URL"):
    os.environ["PACS_DATA_DIR"] = tempfile.mkdtemp(prefix="costs-bench-")  # never the host's data
os.environ.setdefault("SECRET_KEY", "bench")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_otp import DEVICE_ID_SESSION_KEY  # noqa: E402
from django_otp.plugins.otp_totp.models import TOTPDevice  # noqa: E402

from archive.costs.usage import cost_report  # noqa: E402
from archive.models import (  # noqa: E402
    Budget,
    Instance,
    LifecycleRule,
    MoveState,
    Patient,
    Series,
    Site,
    Study,
    Tier,
    TierMove,
)

PER_STUDY = 50
SIZE = 525_000


def generate(count: int) -> None:
    rng = random.Random(7)
    sites = [
        Site.objects.create(code=f"s{i}", name=f"Site {i}", cost_tag="research" if i >= 3 else "") for i in range(5)
    ]
    patient = Patient.objects.create(patient_id="BENCH")
    now = timezone.now()
    modalities = ["CT", "MR", "CR", "US"]
    for s in range(count // PER_STUDY):
        study = Study.objects.create(
            study_instance_uid=f"2.25.9{s}",
            patient=patient,
            site=sites[s % 5],
            study_description=rng.choice(["CT CHEST", "MR HEAD", "RESEARCH PROTOCOL 7", "XR CHEST"]),
            created_at=now - timedelta(days=rng.uniform(0, 730)),
        )
        series = Series.objects.create(series_instance_uid=f"2.25.8{s}", study=study, modality=modalities[s % 4])
        cold = s % 3 == 0
        Instance.objects.bulk_create(
            Instance(
                sop_instance_uid=f"2.25.7{s}.{n}",
                series=series,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                size=SIZE,
                stored_size=SIZE // 2 if cold else None,
                sha256="0" * 64,
                storage_key=f"2.25.9{s}/2.25.8{s}/2.25.7{s}.{n}.dcm",
                tier="cold" if cold else "hot",
                metadata="{}",
            )
            for n in range(PER_STUDY)
        )
    moved = Instance.objects.filter(tier="cold").values_list("id", "storage_key")[: count // 10]
    TierMove.objects.bulk_create(
        TierMove(
            instance_id=pk,
            batch="bench",
            source_tier="hot",
            source_key=key,
            target_tier="cold",
            state=MoveState.DONE,
            size=SIZE,
            stored_size=SIZE // 2,
            switched_at=now - timedelta(minutes=rng.uniform(0, 120)),
        )
        for pk, key in moved
    )
    Tier.sync_environment()
    Tier.objects.filter(name="hot").update(cost_per_gb_month=Decimal("0.023"), cost_per_1000_requests=Decimal("0.005"))
    Tier.objects.filter(name="cold").update(
        cost_per_gb_month=Decimal("0.004"),
        cost_per_gb_retrieved=Decimal("0.03"),
        cost_per_1000_requests=Decimal("0.05"),
    )
    LifecycleRule.objects.create(
        name="research", priority=1, after_days=30, description_pattern="research", target_tier="cold"
    )
    LifecycleRule.objects.create(name="CT", priority=2, after_days=90, modality="CT", target_tier="cold")
    LifecycleRule.objects.create(name="all", priority=3, after_days=365, target_tier="cold")
    Budget.objects.create(name="everything", monthly_limit=Decimal("1000"))
    Budget.objects.create(name="site 0", site=sites[0], monthly_limit=Decimal("0.01"), horizon_months=60)
    Budget.objects.create(name="research", cost_tag="research", monthly_limit=Decimal("100"), horizon_months=12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--renders", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    if Instance.objects.exists():
        sys.exit("the database already holds instances: give an empty one")
    started = time.perf_counter()
    generate(args.rows)
    print(
        f"{Instance.objects.count():,} instance rows in {Study.objects.count():,} studies "
        f"written in {time.perf_counter() - started:.1f} s ({connection.vendor})"
    )

    admin = User.objects.create_superuser("bench-admin", "admin@example.org", "x" * 20)
    device = TOTPDevice.objects.create(user=admin, name="bench", confirmed=True)
    client = Client()
    client.force_login(admin)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()

    report_times = []
    for _ in range(args.renders):
        t = time.perf_counter()
        cost_report()
        report_times.append(time.perf_counter() - t)
    times, queries = [], []
    for _ in range(args.renders + 1):
        with CaptureQueriesContext(connection) as captured:
            t = time.perf_counter()
            response = client.get("/admin/archive/budget/costs/")
            times.append(time.perf_counter() - t)
        assert response.status_code == 200, response.status_code
        queries.append(len(captured))
    times = times[1:]  # the first render alerts the budgets (audit records, mail)
    print(f"cost_report (the SQL aggregates): median {statistics.median(report_times) * 1000:.0f} ms")
    print(
        f"cost page render: median {statistics.median(times) * 1000:.0f} ms, slowest {max(times) * 1000:.0f} ms, "
        f"{queries[-1]} queries ({args.renders} renders, {len(response.content) / 1024:.0f} KB of HTML)"
    )


if __name__ == "__main__":
    main()
