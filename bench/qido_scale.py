#!/usr/bin/env python3
"""QIDO-RS at scale: does a search cost the same on 2,000 and on 100,000 instances?

Writes index rows directly with ``bulk_create`` (no files, no STOW: this
measures the search, not ingest), first 2,000 instances, then up to 100,000,
in studies of 20-50 instances over one to four series. Studies arrive at about
ten a day going back in time, so a two-day date range finds about the same
number at both sizes, as in a real archive that grows with time. A few
"needle" studies (patient ZEBRAFISH, modality MG) are planted once, so the
selective searches have a fixed answer. The common-modality search is
limited to 10 results, which both sizes fill: with a larger limit the 100k
archive returns more studies than the 2k one holds, and the ratio would
measure the longer answer rather than the larger index. Each search goes through
``django.test.Client`` with a bearer token of a site member, the full stack
but HTTP; the table gives medians in ms, result counts, SQL statements per
request and the 100k/2k ratio (target: at most 1.5).

    DJANGO_SETTINGS_MODULE=pacs.settings .venv/bin/python bench/qido_scale.py
    DATABASE_URL=postgres://... .venv/bin/python bench/qido_scale.py  # an empty database

Without DATABASE_URL it runs on SQLite in a temporary PACS_DATA_DIR. It
refuses to touch a database that already holds studies.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pacs.settings")
if not os.environ.get("DATABASE_URL") and not os.environ.get("PACS_DATA_DIR"):
    os.environ["PACS_DATA_DIR"] = tempfile.mkdtemp(prefix="qido-scale-")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from archive.ingest.index import name_words  # noqa: E402
from archive.models import ApiToken, Instance, Patient, PersonNameWord, Series, Site, Study, hash_token  # noqa: E402
from portal.models import SiteMembership  # noqa: E402

FAMILIES = "SMITH JONES BROWN GARCIA MILLER DAVIS MARTIN LEE WALKER HALL YOUNG KING WRIGHT LOPEZ HILL SCOTT".split()
GIVEN = "ANNA JOHN MARIA PETER LINDA JAMES SARA DAVID EMMA PAUL".split()
MODALITIES: list[tuple[str, ...]] = [("CT",), ("CT",), ("MR",), ("CR",), ("US",), ("CT", "CR"), ("MR", "CT"), ("DX",)]
SOP = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4", "MG": "1.2.840.10008.5.1.4.1.1.1.2"}
NEWEST = date(2025, 6, 30)
STUDIES_PER_DAY = 10
INSTITUTION = "Benchmark General Hospital"


def pn(value: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]}


def attr(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


def instance_template() -> str:
    """The stored JSON of a synthetic CT instance, with placeholders for its UIDs."""
    from archive.dicom.part10 import parse_instance
    from archive.dicom.synthetic import StudySpec, make_instance

    raw = make_instance(StudySpec(study_uid="9.9.1"), series_uid="9.9.2", sop_uid="9.9.3", size=16)
    with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
        fh.write(raw)
        fh.flush()
        text = parse_instance(fh.name).metadata_text()
    return text.replace("9.9.1", "{study}").replace("9.9.2", "{series}").replace("9.9.3", "{sop}")


class Generator:
    """Appends studies, newest first, so that every new study is older than the last."""

    def __init__(self, site: Site, seed: int = 11) -> None:
        self.site = site
        self.rng = random.Random(seed)
        self.template = instance_template()
        self.studies = 0  # studies written so far; also the index of the next one
        self.instances = 0
        self.study_uids: list[str] = []
        self.series_uids: list[tuple[str, str]] = []
        self.accessions: list[str] = []

    def _study(self, index: int, name: str, modalities: tuple[str, ...]) -> tuple[Patient, Study, list[Any]]:
        day = NEWEST - timedelta(days=index // STUDIES_PER_DAY)
        when = day.strftime("%Y%m%d")
        clock = f"{8 + index % 10:02d}{(index * 7) % 60:02d}00"
        uid = f"2.25.{10**20 + index}"
        patient = Patient(
            patient_id=f"P{index:08d}", patient_name=name, patient_name_search=name.upper(), patient_sex="F"
        )
        accession = f"A{index:09d}"
        study = Study(
            study_instance_uid=uid, site=self.site, study_date=when, study_time=clock, accession_number=accession,
            study_id=str(index), study_description=f"{modalities[0]} EXAM", institution_name=INSTITUTION,
            referring_physician_name="REFERRER^ALICE", referring_physician_search="REFERRER^ALICE",
            modalities_in_study="\\".join(sorted(set(modalities))),
            attributes={
                "00080005": attr("CS", "ISO_IR 100"), "00080020": attr("DA", when), "00080030": attr("TM", clock),
                "00080050": attr("SH", accession), "00080080": attr("LO", INSTITUTION),
                "00080090": pn("REFERRER^ALICE"), "00081030": attr("LO", f"{modalities[0]} EXAM"),
                "00100010": pn(name), "00100020": attr("LO", patient.patient_id), "00100030": attr("DA", "19700101"),
                "00100040": attr("CS", "F"), "0020000D": attr("UI", uid), "00200010": attr("SH", str(index)),
            },
        )  # fmt: skip
        count = self.rng.randint(20, 50)
        n_series = self.rng.randint(max(1, len(modalities)), 4)
        sizes = [count // n_series + (1 if k < count % n_series else 0) for k in range(n_series)]
        plan = [(modalities[k % len(modalities)], sizes[k]) for k in range(n_series)]
        self.study_uids.append(uid)
        self.accessions.append(accession)
        return patient, study, plan

    def add(self, target_instances: int, needles: bool = False) -> None:
        """Add studies until the archive holds ``target_instances`` instances."""
        pending: list[tuple[Patient, Study, list[Any]]] = []
        while self.instances < target_instances:
            index = self.studies
            if needles and index % 7 == 3 and index < 56:
                modalities: tuple[str, ...] = ("MG",)
                name = f"ZEBRAFISH^{GIVEN[index % len(GIVEN)]}"
            else:
                name = f"{self.rng.choice(FAMILIES)}^{self.rng.choice(GIVEN)}"
                modalities = self.rng.choice(MODALITIES)
            item = self._study(index, name, modalities)
            pending.append(item)
            self.studies += 1
            self.instances += sum(n for _, n in item[2])
            if len(pending) >= 200:
                self._write(pending)
                pending = []
        self._write(pending)

    def _write(self, batch: list[tuple[Patient, Study, list[Any]]]) -> None:
        if not batch:
            return
        patients = Patient.objects.bulk_create([p for p, _, _ in batch])
        for patient, (_, study, _) in zip(patients, batch, strict=True):
            study.patient = patient
        Study.objects.bulk_create([s for _, s, _ in batch])
        pks = dict(Study.objects.filter(study_instance_uid__in=[s.study_instance_uid for _, s, _ in batch]).values_list(
            "study_instance_uid", "pk"))  # fmt: skip
        # The fuzzy-matching words ingest writes for each new patient and study.
        PersonNameWord.objects.bulk_create(
            [PersonNameWord(word=w, patient=p) for p in patients for w in name_words(p.patient_name_search)]
            + [
                PersonNameWord(word=w, study_id=pks[s.study_instance_uid])
                for _, s, _ in batch
                for w in name_words(s.referring_physician_search)
            ]
        )
        series_rows, members = [], []
        for _, study, plan in batch:
            number_of_instances = 0
            for k, (modality, size) in enumerate(plan):
                uid = f"{study.study_instance_uid}.{k + 1}"
                series_rows.append(Series(
                    series_instance_uid=uid, study_id=pks[study.study_instance_uid], modality=modality,
                    series_number=k + 1, series_description=f"{modality} SERIES {k + 1}", series_date=study.study_date,
                    number_of_instances=size,
                    attributes={"00080060": attr("CS", modality), "0020000E": attr("UI", uid),
                                "00200011": attr("IS", k + 1), "0008103E": attr("LO", f"{modality} SERIES {k + 1}")},
                ))  # fmt: skip
                members.append((study.study_instance_uid, uid, modality, size))
                self.series_uids.append((study.study_instance_uid, uid))
                number_of_instances += size
            study.number_of_series, study.number_of_instances = len(plan), number_of_instances
        Series.objects.bulk_create(series_rows)
        Study.objects.bulk_update([s for _, s, _ in batch], ["number_of_series", "number_of_instances"])
        series_pks = dict(Series.objects.filter(series_instance_uid__in=[m[1] for m in members]).values_list(
            "series_instance_uid", "pk"))  # fmt: skip
        instances = []
        for study_uid, series_uid, modality, size in members:
            for n in range(size):
                sop = f"{series_uid}.{n + 1}"
                instances.append(Instance(
                    sop_instance_uid=sop, series_id=series_pks[series_uid], sop_class_uid=SOP.get(modality, SOP["CT"]),
                    instance_number=n + 1, transfer_syntax_uid="1.2.840.10008.1.2.1", number_of_frames=1, rows=512,
                    columns=512, size=525_000, sha256="0" * 64, storage_key=f"bench/{sop}",
                    metadata=self.template.replace("{study}", study_uid).replace("{series}", series_uid).replace(
                        "{sop}", sop), frames=[[[1000, 524288]]],
                ))  # fmt: skip
        Instance.objects.bulk_create(instances, batch_size=2000)


def use_database(name: str) -> None:
    """Point the default connection at another database of the same server (or SQLite file)."""
    connection.close()
    connection.settings_dict["NAME"] = name


def prepare(name: str, size: int, token_hash: str) -> Generator:
    """Migrate ``name``, add the bench user and its token, fill it to ``size`` instances."""
    use_database(name)
    call_command("migrate", verbosity=0)
    if Study.objects.exists():
        raise SystemExit(f"refusing to run: {name} already holds studies (use an empty database)")
    site = Site.objects.create(code="bench", name="Bench", institution_names=INSTITUTION)
    user = User.objects.create_user("bench-reader", password=None)
    SiteMembership.objects.create(user=user, site=site)
    ApiToken.objects.create(user=user, name="qido-scale", prefix="pacs_bench", token_hash=token_hash)
    gen = Generator(site)
    t0 = time.perf_counter()
    gen.add(size, needles=True)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")  # planner statistics, as autovacuum / PRAGMA optimize keep them
    print(f"{gen.instances} instances in {gen.studies} studies written in {time.perf_counter() - t0:.0f} s")
    return gen


def searches(gen: Generator, rng: random.Random) -> dict[str, str]:
    """One URL per benchmark search; random targets come from ``gen``'s own archive."""
    newest = NEWEST.strftime("%Y%m%d")
    day_before = (NEWEST - timedelta(days=1)).strftime("%Y%m%d")
    study, series = rng.choice(gen.series_uids)
    return {
        "patient-name wildcard (ZEBR*)": "/dicom-web/studies?PatientName=ZEBR*",
        "patient-name fuzzy (zebra)": "/dicom-web/studies?PatientName=zebra&fuzzymatching=true",
        "date range (2 days)": f"/dicom-web/studies?StudyDate={day_before}-{newest}",
        "ModalitiesInStudy=MG (rare)": "/dicom-web/studies?ModalitiesInStudy=MG",
        "ModalitiesInStudy=MR limit=10": "/dicom-web/studies?ModalitiesInStudy=MR&limit=10",
        "accession exact": f"/dicom-web/studies?AccessionNumber={rng.choice(gen.accessions)}",
        "worklist page limit=25 +includefield": (
            "/dicom-web/studies?limit=25&offset=0&includefield=00081030&includefield=00201208"
        ),
        "series of a study": f"/dicom-web/studies/{rng.choice(gen.study_uids)}/series",
        "instances of a series": f"/dicom-web/studies/{study}/series/{series}/instances",
    }


