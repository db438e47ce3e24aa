"""``manage.py reindex``: rebuild the archive index from the stored files alone."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import ProtectedError

from archive.ingest.reindex import reindex


class Command(BaseCommand):
    help = "Rebuild the index (patients, studies, series, instances) from the stored DICOM files."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tier", action="append", help="storage tier to scan (repeatable; default: every tier)")
        parser.add_argument("--wipe", action="store_true", help="delete every index row first, then rebuild")

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(n: int) -> None:
            self.stderr.write(f"… {n} objects scanned")

        try:
            report = reindex(
                options["tier"], wipe=options["wipe"], progress=progress if options["verbosity"] > 1 else None
            )
        except ProtectedError as exc:
            raise CommandError(f"--wipe refused: other records still point at studies ({exc})") from None
        self.stdout.write(
            f"scanned {report.scanned}, indexed {report.indexed}, already indexed {report.already}, "
            f"earlier versions {report.versions}, invalid {len(report.invalid)}, "
            f"corrupt {len(report.corrupt)}, conflicts {len(report.conflicts)}"
        )
        for line in report.invalid + report.corrupt + report.conflicts + report.ties:
            self.stderr.write(line)
        if report.corrupt or report.conflicts:
            raise CommandError("some stored objects could not be indexed; see above")
