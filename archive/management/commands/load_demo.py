"""``manage.py load_demo``: load the synthetic demo data set (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from archive.demo import load_demo


class Command(BaseCommand):
    help = "Load the synthetic demo studies (skips series already loaded)."

    def handle(self, *args: Any, **options: Any) -> None:
        verbose = options["verbosity"] > 1
        report = load_demo(progress=self.stdout.write if verbose else None)
        if report.failed:
            raise CommandError("demo instances were refused: " + "; ".join(report.failed))
        if report.stored == 0 and report.duplicates == 0:
            self.stdout.write(f"Demo data set already loaded ({report.expected_instances} instances).")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data set loaded: {report.stored} instances stored, {report.duplicates} already present, "
                f"{report.studies} studies, in {report.seconds:.1f} s."
            )
        )
