"""``manage.py audit_forward``: stream the audit trail to the syslog collector of a SIEM.

Sends every record after the target's persisted cursor to ``PACS_AUDIT_SYSLOG``
(or ``--to udp://host:514`` / ``tcp://host:601``) as RFC 5424 lines; with
``--follow`` it keeps running and ships new records within ``--interval``
seconds of their being written (run it as a service beside the web processes).
A new target starts with the whole trail, or with ``--from-now`` at its end.
See :mod:`audit.forward` for the delivery guarantees.
"""

from __future__ import annotations

import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import forward as auditforward
from audit.export import SyslogSender
from audit.trail import record


class Command(BaseCommand):
    help = "Send new audit records to the syslog collector (PACS_AUDIT_SYSLOG); --follow keeps doing it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", default="", help="syslog target (udp://host:port or tcp://host:port)")
        parser.add_argument("--follow", action="store_true", help="keep running and ship records as they come")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls with --follow")
        parser.add_argument("--batch", type=int, default=500, help="records per batch (the cursor moves per batch)")
        parser.add_argument("--from-now", action="store_true", help="a new target starts at the newest record")

    def handle(self, *args: Any, **options: Any) -> None:
        target = options["to"] or settings.PACS_AUDIT_SYSLOG
        if not target:
            raise CommandError("no syslog target: set PACS_AUDIT_SYSLOG or pass --to")
        if options["interval"] <= 0 or options["batch"] <= 0:
            raise CommandError("--interval and --batch must be positive")
        try:
            SyslogSender(target).close()  # fail fast on a malformed target or a refused TCP connection
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot reach the syslog collector: {exc}") from None
        position = auditforward.cursor(target, from_now=options["from_now"])
        record("audit-forward", actor="manage.py audit_forward", detail={"to": target, "after_id": position.last_id})
        if options["follow"]:
            stopping: list[int] = []
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: stopping.append(signum))
            sent = auditforward.follow(target, lambda: bool(stopping), options["interval"], options["batch"])
        else:
            try:
                sent = auditforward.forward_all(target, options["batch"])
            except OSError as exc:
                raise CommandError(f"sending stopped (the cursor keeps the last batch sent): {exc}") from None
        self.stderr.write(f"{sent} record(s) sent to {target}; up to id {auditforward.cursor(target).last_id}")
