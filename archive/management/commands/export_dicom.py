"""``manage.py export_dicom DEST [--study UID]… [--wait]``: the archive, or some studies, as DICOM with a DICOMDIR.

Exit status: 0 when everything was exported intact; 1 when some instance
could not be exported intact (or the export could not start); 3 when some
instances are not online: their restores were started and are listed with
an estimate, what was online is exported. ``--wait`` waits for the restores
first (with progress), so one run exports everything.
"""

from __future__ import annotations

import math
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
        parser.add_argument(
            "--wait",
            action="store_true",
            help="wait for the restores of instances on tiers that need one, then export everything",
        )
        parser.add_argument(
            "--max-wait", type=float, default=None, metavar="MINUTES", help="with --wait: wait at most this long"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bad = [uid for uid in options["study"] if not is_valid_uid(uid)]
        if bad:
            raise CommandError(f"not a UID: {', '.join(repr(uid[:80]) for uid in bad)}")
        bar = Progress(self.stderr, None, "export", " instances")

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        restoring = Progress(self.stderr, None, "restoring", " instances")

        def waited(done: int, total: int, seconds_left: int) -> None:
            restoring.total = total
            restoring.label = f"restoring (about {max(1, round(seconds_left / 60))} min left)"
            restoring.update(done, force=True)  # once per poll (PACS_RESTORE_POLL_SECONDS)

        max_wait = options["max_wait"] * 60 if options["max_wait"] is not None else None
        if max_wait is not None and not (math.isfinite(max_wait) and max_wait >= 0):
            raise CommandError("--max-wait must be a number of minutes, not negative")
        try:
            report = export_dicom(
                options["dest"],
                options["study"],
                progress if options["verbosity"] else None,
                wait=options["wait"],
                waited=waited if options["verbosity"] else None,
                max_wait=max_wait,
            )
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
        for uid, reason in report.not_online:
            self.stderr.write(f"not online, left out {uid}: {reason}")
        if report.failed:
            raise CommandError(f"{len(report.failed)} instances could not be exported intact; see above")
        if report.not_online:
            why = (
                f"restores under way, about {report.restore_minutes} min"
                if report.restore_seconds_left
                else "see above"
            )
            raise CommandError(
                f"{len(report.not_online)} instances are not online and were left out ({why}); "
                "export them again into an empty folder once restored, or run with --wait",
                returncode=3,
            )
