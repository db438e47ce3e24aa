"""``manage.py dicom_listener``: run the DICOM C-ECHO/C-STORE SCP (see archive/dimse/listener.py).

Refuses to start when ``PACS_DIMSE_ALLOWED`` is malformed or names a site
that does not exist, so a typo never turns into silently rejected modalities.
Runs in the foreground until interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.dimse.listener import DicomListener
from archive.dimse.peers import ConfigurationError, missing_sites, parse_allowed, validate_ae_title


class Command(BaseCommand):
    help = "Run the DICOM DIMSE listener (C-ECHO and C-STORE SCP) for the peers in PACS_DIMSE_ALLOWED."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=None, help="TCP port (default: PACS_DIMSE_PORT, 11112)")
        parser.add_argument("--ae", default=None, help="this listener's AE title (default: PACS_DIMSE_AE_TITLE)")
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")  # noqa: S104

    def handle(self, *args: Any, **options: Any) -> None:
        port = settings.PACS_DIMSE_PORT if options["port"] is None else options["port"]
        if not 0 <= port <= 65535:
            raise CommandError("--port must be between 0 and 65535")
        try:
            ae_title = validate_ae_title(options["ae"] or settings.PACS_DIMSE_AE_TITLE)
            allowed = parse_allowed(settings.PACS_DIMSE_ALLOWED)
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        unknown = missing_sites(allowed)
        if unknown:
            raise CommandError(f"PACS_DIMSE_ALLOWED names sites that do not exist: {', '.join(unknown)}")
        if not allowed:
            self.stderr.write("PACS_DIMSE_ALLOWED is empty: every association will be rejected")
        listener = DicomListener(ae_title, allowed, host=options["host"], port=port)
        listener.bind()

        def stop(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        peers = ", ".join(f"{p.ae_title}{'@' + str(p.network) if p.network else ''}->{p.site_code}" for p in allowed)
        self.stdout.write(f"DICOM listener {ae_title} on {options['host']}:{listener.port} for {peers or 'nobody'}")
        self.stdout.flush()
        listener.serve_forever()
