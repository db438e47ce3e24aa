"""``manage.py readiness_drill [--study UID]``: delete a non-production study to the trash, recover it, verify.

The seed's readiness drill ("delete and recover a non-production study to
verify data integrity and timestamps"), see :mod:`archive.ingest.drill`: a
study of a ``DRILL-`` patient (the latest, or a synthetic one the drill
stores) goes to the trash and back; every SHA-256, every index row and every
timestamp must be what it was. Prints a report; exit status 1 on any
difference or if the drill could not run.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.dicom.uid import is_valid_uid
from archive.ingest.drill import DrillError, run_drill
from audit.trail import record


class Command(BaseCommand):
    help = "Delete a non-production study to the trash, restore it, and verify bytes, rows and timestamps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--study", help="Study Instance UID of a non-production (DRILL-) study; default: pick one")

    def handle(self, *args: Any, **options: Any) -> None:
        uid = options["study"]
        if uid is not None and not is_valid_uid(uid):
            raise CommandError(f"not a valid Study Instance UID: {uid!r}")
        try:
            report = run_drill(uid)
        except DrillError as exc:
            record("readiness-drill", outcome="failed", actor="readiness drill", detail={"error": str(exc)})
            raise CommandError(f"readiness drill could not run: {exc}") from None
        created = " (stored for the drill)" if report.created else ""
        self.stdout.write(f"readiness drill on {report.study_instance_uid}{created}")
        for step in report.steps:
            self.stdout.write(f"  ok  {step}")
        for difference in report.differences:
            self.stdout.write(f"  DIFFERENT  {difference}")
        record(
            "readiness-drill",
            outcome="success" if report.ok else "failed",
            actor="readiness drill",
            study_instance_uid=report.study_instance_uid,
            detail={"instances": report.instances, "bytes": report.bytes, "differences": report.differences[:50]},
        )
        if not report.ok:
            raise CommandError(f"readiness drill FAILED: {len(report.differences)} differences")
        self.stdout.write(self.style.SUCCESS(f"readiness drill passed: {report.instances} instances identical"))
