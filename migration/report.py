"""The reconciliation report of a migration job: what was expected, what arrived, what is wrong, how fast.

Computed from the ledger alone (the ledger is itself checked against the
index by :mod:`migration.reconcile`): studies and instances expected,
received, identical (arrived, as listed, stored object verified), missing and
conflicting (mismatched); duplicates (the same pixel data under different SOP
Instance UIDs); throughput over the time spent retrieving, and the projected
finish at that rate inside the working-hours window. :func:`write_csv` writes
the per-instance table for the project file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from django.db.models import Count, Q
from django.utils import timezone

from migration.models import Job, LedgerInstance, LedgerStudy, State
from migration.schedule import Window, finish_after

PROBLEMS_SHOWN = 500


@dataclass
class Report:
    job: Job
    studies_expected: int = 0
    studies_received: int = 0
    studies_complete: int = 0
    instances_expected: int = 0
    instances_received: int = 0
    instances_identical: int = 0
    instances_missing: int = 0
    instances_conflicting: int = 0
    instances_failed: int = 0
    instances_left: int = 0
    duplicate_groups: list[list[str]] = field(default_factory=list)
    problems: list[LedgerInstance] = field(default_factory=list)
    instances_per_second: float = 0.0
    megabytes_per_second: float = 0.0
    gigabytes_per_hour: float = 0.0
    projected_finish: datetime | None = None
    generated_at: datetime = field(default_factory=timezone.now)

    @property
    def duplicate_instances(self) -> int:
        return sum(len(g) for g in self.duplicate_groups)

    @property
    def proven(self) -> bool:
        """Every listed instance arrived identical: nothing missing, conflicting, failed or left."""
        return self.instances_expected > 0 and self.instances_identical == self.instances_expected

    def summary(self) -> list[tuple[str, Any]]:
        """The figures as (label, value) rows, in the order the HTML page and the command print them."""
        return [
            ("studies expected", self.studies_expected),
            ("studies received", self.studies_received),
            ("studies complete", self.studies_complete),
            ("instances expected", self.instances_expected),
            ("instances received", self.instances_received),
            ("instances identical", self.instances_identical),
            ("instances missing", self.instances_missing),
            ("instances conflicting", self.instances_conflicting),
            ("instances failed", self.instances_failed),
            ("instances still to fetch", self.instances_left),
            ("duplicates (same pixel data, other UIDs)", self.duplicate_instances),
            ("duplicate groups", len(self.duplicate_groups)),
            ("throughput (instances/s)", round(self.instances_per_second, 2)),
            ("throughput (MB/s)", round(self.megabytes_per_second, 2)),
            ("throughput (GB/h)", round(self.gigabytes_per_hour, 3)),
            (
                "projected finish",
                f"{timezone.localtime(self.projected_finish):%Y-%m-%d %H:%M}" if self.projected_finish else "-",
            ),
        ]


def build(job: Job) -> Report:
    report = Report(job)
    instances = job.instances.aggregate(
        expected=Count("id"),
        received=Count("id", filter=Q(state__in=(State.COMPLETE, State.MISMATCHED))),
        identical=Count("id", filter=Q(state=State.COMPLETE, verified=True)),
        missing=Count("id", filter=Q(state=State.MISSING)),
        conflicting=Count("id", filter=Q(state=State.MISMATCHED)),
        failed=Count("id", filter=Q(state=State.FAILED)),
        left=Count("id", filter=Q(state__in=(State.PENDING, State.IN_PROGRESS))),
    )
    report.instances_expected = instances["expected"]
    report.instances_received = instances["received"]
    report.instances_identical = instances["identical"]
    report.instances_missing = instances["missing"]
    report.instances_conflicting = instances["conflicting"]
    report.instances_failed = instances["failed"]
    report.instances_left = instances["left"]
    studies = LedgerStudy.objects.filter(job=job)
    report.studies_expected = studies.count()
    report.studies_received = (
        studies.filter(series__instances__state__in=(State.COMPLETE, State.MISMATCHED)).distinct().count()
    )
    report.studies_complete = studies.filter(state=State.COMPLETE).count()
    report.duplicate_groups = duplicates(job)
    report.problems = list(
        job.instances.exclude(state=State.COMPLETE)
        .select_related("series__study")
        .order_by("state", "id")[:PROBLEMS_SHOWN]
    )
    if job.work_seconds > 0:
        report.instances_per_second = job.received_instances / job.work_seconds
        report.megabytes_per_second = job.received_bytes / job.work_seconds / 1e6
        report.gigabytes_per_hour = job.received_bytes / job.work_seconds * 3600 / 1e9
    if report.instances_left == 0:
        report.projected_finish = job.finished_at if job.inventory_done else None
    elif report.instances_per_second > 0:
        window = Window(job.window_start, job.window_end) if job.window_start and job.window_end else None
        seconds = report.instances_left / report.instances_per_second
        report.projected_finish = finish_after(timezone.localtime(), seconds, window)
    return report


def duplicates(job: Job) -> list[list[str]]:
    """Groups of SOP Instance UIDs of the job whose pixel data is the same (as received)."""
    hashes = (
        job.instances.exclude(pixel_sha256="")
        .values("pixel_sha256")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("pixel_sha256", flat=True)
    )
    groups: dict[str, list[str]] = {}
    rows = job.instances.filter(pixel_sha256__in=list(hashes)).order_by("pixel_sha256", "sop_instance_uid")
    for digest, uid in rows.values_list("pixel_sha256", "sop_instance_uid"):
        groups.setdefault(digest, []).append(uid)
    return list(groups.values())


CSV_COLUMNS = [
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_class_uid",
    "state",
    "identical",
    "size",
    "pixel_sha256",
    "duplicate_of",
    "attempts",
    "last_error",
]


def rows(job: Job) -> Iterator[list[str]]:
    """The CSV rows of every ledger instance of ``job`` (after the header)."""
    first_of: dict[str, str] = {}
    for group in duplicates(job):
        for uid in group[1:]:
            first_of[uid] = group[0]
    ledger = job.instances.select_related("series__study").order_by("series__study_id", "series_id", "id")
    for row in ledger.iterator(chunk_size=2000):
        yield [
            row.series.study.study_instance_uid,
            row.series.series_instance_uid,
            row.sop_instance_uid,
            row.sop_class_uid,
            row.state,
            "yes" if row.state == State.COMPLETE and row.verified else "no",
            "" if row.size is None else str(row.size),
            row.pixel_sha256,
            first_of.get(row.sop_instance_uid, ""),
            str(row.attempts),
            row.last_error,
        ]


def csv_lines(job: Job) -> Iterator[str]:
    """The report as CSV text, line by line: the summary figures as ``#`` comment lines, then one row per instance."""
    for label, value in build(job).summary():
        yield f"# {label}: {value}\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows(job):
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def write_csv(job: Job, out: TextIO) -> None:
    """The report as a CSV file (see :func:`csv_lines`)."""
    for text in csv_lines(job):
        out.write(text)
