"""``manage.py import_legacy``: migrate studies from a legacy PACS, resumably, and print the reconciliation.

The legacy PACS must be a registered DICOM device (``manage.py dicom_device
add --ae AE --site SITE --store``): its AE title identifies it, its site
receives the studies, and ``may store`` lets its C-STOREs (the C-MOVE
sub-operations) in. A job is the legacy AE title plus its filters (dates,
modalities, method): running the same command again continues that job.
When the last run was interrupted, stopped or failed it needs ``--resume``
(so that a typo does not silently continue an old job); when it completed,
the run is incremental and fetches only what appeared or changed since.
"""

from __future__ import annotations

import signal
import time
from datetime import date, datetime
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from archive.models import DicomDevice
from migration import report, runner
from migration.lease import JobBusy
from migration.models import MODALITY, Job, JobState, Method
from migration.schedule import Window

ACTOR = "manage.py import_legacy"
#: The first study date asked for without --from: ACR-NEMA 1.0 (1985) came before any DICOM archive.
EARLIEST = date(1985, 1, 1)


def parse_date(text: str) -> date:
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise CommandError(f"a date is YYYY-MM-DD (or YYYYMMDD), not {text!r}")


class Command(BaseCommand):
    help = "Migrate studies from a legacy PACS (C-FIND inventory, C-MOVE or C-GET, reconciliation), resumably."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--aet", required=True, help="AE title of the legacy PACS (a registered DICOM device)")
        parser.add_argument("--host", required=True, help="its address")
        parser.add_argument("--port", required=True, type=int, help="its DICOM port")
        parser.add_argument("--from", dest="date_from", help="first study date (YYYY-MM-DD); default 1985-01-01")
        parser.add_argument("--to", dest="date_to", help="last study date (YYYY-MM-DD); default: today")
        parser.add_argument("--modality", action="append", default=[], help="only series of this modality (repeat)")
        parser.add_argument("--window", help="work only between these times of day, HH:MM-HH:MM (may wrap midnight)")
        parser.add_argument("--rate", type=float, help="at most this many instances per second")
        parser.add_argument("--method", choices=[m.value for m in Method], default=Method.MOVE.value)
        parser.add_argument("--destination", default="", help="AE title the legacy PACS sends C-MOVEs to (ours)")
        parser.add_argument("--max-results", type=int, default=500, help="narrow a C-FIND answering this many")
        parser.add_argument("--resume", action="store_true", help="continue an interrupted, stopped or failed job")
        parser.add_argument("--csv", help="write the reconciliation report to this CSV file at the end")

    def handle(self, *args: Any, **options: Any) -> None:
        job, resumed = self.job(options)
        self.stdout.write(f"migration job #{job.pk} from {job.device.ae_title}{' (resumed)' if resumed else ''}")
        bar = ProgressBar(self.stderr)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            state = runner.run(job, ACTOR, bar)
        except JobBusy as exc:
            raise CommandError(str(exc)) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            bar.close()
        job.refresh_from_db()
        built = report.build(job)
        for label, value in built.summary():
            self.stdout.write(f"  {label}: {value}")
        if options["csv"]:
            with open(options["csv"], "w", newline="", encoding="utf-8") as out:
                report.write_csv(job, out)
        if state == JobState.FAILED:
            raise CommandError(f"migration job #{job.pk} failed: {job.last_error}")
        self.stdout.write(f"migration job #{job.pk}: {state}")

    def job(self, options: dict[str, Any]) -> tuple[Job, bool]:
        ae_title = options["aet"].strip()
        device = DicomDevice.objects.select_related("site").filter(ae_title=ae_title).first()
        if device is None:
            raise CommandError(
                f"no DICOM device {ae_title!r}: register the legacy PACS first "
                f"(manage.py dicom_device add --ae {ae_title} --site SITE --store)"
            )
        if not device.enabled or not device.may_store:
            raise CommandError(f"DICOM device {ae_title!r} must be enabled and allowed to store (its C-STOREs)")
        if not 0 < options["port"] < 65536:
            raise CommandError(f"--port must be 1-65535, not {options['port']}")
        if not options["host"].strip():
            raise CommandError("--host must not be empty")
        date_from = parse_date(options["date_from"]) if options["date_from"] else EARLIEST
        date_to = parse_date(options["date_to"]) if options["date_to"] else None
        if date_to is not None and date_to < date_from:
            raise CommandError(f"--from {date_from} is after --to {date_to}")
        modalities = sorted({m.strip().upper() for m in options["modality"]})
        for modality in modalities:
            if not MODALITY.match(modality):
                raise CommandError(f"--modality takes a DICOM modality such as CT or MR, not {modality!r}")
        window = None
        if options["window"]:
            try:
                window = Window.parse(options["window"])
            except ValueError as exc:
                raise CommandError(f"--window: {exc}") from None
        if options["rate"] is not None and not options["rate"] > 0:
            raise CommandError(f"--rate must be a positive number of instances per second, not {options['rate']}")
        if options["max_results"] < 1:
            raise CommandError("--max-results must be at least 1")
        filters = {
            "device": device,
            "date_from": date_from,
            "date_to": date_to,
            "modalities": ",".join(modalities),
            "method": options["method"],
        }
        settings = {
            "host": options["host"].strip(),
            "port": options["port"],
            "destination_ae": options["destination"].strip(),
            "window_start": window.start if window else None,
            "window_end": window.end if window else None,
            "rate_limit": options["rate"],
            "max_results": options["max_results"],
        }
        with transaction.atomic():
            job = Job.objects.filter(**filters).order_by("-created_at").first()
            if job is None:
                if options["resume"]:
                    raise CommandError("--resume: no migration job with these arguments to resume")
                return Job.objects.create(**filters, **settings, created_by=ACTOR), False
            unfinished = job.state not in (JobState.NEW, JobState.COMPLETE)
            if unfinished and not options["resume"]:
                raise CommandError(
                    f"migration job #{job.pk} with these arguments is {job.state}: "
                    "run the same command with --resume to continue it"
                )
            for name, value in settings.items():
                setattr(job, name, value)
            job.save()
        return job, unfinished


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class ProgressBar:
    """A one-line progress bar on stderr, plain text: redrawn in place on a terminal, a line every 5 s otherwise.

    The last state of the retrieval is always drawn before the run's final line.
    """

    WIDTH = 30

    def __init__(self, out: Any) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.last = 0.0
        self.drawn = False
        self.unshown = ""

    def __call__(self, progress: runner.Progress) -> None:
        line = self.line(progress)
        final = progress.phase == "done"
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            self.unshown = line if progress.phase == "retrieve" else self.unshown
            return
        self.last = now
        if final and self.unshown:
            self.show(self.unshown)
        self.unshown = ""
        self.show(line, final)

    def line(self, progress: runner.Progress) -> str:
        if progress.phase == "retrieve":
            share = progress.done / progress.total if progress.total else 1.0
            filled = int(share * self.WIDTH)
            rate = progress.received / progress.seconds if progress.seconds else 0.0
            mbps = progress.received_bytes / progress.seconds / 1e6 if progress.seconds else 0.0
            return (
                f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {progress.done}/{progress.total} instances "
                f"{share:4.0%}  {rate:.1f} inst/s  {mbps:.1f} MB/s"
            )
        if progress.phase == "done":
            return f"migration {progress.note}"
        return f"{progress.phase}: {progress.note}"

    def show(self, line: str, final: bool = False) -> None:
        if self.tty:
            self.out.write("\r\x1b[K" + line + ("\n" if final else ""), ending="")
            self.drawn = not final
        else:
            self.out.write(line)
        self.out.flush()

    def close(self) -> None:
        if self.drawn:
            self.out.write("")
            self.out.flush()
