"""``manage.py import_dicom SOURCE [--site CODE]``: store a folder of DICOM files through the one ingest path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.exchange.folder import import_folder
from archive.models import Site
from pacs.lib.progress import Progress


class Command(BaseCommand):
    help = (
        "Store every DICOM Part 10 file under SOURCE (an export_dicom folder, a CD, another archive's dump) as "
        "STOW-RS would; DICOMDIR files and other files are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", type=Path, help="a folder")
        parser.add_argument("--site", help="code of the site new studies belong to")

    def handle(self, *args: Any, **options: Any) -> None:
        source: Path = options["source"]
        if not source.is_dir():
            raise CommandError(f"{source} is not a folder")
        site = None
        if options["site"]:
            site = Site.objects.filter(code=options["site"]).first()
            if site is None:
                raise CommandError(f"no site with code {options['site']!r}")
        bar = Progress(self.stderr, None, "import", " files")
        report = import_folder(source, site, bar.update if options["verbosity"] else None)
        if options["verbosity"]:
            bar.finish(report.stored + report.duplicates + len(report.refused))
        self.stdout.write(
            f"stored {report.stored}, already stored {report.duplicates}, refused {len(report.refused)}, "
            f"skipped {report.skipped} (DICOMDIR or not DICOM)"
        )
        for path, reason in report.refused:
            self.stderr.write(f"refused {path}: {reason}")
        if report.refused:
            raise CommandError(f"{len(report.refused)} files were refused; see above")
