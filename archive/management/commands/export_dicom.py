"""``manage.py export_dicom DEST [--study UID]…``: the archive, or some studies, as plain DICOM with a DICOMDIR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.dicom.uid import is_valid_uid
from archive.exchange.export import ExportError, export_dicom
from pacs.lib.progress import Progress


class Command(BaseCommand):
    help = (
        "Write the whole archive, or the studies named, into DEST (a new or empty folder) as DICOM Part 10 files "
        "exactly as stored, with a DICOMDIR; every file is checked against the SHA-256 recorded at ingest."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dest", type=Path, help="a new or empty folder")
        parser.add_argument(
            "--study", action="append", default=[], metavar="UID", help="a Study Instance UID (repeatable)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bad = [uid for uid in options["study"] if not is_valid_uid(uid)]
        if bad:
            raise CommandError(f"not a UID: {', '.join(repr(uid[:80]) for uid in bad)}")
        bar = Progress(self.stderr, None, "export", " instances")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        try:
            report = export_dicom(options["dest"], options["study"], progress if options["verbosity"] else None)
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        if options["verbosity"] and bar.total:
            bar.finish(bar.total)
        self.stdout.write(
            f"exported {report.instances} instances ({report.bytes / 1e6:,.1f} MB) of {report.studies} studies "
            f"into {options['dest']}, with a DICOMDIR"
        )
        for uid, reason in report.failed:
            self.stderr.write(f"left out {uid}: {reason}")
        if report.failed:
            raise CommandError(f"{len(report.failed)} instances could not be exported intact; see above")
