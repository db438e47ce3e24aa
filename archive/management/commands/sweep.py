"""``manage.py sweep``: index stored objects that have no index row; remove leftovers.

A crash between placing an object and committing its row leaves an object
without a row: it is indexed (audited as recovered by sweep), never deleted.
Objects whose bytes do not match their key, and the staging files of
interrupted uploads, are removed. Only what is older than the grace period
is touched, so an upload in flight never is (see :mod:`archive.ingest.sweep`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.ingest.sweep import sweep_orphans


class Command(BaseCommand):
    help = "Index stored objects without an index row; remove corrupt objects and stale staging files."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tier", action="append", help="storage tier (repeatable; default: hot)")
        parser.add_argument("--grace-minutes", type=float, default=60.0, help="minimum age of what is touched")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["grace_minutes"] < 0:
            raise CommandError("--grace-minutes must not be negative")
        grace = timedelta(minutes=options["grace_minutes"])
        for tier in options["tier"] or ["hot"]:
            report = sweep_orphans(tier, min_age=grace)
            self.stdout.write(
                f"{tier}: indexed {report.recovered} objects that had no index row, "
                f"recorded {report.versions} earlier versions that had lost their row, "
                f"removed {report.removed} corrupt objects or stale staging files"
            )
            for line in report.kept:
                self.stdout.write(f"{tier}: left in place: {line}")