def timed(client: Client, url: str, count: int) -> list[float]:
    client.get(url, HTTP_ACCEPT="application/dicom+json")  # warm: connection, caches
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        response = client.get(url, HTTP_ACCEPT="application/dicom+json")
        samples.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.content[:300])
    return samples


def shape(client: Client, url: str) -> tuple[int, int]:
    """Result count and SQL statements of one request."""
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, HTTP_ACCEPT="application/dicom+json")
    return len(json.loads(response.content)), len(ctx.captured_queries)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=30, help="timed requests per search and size")
    ap.add_argument("--picks", type=int, default=3, help="random targets (study, series, accession) per search")
    args = ap.parse_args()
    base = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        names = {"2k": base, "100k": base.replace(".sqlite3", "-100k.sqlite3")}
    else:
        names = {"2k": base, "100k": f"{base}_100k"}
        with connection.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [names["100k"]])
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{names["100k"]}"')
    raw = "pacs_qido_scale_" + os.urandom(16).hex()
    sizes = {"2k": args.small, "100k": args.large}
    gens = {label: prepare(names[label], sizes[label], hash_token(raw)) for label in names}
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    samples: dict[str, dict[str, list[float]]] = {"2k": {}, "100k": {}}
    shapes: dict[str, dict[str, tuple[int, int]]] = {"2k": {}, "100k": {}}
    rngs = {label: random.Random(5) for label in names}
    block = max(1, args.repeat // (2 * args.picks))
    for _ in range(args.picks):
        urls = {label: searches(gens[label], rngs[label]) for label in names}
        for name in urls["2k"]:
            for _ in range(2):  # alternate sizes so that machine load hits both alike
                for label in names:
                    use_database(names[label])
                    samples[label].setdefault(name, []).extend(timed(client, urls[label][name], block))
                    shapes[label].setdefault(name, shape(client, urls[label][name]))
    vendor = connection.vendor
    print(f"\nQIDO-RS scale on {vendor}: median ms of {2 * args.picks * block} requests per search and size")
    print("(django.test.Client with a bearer token of a site member; n = results; SQL = statements per request)")
    head = f"{'search':38s} {'n 2k':>5s} {'ms 2k':>7s} {'n 100k':>6s} {'ms 100k':>7s} {'SQL':>4s} {'ratio':>6s}"
    print(head)
    print("-" * len(head))
    worst = 0.0
    for name in samples["2k"]:
        small, large = statistics.median(samples["2k"][name]), statistics.median(samples["100k"][name])
        ratio = large / small
        worst = max(worst, ratio)
        (n_s, _), (n_l, q_l) = shapes["2k"][name], shapes["100k"][name]
        print(f"{name:38s} {n_s:5d} {small:7.2f} {n_l:6d} {large:7.2f} {q_l:4d} {ratio:6.2f}")
    print(f"\nworst ratio {worst:.2f} (target <= 1.5): {'PASS' if worst <= 1.5 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
