"""DICOM TLS for the node's listener (PS3.15 B.1, the Basic TLS Secure Transport Connection Profile).

With a certificate and its key (``PACS_DIMSE_TLS_CERT``, ``PACS_DIMSE_TLS_KEY``)
the listener also serves TLS on a second port (``PACS_DIMSE_TLS_PORT``, 2762,
the port registered for DICOM over TLS); the plain port stays for modalities
that cannot do TLS. With a CA bundle (``PACS_DIMSE_TLS_CA``) a client must
present a certificate signed by it, or the handshake fails. TLS 1.2 is the
oldest version accepted.

The handshake runs in the connection's own thread with a time limit
(:data:`HANDSHAKE_SECONDS`), never in the accept loop, so a client that
connects and stays silent delays nobody else. A failed handshake (a plain-TCP
client, an untrusted or missing client certificate) closes the connection and
leaves a ``dimse_association`` record, outcome ``denied``, with the peer's
address and the TLS error; an association that follows a good handshake is
audited as any other, with the TLS version and the client certificate's
subject.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

from django.db import DatabaseError, close_old_connections, connections
from django.http import HttpRequest
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from audit.trail import record

log = logging.getLogger(__name__)
HANDSHAKE_SECONDS = 15.0


def server_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """A server-side context with ``cert`` and ``key``; with ``ca``, client certificates are required and verified."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def connection_detail(assoc: Association) -> dict[str, Any]:
    """What the audit records of an association's TLS: the version and the client certificate's subject, if any."""
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    if not isinstance(sock, ssl.SSLSocket):
        return {}
    detail: dict[str, Any] = {"tls": sock.version()}
    cert = sock.getpeercert()
    if cert:
        subject = {str(pair[0]): str(pair[1]) for rdn in cert.get("subject", ()) for pair in rdn}
        detail["client_certificate"] = str(subject.get("commonName", ""))[:64]
    return detail


class TLSAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, TCP_NODELAY, with the TLS handshake in each connection's thread."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None and self.ssl_context is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False), address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Shake hands (time-limited), then serve the association; a failed handshake is audited and closed."""
        timeout = request.gettimeout()
        try:
            request.settimeout(HANDSHAKE_SECONDS)
            request.do_handshake()
            request.settimeout(timeout)
        except (ssl.SSLError, OSError) as exc:
            host = str(client_address[0])
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            log.warning("DICOM TLS handshake from %s failed: %s", host, reason)
            audit_refusal(host, f"TLS handshake failed: {reason}"[:200])
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)


def audit_refusal(host: str, reason: str) -> None:
    """The record of a connection refused before any association; the refusal stands if it cannot be written."""
    request = HttpRequest()
    request.META["REMOTE_ADDR"] = host
    try:
        record(
            "dimse_association",
            request,
            actor="",
            outcome="denied",
            detail={"peer": host, "tls": True, "reason": reason},
        )
    except DatabaseError as exc:
        close_old_connections()
        log.error("audit record of a refused TLS connection from %s not written: %s", host, exc)
    finally:
        connections.close_all()
