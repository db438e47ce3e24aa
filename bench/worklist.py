#!/usr/bin/env python3
"""The worklist at scale: first-page render time and SQL statements with 100,000 studies.

Writes index rows (patients, studies) and their worklist rows directly with
``bulk_create`` (no files, no STOW: this measures the page, not ingest) over
three sites, with the status and priority mix of a real archive (most
studies final, a few hundred to read, 2 % STAT). A radiologist who belongs to
two of the three sites, signed in with a session that passed MFA, then asks
through ``django.test.Client`` (the full stack but HTTP) for:

* the page itself (``GET /worklist/``: the radiologist's home, first 50 rows
  "to read", filters, saved lists, one audit record),
* rows for other filters and sorts (``POST /worklist/rows``), one 20 pages deep
  by keyset cursor,
* the live poll (``GET /worklist/changes``) when nothing changed,
* the same lists as JSON from the API (``GET /api/worklist/items/``), the first page and 20 pages deep.

It prints the median and 95th percentile in ms and the SQL statements per
request (target: first page at most 150 ms at 100,000 on PostgreSQL).

    .venv/bin/python bench/worklist.py [--studies 100000]        # SQLite in a temporary PACS_DATA_DIR
    DATABASE_URL=postgres://.../empty .venv/bin/python bench/worklist.py

It refuses to touch a database that already holds studies.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pacs.settings")
os.environ.setdefault("SECRET_KEY", "worklist-bench")
if not os.environ.get("DATABASE_URL") and not os.environ.get("PACS_DATA_DIR"):
    os.environ["PACS_DATA_DIR"] = tempfile.mkdtemp(prefix="worklist-bench-")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django_otp import DEVICE_ID_SESSION_KEY  # noqa: E402
from django_otp.plugins.otp_totp.models import TOTPDevice  # noqa: E402

from archive.models import Patient, Site, Study  # noqa: E402
from portal.accounts.groups import add_role  # noqa: E402
from portal.accounts.roles import Role  # noqa: E402
from portal.models import SiteMembership  # noqa: E402
from portal.worklist.models import WorklistItem  # noqa: E402
from portal.worklist.statuses import Priority, Status  # noqa: E402

FAMILIES = "SMITH JONES BROWN GARCIA MILLER DAVIS MARTIN LEE WALKER HALL YOUNG KING WRIGHT LOPEZ HILL SCOTT".split()
GIVEN = "ANNA JOHN MARIA PETER LINDA JAMES SARA DAVID EMMA PAUL".split()
MODALITIES = ["CT", "CT", "MR", "CR", "US", "CR\\CT", "DX", "MG"]
BODY_PARTS = ["CHEST", "HEAD", "ABDOMEN", "KNEE", "HAND", "SPINE", ""]
# Most of an archive is read; what is left to read is a few per cent.
STATUSES = [Status.FINAL] * 88 + [Status.AMENDED] * 2 + [Status.READY] * 4 + [Status.IN_PROGRESS] * 2
STATUSES += [Status.PRELIMINARY, Status.ARRIVED, Status.CANCELLED, Status.QC_FAILED]
NEWEST = datetime(2025, 6, 30, 18, 0, tzinfo=UTC)


def generate(count: int, sites: list[Site], reader: User, seed: int = 7) -> None:
    rng = random.Random(seed)
    batch = 2000
    for start in range(0, count, batch):
        size = min(batch, count - start)
        names = [f"{rng.choice(FAMILIES)}^{rng.choice(GIVEN)}" for _ in range(size)]
        patients = Patient.objects.bulk_create(
            Patient(
                patient_id=f"P{start + n:08d}", patient_name=name, patient_name_search=name, patient_sex="MF"[n % 2]
            )
            for n, name in enumerate(names)
        )
        studies, rows = [], []
        for n, patient in enumerate(patients):
            index = start + n
            arrived = NEWEST - timedelta(minutes=7 * index)
            site = sites[index % len(sites)]
            modality = rng.choice(MODALITIES)
            studies.append(
                Study(
                    study_instance_uid=f"2.25.{10**20 + index}",
                    patient=patient,
                    site=site,
                    study_date=arrived.strftime("%Y%m%d"),
                    study_time=arrived.strftime("%H%M%S"),
                    accession_number=f"A{index:09d}",
                    study_description=f"{modality} EXAM",
                    modalities_in_study=modality,
                    number_of_series=2,
                    number_of_instances=40,
                    created_at=arrived,
                )
            )
        studies = Study.objects.bulk_create(studies)
        for n, study in enumerate(studies):
            status = rng.choice(STATUSES)
            stat = rng.random()
            claimed = status == Status.IN_PROGRESS
            rows.append(
                WorklistItem(
                    study=study,
                    study_instance_uid=study.study_instance_uid,
                    priority=Priority.STAT if stat < 0.02 else Priority.URGENT if stat < 0.1 else Priority.ROUTINE,
                    status=status,
                    patient_name=names[n],
                    patient_name_search=names[n],
                    patient_id=study.patient.patient_id,
                    patient_age=f"{rng.randint(1, 95):03d}Y",
                    patient_sex=study.patient.patient_sex,
                    modality=study.modalities_in_study,
                    body_part=rng.choice(BODY_PARTS),
                    description=study.study_description,
                    accession_number=study.accession_number,
                    site=study.site,
                    site_code=study.site.code if study.site else "",
                    study_date=study.study_date,
                    arrived_at=study.created_at,
                    image_count=40,
                    priors_count=rng.randint(0, 5),
                    claimed_by=reader if claimed and n % 3 == 0 else None,
                    reader_name=reader.username if claimed and n % 3 == 0 else "",
                    updated_at=study.created_at,
                )
            )
        WorklistItem.objects.bulk_create(rows)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    device = TOTPDevice.objects.create(user=user, name="bench", confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def measure(request: Callable[[], Any], runs: int) -> tuple[float, float, float, int]:
    """Best, median and 95th percentile in ms, and the SQL statements of one request."""
    request()  # warm
    statements: list[str] = []
    with connection.execute_wrapper(lambda execute, sql, *rest: statements.append(sql) or execute(sql, *rest)):
        response = request()
    assert response.status_code in (200, 204), (response.status_code, response.content[:300])
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return samples[0], statistics.median(samples), samples[int(len(samples) * 0.95) - 1], len(statements)


def deep_cursor(client: Client, pages: int) -> str:
    """The keyset cursor of page ``pages`` + 1 of the default list, walked page by page."""
    import re

    after = ""
    for _ in range(pages):
        html = client.post("/worklist/rows", {"after": after}).content.decode()
        found = re.search(r'class="page-next secondary" data-after="(\d+)"', html)
        if not found:
            break
        after = found.group(1)
    return after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    if Study.objects.exists():
        raise SystemExit("refusing to run: the database already holds studies (use an empty one)")
    sites = [Site.objects.create(code=f"site{n}", name=f"Site {n}") for n in range(3)]
    reader = User.objects.create_user("bench-radiologist", password=None)
    add_role(reader, Role.RADIOLOGIST)
    for site in sites[:2]:
        SiteMembership.objects.create(user=reader, site=site)
    t0 = time.perf_counter()
    generate(args.studies, sites, reader)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"{connection.vendor}: {args.studies} studies and worklist rows written in {time.perf_counter() - t0:.0f} s")
    to_read = WorklistItem.objects.filter(
        status__in=[Status.ARRIVED, Status.READY, Status.IN_PROGRESS, Status.PRELIMINARY]
    )
    print(f"{to_read.count()} to read, {to_read.filter(site__in=sites[:2]).count()} of them at the reader's two sites")

    client = signed_in(reader)
    deep = deep_cursor(client, 20)
    since = str(int(datetime.now(UTC).timestamp() * 1_000_000))
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("first page, GET /worklist/ (full page)", lambda: client.get("/worklist/")),
        ("rows: default (to read, by priority)", lambda: client.post("/worklist/rows", {})),
        (
            "rows: all statuses, by patient name",
            lambda: client.post("/worklist/rows", {"status": "all", "sort": "patient"}),
        ),
        (
            "rows: all statuses, arrived desc",
            lambda: client.post("/worklist/rows", {"status": "all", "sort": "arrived", "desc": "on"}),
        ),
        ("rows: modality MR, all statuses", lambda: client.post("/worklist/rows", {"status": "all", "modality": "MR"})),
        ("rows: free text 'garcia^ma'", lambda: client.post("/worklist/rows", {"status": "all", "q": "garcia^ma"})),
        ("rows: mine", lambda: client.post("/worklist/rows", {"mine": "on"})),
        ("rows: page 21 by keyset cursor", lambda: client.post("/worklist/rows", {"after": deep})),
        ("poll: GET /worklist/changes, nothing new", lambda: client.get(f"/worklist/changes?since={since}")),
        ("api: GET /api/worklist/items/ (JSON, 50)", lambda: client.get("/api/worklist/items/")),
        (
            "api: all statuses, by patient name",
            lambda: client.get("/api/worklist/items/", {"status": "all", "sort": "patient"}),
        ),
        ("api: page 21 by keyset cursor", lambda: client.get("/api/worklist/items/", {"cursor": deep})),
    ]
    print(f"{'request':45} {'best ms':>8} {'median ms':>10} {'p95 ms':>8} {'SQL':>4}")
    for label, request in cases:
        best, median, p95, queries = measure(request, args.runs)
        print(f"{label:45} {best:8.1f} {median:10.1f} {p95:8.1f} {queries:4d}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
