"""``manage.py audit_export``: write the audit trail as JSON lines, RFC 5424 syslog or FHIR AuditEvent.

Lines go to standard output, or with ``--send`` to the syslog collector named
by ``PACS_AUDIT_SYSLOG`` (or ``--to udp://host:514``). ``--since`` takes a
date or an ISO 8601 date-time; ``--after-id`` resumes after the last record a
previous run shipped (the last id is printed to standard error).
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.export import FORMATS, SyslogSender, export_lines
from audit.models import AuditEvent
from audit.trail import record


def parse_since(value: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"--since must be a date or ISO 8601 date-time, not {value!r}")
        moment = datetime.combine(day, time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


class Command(BaseCommand):
    help = "Export audit records (jsonl, syslog or fhir) to stdout or a syslog collector."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--since", help="only records at or after this date / date-time")
        parser.add_argument("--after-id", type=int, default=0, help="only records with a larger id")
        parser.add_argument("--send", action="store_true", help="send syslog lines to PACS_AUDIT_SYSLOG")
        parser.add_argument("--to", default="", help="syslog target (udp://host:port or tcp://host:port)")

    def handle(self, *args: Any, **options: Any) -> None:
        events = AuditEvent.objects.filter(id__gt=options["after_id"]).order_by("id")
        if options["since"]:
            events = events.filter(timestamp__gte=parse_since(options["since"]))
        last_id = options["after_id"]
        target = options["to"] or (settings.PACS_AUDIT_SYSLOG if options["send"] else "")
        if target and options["format"] != "syslog":
            raise CommandError("sending to a collector needs --format syslog")
        if options["send"] and not target:
            raise CommandError("--send needs PACS_AUDIT_SYSLOG or --to")
        try:
            sender = SyslogSender(target) if target else None
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot reach the syslog collector: {exc}") from None
        sent = 0
        try:
            for event in events.iterator(chunk_size=2000):
                (line,) = export_lines([event], options["format"])
                if sender is not None:
                    sender.send(line)
                else:
                    self.stdout.write(line)
                last_id = event.pk
                sent += 1
        except OSError as exc:
            raise CommandError(f"sending stopped after record {last_id}: {exc}") from None
        finally:
            if sender is not None:
                sender.close()
        record(
            "audit-export",
            actor="manage.py audit_export",
            detail={"format": options["format"], "records": sent, "last_id": last_id, "to": target},
        )
        self.stderr.write(f"{sent} record(s) exported; last id {last_id}")
