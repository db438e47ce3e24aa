"""``manage.py dicom_listener``: run the DICOM node, C-ECHO/C-STORE SCP (see archive/dimse/listener.py).

Peers are the DICOM devices (admin, ``manage.py dicom_device``). At start the
entries of ``PACS_DIMSE_ALLOWED`` that have no device yet are added as
store-only devices (:func:`archive.dimse.peers.bootstrap_devices`); the
command refuses to start when that variable is malformed or names a site that
does not exist, so a typo never turns into silently rejected modalities.
With ``PACS_DIMSE_TLS_CERT`` and ``PACS_DIMSE_TLS_KEY`` the node also listens
with TLS on ``PACS_DIMSE_TLS_PORT`` (see archive/dimse/tls.py); it refuses to
start when those files cannot be loaded.
Runs in the foreground until interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from archive.dimse.listener import DicomListener
from archive.dimse.peers import ConfigurationError, bootstrap_devices, parse_allowed, validate_ae_title
from archive.dimse.tls import server_context
from archive.models import DicomDevice


class Command(BaseCommand):
    help = "Run the DICOM node (C-ECHO and C-STORE SCP) for the registered DICOM devices."

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
            added = bootstrap_devices(parse_allowed(settings.PACS_DIMSE_ALLOWED))
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        for device in added:
            self.stderr.write(f"DICOM device {device} added from PACS_DIMSE_ALLOWED (store only)")
        enabled = DicomDevice.objects.filter(enabled=True).count()
        if not enabled:
            unknown = "rejected" if settings.PACS_DIMSE_REJECT_UNKNOWN else "accepted for C-ECHO only"
            self.stderr.write(f"No enabled DICOM device: every association will be {unknown}")
        context = None
        if settings.PACS_DIMSE_TLS_CERT:
            try:
                context = server_context(
                    settings.PACS_DIMSE_TLS_CERT, settings.PACS_DIMSE_TLS_KEY, settings.PACS_DIMSE_TLS_CA
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise CommandError(f"DICOM TLS certificate, key or CA cannot be loaded: {exc}") from None
        listener = DicomListener(
            ae_title, host=options["host"], port=port, ssl_context=context, tls_port=settings.PACS_DIMSE_TLS_PORT
        )
        listener.bind()

        def stop(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        tls = f", TLS on port {listener.tls_port}" if context is not None else ""
        self.stdout.write(
            f"DICOM listener {ae_title} on {options['host']}:{listener.port}{tls} for {enabled} device(s)"
        )
        self.stdout.flush()
        listener.serve_forever()
