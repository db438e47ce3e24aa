"""``manage.py sweep``: remove stored objects that never got an index row.

A crash between placing an object and committing its row leaves an orphan; so
does a refused upload's staging file. Both are removed once older than a grace
period, so an upload in flight is never touched.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.ingest.sweep import sweep_orphans


class Command(BaseCommand):
    help = "Remove orphaned stored objects and stale staging files older than a grace period."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tier", action="append", help="storage tier (repeatable; default: hot)")
        parser.add_argument("--grace-minutes", type=float, default=60.0, help="minimum age of what is removed")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["grace_minutes"] < 0:
            raise CommandError("--grace-minutes must not be negative")
        grace = timedelta(minutes=options["grace_minutes"])
        for tier in options["tier"] or ["hot"]:
            removed = sweep_orphans(tier, min_age=grace)
            self.stdout.write(f"{tier}: removed {removed} orphaned or stale objects")
