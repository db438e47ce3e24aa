"""``manage.py housekeeping [--once] [--every SECONDS]``: the periodic work of every app, in one process.

What must happen now and then without anyone asking (claims that went idle
go back to the worklist, lifecycle rules move what has aged, …) is a list of
management commands in ``settings.PACS_HOUSEKEEPING``, run by name in turn
every ``--every`` seconds (default ``PACS_HOUSEKEEPING_SECONDS``). Commands are
called by name, so the archive imports no other app for them. One failing
command is logged and the others still run; the next round tries it again.
``make run`` starts this process beside the web server, the DICOM node and
the task worker; in production run it once (a systemd service or a cron
with ``--once``).
"""

from __future__ import annotations

import logging
import shlex
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the periodic management commands of PACS_HOUSEKEEPING, once or every few minutes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="one round, then exit (for cron)")
        parser.add_argument("--every", type=float, default=None, help="seconds between rounds")

    def handle(self, *args: Any, **options: Any) -> None:
        every = options["every"] if options["every"] is not None else settings.PACS_HOUSEKEEPING_SECONDS
        stop = threading.Event()
        if not options["once"] and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
        failures = 0
        while True:
            failures = run_round(self)
            if options["once"] or stop.wait(max(every, 1.0)):
                break
        if options["once"] and failures:
            raise SystemExit(1)


def run_round(command: BaseCommand) -> int:
    """Run each configured command once; how many failed."""
    failures = 0
    for line in settings.PACS_HOUSEKEEPING:
        name, *args = shlex.split(line)
        close_old_connections()
        try:
            call_command(name, *args, stdout=command.stdout, stderr=command.stderr)
        except Exception:  # one broken job must not stop the others
            failures += 1
            log.exception("housekeeping: %s failed", name)
    return failures
