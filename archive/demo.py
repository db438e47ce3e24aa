"""The demo data set: synthetic studies that ``make run`` loads once.

Everything is generated from :mod:`archive.dicom.synthetic` (no download, no real
patient). UIDs are derived from fixed names and every byte is deterministic,
so loading twice is idempotent: a series already complete is skipped, and a
half-loaded series is completed (identical instances are duplicates, not
conflicts). Each instance goes through the one ingest path,
:func:`archive.ingest.store.store_instance`, exactly as a STOW-RS upload would.

The set covers what a newcomer wants to try: a 512×512 16-bit CT series of 60
slices for the viewer, MR, CR and multi-frame ultrasound clips, priors (the
same patient on an older date) and patients whose names are not ASCII.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from archive.dicom.synthetic import StudySpec, make_instance
from archive.ingest.store import Outcome, store_instance
from archive.models import Instance, Site, Study
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter

NAMESPACE = "cloud-pacs demo data set v1"


def demo_uid(*parts: object) -> str:
    """A stable ``2.25.`` UID (PS3.5 §B.2) from a name-based UUID of ``parts``: the same on every machine."""
    name = "/".join([NAMESPACE, *map(str, parts)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


@dataclass(frozen=True)
class SeriesPlan:
    """One series to generate: modality, geometry and instance count."""

    modality: str
    description: str
    count: int
    size: int
    frames: int = 1
    body_part: str = ""


@dataclass
class StudyPlan:
    """One study to generate: who, when and which series."""

    key: str
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    description: str
    series: list[SeriesPlan] = field(default_factory=list)
    institution: str = "Demo General Hospital"
    referring: str = "REFERRER^ALICE"

    def spec(self) -> StudySpec:
        return StudySpec(
            patient_name=self.patient_name,
            patient_id=self.patient_id,
            birth_date=self.birth_date,
            sex=self.sex,
            study_uid=demo_uid(self.key, "study"),
            study_date=self.study_date,
            study_time="093000",
            accession=("DEMO" + self.key.upper().replace("-", ""))[:16],
            description=self.description,
            referring=self.referring,
            institution=self.institution,
            charset="ISO_IR 192",
        )


def plans() -> list[StudyPlan]:
    """The studies of the demo data set (a few hundred instances in all)."""
    return [
        StudyPlan(
            "doe-ct",
            "DOE^JANE",
            "DEMO-0001",
            "19640312",
            "F",
            "20250310",
            "CT CHEST WITH CONTRAST",
            [
                SeriesPlan("CT", "AXIAL 512 2.5MM", 60, 512, body_part="CHEST"),
                SeriesPlan("CT", "SCOUT", 1, 256, body_part="CHEST"),
            ],
        ),
        StudyPlan(
            "doe-ct-prior",
            "DOE^JANE",
            "DEMO-0001",
            "19640312",
            "F",
            "20230905",
            "CT CHEST",
            [SeriesPlan("CT", "AXIAL 2.5MM", 30, 256, body_part="CHEST")],
        ),
        StudyPlan(
            "smith-mr",
            "SMITH^JOHN",
            "DEMO-0002",
            "19580721",
            "M",
            "20250302",
            "MR BRAIN",
            [
                SeriesPlan("MR", "T1 AXIAL", 24, 256, body_part="HEAD"),
                SeriesPlan("MR", "T2 AXIAL", 24, 256, body_part="HEAD"),
                SeriesPlan("MR", "DWI AXIAL", 24, 256, body_part="HEAD"),
            ],
        ),
        StudyPlan(
            "smith-mr-prior",
            "SMITH^JOHN",
            "DEMO-0002",
            "19580721",
            "M",
            "20220114",
            "MR BRAIN",
            [SeriesPlan("MR", "T2 AXIAL", 20, 256, body_part="HEAD")],
        ),
        StudyPlan(
            "mueller-cr",
            "MÜLLER^JÜRGEN",
            "DEMO-0003",
            "19710203",
            "M",
            "20250228",
            "CR THORAX PA UND LATERAL",
            [
                SeriesPlan("CR", "PA", 1, 1024, body_part="CHEST"),
                SeriesPlan("CR", "LATERAL", 1, 1024, body_part="CHEST"),
            ],
            institution="Klinikum Demo",
        ),
        StudyPlan(
            "yamada-ct",
            "Yamada^Taro=山田^太郎=やまだ^たろう",
            "DEMO-0004",
            "19800615",
            "M",
            "20250301",
            "CT 腹部",
            [SeriesPlan("CT", "AXIAL 5MM", 40, 256, body_part="ABDOMEN")],
            institution="デモ病院",
        ),
        StudyPlan(
            "garcia-us",
            "GARCÍA^MARÍA",
            "DEMO-0005",
            "19920930",
            "F",
            "20250305",
            "US ABDOMEN",
            [
                SeriesPlan("US", "LIVER CLIP", 2, 256, frames=40, body_part="ABDOMEN"),
                SeriesPlan("US", "KIDNEY CLIP", 2, 256, frames=30, body_part="ABDOMEN"),
            ],
        ),
        StudyPlan(
            "obrien-ct",
            "O'BRIEN^PATRICK",
            "DEMO-0006",
            "19490101",
            "M",
            "20250307",
            "CT HEAD WITHOUT CONTRAST",
            [SeriesPlan("CT", "AXIAL 5MM", 30, 256, body_part="HEAD")],
        ),
        StudyPlan(
            "obrien-ct-prior",
            "O'BRIEN^PATRICK",
            "DEMO-0006",
            "19490101",
            "M",
            "20241111",
            "CT HEAD WITHOUT CONTRAST",
            [SeriesPlan("CT", "AXIAL 5MM", 30, 256, body_part="HEAD")],
        ),
        StudyPlan(
            "nguyen-cr",
            "NGUYEN^AN",
            "DEMO-0007",
            "20010411",
            "F",
            "20250309",
            "CR HAND LEFT",
            [SeriesPlan("CR", "PA", 1, 512, body_part="HAND"), SeriesPlan("CR", "OBLIQUE", 1, 512, body_part="HAND")],
        ),
        StudyPlan(
            "nguyen-us",
            "NGUYEN^AN",
            "DEMO-0007",
            "20010411",
            "F",
            "20240102",
            "US THYROID",
            [SeriesPlan("US", "THYROID CLIP", 1, 256, frames=30, body_part="NECK")],
        ),
    ]


@dataclass
class LoadReport:
    """What :func:`load_demo` did."""

    studies: int = 0
    series_skipped: int = 0
    stored: int = 0
    duplicates: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def expected_instances(self) -> int:
        return sum(s.count for p in plans() for s in p.series)


def _series_instances(plan: StudyPlan, index: int, series: SeriesPlan) -> Iterator[bytes]:
    spec = plan.spec()
    series_uid = demo_uid(plan.key, "series", index)
    for number in range(1, series.count + 1):
        yield make_instance(
            spec,
            series.modality,
            series_uid=series_uid,
            series_number=index + 1,
            series_description=series.description,
            instance_number=number,
            size=series.size,
            frames=series.frames,
            sop_uid=demo_uid(plan.key, "instance", index, number),
            extra={
                "FrameOfReferenceUID": demo_uid(plan.key, "frame-of-reference", index),
                "BodyPartExamined": series.body_part,
                "StudyID": plan.key[:16],
            },
        )


def store_bytes(data: bytes) -> Outcome:
    """Store one Part 10 object through the one ingest path."""
    writer = StagingWriter(get_storage("hot"), max_bytes=len(data))
    try:
        writer.write(data)
        staged = writer.finish()
    except BaseException:
        writer.abort()
        raise
    return store_instance(staged).outcome


DEMO_SITE_CODE = "demo"


def demo_site() -> Site:
    """The site the demo studies belong to, matched by their Institution Names.

    Give users a membership of it in the admin and their role decides what they
    see of the demo studies, as for any real site.
    """
    names = sorted({plan.institution for plan in plans()})
    site, _ = Site.objects.get_or_create(code=DEMO_SITE_CODE, defaults={"name": "Demo hospitals"})
    if site.institution_name_list() != [n.upper() for n in names]:
        site.institution_names = "\n".join(names)
        site.save(update_fields=["institution_names"])
    Study.objects.filter(site=None, institution_name__in=names).update(site=site)
    return site


def load_demo(progress: Callable[[str], None] | None = None) -> LoadReport:
    """Load every demo study; complete series are skipped, so re-running is cheap."""
    started = time.monotonic()
    report = LoadReport()
    demo_site()
    for plan in plans():
        report.studies += 1
        for index, series in enumerate(plan.series):
            series_uid = demo_uid(plan.key, "series", index)
            if Instance.objects.filter(series__series_instance_uid=series_uid).count() >= series.count:
                report.series_skipped += 1
                continue
            for data in _series_instances(plan, index, series):
                outcome = store_bytes(data)
                if outcome is Outcome.STORED:
                    report.stored += 1
                elif outcome is Outcome.DUPLICATE:
                    report.duplicates += 1
                else:
                    report.failed.append(f"{plan.key} series {index + 1}: {outcome.value}")
            if progress is not None:
                progress(f"{plan.patient_name} · {plan.description} · {series.description}: {series.count} instances")
    report.seconds = time.monotonic() - started
    return report
