"""``manage.py trash``: the recoverable trash of deleted studies.

- ``trash list``: the studies and series in the trash, when they went, by whom, when they may be purged;
- ``trash delete STUDY_UID [--series SERIES_UID] [--reason TEXT]``: move a study, or one series of it, to the
  trash (legal holds and retention on the study may refuse);
- ``trash restore UID``: bring a study or a series (its UID) back, rows, timestamps and bytes as they were;
- ``trash purge [--older-than DAYS]``: remove for good what has been in the trash past its period
  (``PACS_TRASH_DAYS``) or, with ``--older-than``, longer than DAYS; legal holds and retention still keep.

Every change is audited with the actor ``manage.py trash``. A refusal or an
unknown study is an error (exit status 1) that says why.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.dicom.uid import is_valid_uid
from archive.ingest.retention import DeletionRefused
from archive.ingest.trash import TrashError, find_entry, purge, restore_study, trash_series, trash_study
from archive.models import Series, Study, TrashEntry

ACTOR = "manage.py trash"


def study_uid(value: str) -> str:
    if not is_valid_uid(value):
        raise CommandError(f"not a valid Study Instance UID: {value!r}")
    return value


class Command(BaseCommand):
    help = "List, delete to, restore from and purge the trash of deleted studies and series."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="the studies in the trash")
        delete = sub.add_parser("delete", help="move a study, or one series of it, to the trash")
        delete.add_argument("study")
        delete.add_argument("--series", metavar="SERIES_UID", help="only this series of the study")
        delete.add_argument("--reason", default="", help="why (kept in the audit trail)")
        restore = sub.add_parser("restore", help="bring a study or a series back from the trash")
        restore.add_argument("study", metavar="UID", help="a Study or Series Instance UID")
        purge_ = sub.add_parser("purge", help="remove for good what has waited its period")
        purge_.add_argument("--older-than", type=int, metavar="DAYS", help="purge what is older than DAYS instead")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, "do_" + options["action"])(options)

    def do_list(self, options: dict[str, Any]) -> None:
        entries = TrashEntry.objects.order_by("trashed_at")
        if not entries:
            self.stdout.write("The trash is empty.")
            return
        for e in entries:
            state = " (being purged)" if e.purging_at else ""
            what = f"series {e.series_instance_uid} of {e.original_study_uid}" if e.series_instance_uid else ""
            self.stdout.write(
                f"{what or e.study_instance_uid}  trashed {e.trashed_at:%Y-%m-%d %H:%M} by {e.trashed_by or '?'}  "
                f"purge after {e.purge_after:%Y-%m-%d}  {e.instances} instances, {e.bytes} bytes{state}"
            )

    def do_delete(self, options: dict[str, Any]) -> None:
        uid = study_uid(options["study"])
        study = Study.objects.filter(study_instance_uid=uid, trashed_at__isnull=True).first()
        if study is None:
            raise CommandError(f"no such study (or already in the trash): {uid}")
        series = None
        if options["series"]:
            series = Series.objects.filter(study=study, series_instance_uid=study_uid(options["series"])).first()
            if series is None:
                raise CommandError(f"no such series in {uid} (or already in the trash): {options['series']}")
        try:
            if series is not None:
                entry = trash_series(series, actor=ACTOR, reason=options["reason"], via="command")
            else:
                entry = trash_study(study, actor=ACTOR, reason=options["reason"], via="command")
        except (DeletionRefused, TrashError) as exc:
            raise CommandError(f"not deleted: {exc}") from None
        if entry.series_instance_uid:
            what = entry.series_instance_uid
            self.stdout.write(f"series {what} of {uid} is in the trash until {entry.purge_after:%Y-%m-%d}")
        else:
            what = uid
            last = " (it was the study's last series: the study went with it)" if series is not None else ""
            self.stdout.write(f"{uid} is in the trash until {entry.purge_after:%Y-%m-%d}{last}")
        self.stdout.write(f"restore: manage.py trash restore {what}")

    def do_restore(self, options: dict[str, Any]) -> None:
        uid = study_uid(options["study"])
        entry = find_entry(uid)
        try:
            restore_study(entry.study_instance_uid if entry is not None else uid, actor=ACTOR, via="command")
        except TrashError as exc:
            raise CommandError(f"{uid}: {exc}") from None
        self.stdout.write(f"{uid} restored")

    def do_purge(self, options: dict[str, Any]) -> None:
        days = options["older_than"]
        if days is not None and days < 0:
            raise CommandError("--older-than takes a number of days, 0 or more")
        started = time.monotonic()
        report = purge(older_than=None if days is None else timedelta(days=days), actor=ACTOR)
        elapsed = time.monotonic() - started
        for uid in report.purged:
            self.stdout.write(f"purged {uid}")
        for uid, why in report.kept:
            self.stdout.write(f"kept {uid}: {why}")
        self.stdout.write(
            f"{len(report.purged)} studies purged ({report.instances} instances, {report.bytes} bytes) "
            f"in {elapsed:.2f} s; {len(report.kept)} kept"
        )
