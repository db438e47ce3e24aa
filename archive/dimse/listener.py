"""The DICOM node's listener: serves associations (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE, Storage Commitment).

Built on pynetdicom. An association is accepted from an enabled
:class:`~archive.models.DicomDevice` whose AE title is the calling AE title
and, when the device is bound to an address or network, whose address the
connection comes from (:func:`archive.dimse.peers.identify`, looked up per
association, so admin changes apply at once). Anyone else gets an
A-ASSOCIATE-RJ (permanent, "calling AE title not recognised"), unless
``PACS_DIMSE_REJECT_UNKNOWN`` is false: then unknown callers are accepted but
may only C-ECHO. Every association, accepted or rejected, and every operation
is audited with the peer's AE title and address: ``dimse_association``,
``dimse_echo``, and ``store`` for each C-STORE. Every storage SOP class is
accepted in every transfer syntax pydicom and pynetdicom know, compressed ones
included, as sent.

Each operation needs the device's capability: C-STORE needs ``may_store``,
otherwise 0x0124 (Refused: Not authorized) and a ``store`` / ``failure``
record. Each C-STORE is answered by :class:`archive.dimse.store.StoreSCP`,
which keeps the data set bytes exactly as sent and takes them through the one
ingest path. C-FIND (Patient Root and Study Root) needs ``may_query`` and is
answered by :class:`archive.dimse.find.FindSCP`, among the studies of the
device's site. C-GET (Patient Root and Study Root) needs ``may_retrieve`` and
is answered by :class:`archive.dimse.get.GetSCP`, which sends the selected
instances back as C-STOREs on the same association: storage contexts accept
SCP/SCU role selection for that. C-MOVE (Patient Root and Study Root) needs
``may_retrieve`` too and is answered by :class:`archive.dimse.move.MoveSCP`,
which sends them to a registered move destination on a new association.
C-GET and C-MOVE requests bypass pynetdicom's own service class
(:func:`archive.dimse.retrieve.serve_retrievals`). Storage Commitment (N-ACTION) needs
``may_store`` and is answered by :class:`archive.dimse.commitment.CommitmentSCP`,
whose :class:`~archive.dimse.commitment.Deliverer` thread, started with the
listener, retries reports that could not be delivered. With an
:class:`ssl.SSLContext` (:mod:`archive.dimse.tls`) the same node also listens
with TLS on ``tls_port``.

C-STORE statuses (PS3.4 B.2.3, PS3.7 C): stored or identical duplicate 0x0000;
not a readable instance, or one with a value the index cannot hold, 0xC000;
data set UIDs differ from the request's 0xA900; a different object under a
stored SOP Instance UID 0xC111 (an "Error: Cannot understand" code, a
permanent failure so that senders do not retry; PS3.4 has no C-STORE status
for duplicates, and STOW-RS reports 0111); a device that may not store, or a
study of another site, 0x0124; too large, or a failure of storage, of the
index or of the archive itself, 0xA700. A data set identical to the stored
one counts as a duplicate even when its file meta differs (another sender, or
STOW-RS first).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any, cast

from django.conf import settings
from django.db import close_old_connections, connections
from pydicom.dataset import Dataset
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from archive.dimse.commitment import CommitmentSCP
from archive.dimse.find import MODELS, FindSCP
from archive.dimse.get import MODELS as GET_MODELS
from archive.dimse.get import GetSCP
from archive.dimse.move import MODELS as MOVE_MODELS
from archive.dimse.move import MoveSCP
from archive.dimse.peers import identify, validate_ae_title
from archive.dimse.retrieve import serve_retrievals
from archive.dimse.statuses import SUCCESS
from archive.dimse.store import Session, StoreSCP, site_sender
from archive.dimse.tls import TLSAssociationServer, connection_detail
from archive.ingest.store import Sender
from audit.trail import record

log = logging.getLogger(__name__)
TRANSFER_SYNTAXES = list(dict.fromkeys([*ALL_TRANSFER_SYNTAXES, *AllTransferSyntaxes]))
_KNOWN_SYNTAXES = frozenset(TRANSFER_SYNTAXES)


class _NoDelayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with TCP_NODELAY on every accepted socket.

    Without it, the small C-STORE-RSP after each instance waits for Nagle's
    algorithm and the peer's delayed ACK, and a sender crawls at a few dozen
    instances per second.
    """

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


class DicomListener:
    """The DICOM node (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE, Storage Commitment SCP) on one address, and a TLS port.

    ``reject_unknown`` (default: ``PACS_DIMSE_REJECT_UNKNOWN``) rejects callers that are no enabled device.
    """

    def __init__(
        self,
        ae_title: str,
        host: str = "0.0.0.0",  # noqa: S104 - a DICOM listener serves modalities on the network
        port: int = 11112,
        max_pdu: int = 256 * 1024,
        reject_unknown: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        tls_port: int = 2762,
    ) -> None:
        self.ae_title = validate_ae_title(ae_title)
        self.reject_unknown = settings.PACS_DIMSE_REJECT_UNKNOWN if reject_unknown is None else reject_unknown
        self.address = (host, port)
        self.ssl_context = ssl_context
        self.tls_address = (host, tls_port)
        self.store_scp = StoreSCP(self.ae_title, settings.PACS_STOW_MAX_BYTES)
        self.sessions: dict[Association, Session] = {}
        self.lock = threading.Lock()
        # pynetdicom has no public config module: _config is where its documentation puts its options.
        _config.LOG_HANDLER_LEVEL = "none"  # no per-PDU debug handlers
        self.ae = AE(ae_title=self.ae_title)
        self.ae.maximum_pdu_size = max_pdu
        self.ae.maximum_associations = 16
        for context in AllStoragePresentationContexts:
            # Either role: a C-GET SCU proposes to be the storage SCP, so the node can send C-STOREs back to it.
            self.ae.add_supported_context(
                cast(UID, context.abstract_syntax), TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        self.ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
        self.find_scp = FindSCP(self.ae_title)
        for model in MODELS:  # Patient Root and Study Root Query/Retrieve - FIND
            self.ae.add_supported_context(model, TRANSFER_SYNTAXES)
        self.get_scp = GetSCP()
        for model in GET_MODELS:  # Patient Root and Study Root Query/Retrieve - GET
            self.ae.add_supported_context(model, TRANSFER_SYNTAXES)
        self.move_scp = MoveSCP(self.ae_title)
        for model in MOVE_MODELS:  # Patient Root and Study Root Query/Retrieve - MOVE
            self.ae.add_supported_context(model, TRANSFER_SYNTAXES)
        self.commitment_scp = CommitmentSCP(self.ae_title)
        self.ae.add_supported_context(StorageCommitmentPushModel, TRANSFER_SYNTAXES)
        self.server: ThreadedAssociationServer | None = None
        self.tls_server: ThreadedAssociationServer | None = None
        self.thread: threading.Thread | None = None
        self.tls_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def tls_port(self) -> int:
        assert self.tls_server is not None
        return int(self.tls_server.server_address[1])

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_c_echo),
            (evt.EVT_C_STORE, self.on_c_store),
            (evt.EVT_C_FIND, self.on_c_find),
            (evt.EVT_N_ACTION, self.on_n_action),
            (evt.EVT_RELEASED, self.on_ended),
            (evt.EVT_ABORTED, self.on_ended),
            (evt.EVT_CONN_CLOSE, self.on_ended),
        ]

    def bind(self) -> ThreadedAssociationServer:
        server = self.ae.make_server(self.address, evt_handlers=self.handlers(), server_class=_NoDelayServer)
        # Private, for want of a public way: start_server() takes no server_class (TCP_NODELAY needs one), and
        # a server's own shutdown() removes it from this list, so ae.shutdown() must find it there.
        self.ae._servers.append(server)
        self.server = server
        if self.ssl_context is not None:
            self.tls_server = self.ae.make_server(
                self.tls_address,
                ssl_context=self.ssl_context,
                evt_handlers=self.handlers(),
                server_class=TLSAssociationServer,
            )
            self.ae._servers.append(self.tls_server)
        return server

    def start(self) -> None:
        """Listen in background threads (tests, embedding)."""
        server = self.server or self.bind()
        self.thread = threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
        self.thread.start()
        self._start_tls_and_retries()

    def serve_forever(self) -> None:
        """Listen in this thread until interrupted (KeyboardInterrupt)."""
        server = self.server or self.bind()
        self._start_tls_and_retries()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _start_tls_and_retries(self) -> None:
        if self.tls_server is not None:
            self.tls_thread = threading.Thread(target=self.tls_server.serve_forever, name="dicom-tls", daemon=True)
            self.tls_thread.start()
        self.commitment_scp.deliverer.start()

    def stop(self) -> None:
        self.commitment_scp.deliverer.stop()
        self.ae.shutdown()
        for thread in (self.thread, self.tls_thread):
            if thread is not None:
                thread.join(timeout=10)

    # --- Event handlers (each runs in the association's own thread, except CONN_CLOSE) ---

    def on_requested(self, event: Event) -> None:
        """Accept registered, enabled devices (and, if so configured, unknown callers); audit either way."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        assert primitive is not None
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        host = str(assoc.requestor.address)
        close_old_connections()
        who = identify(calling, host)
        device = who.device
        sender = site_sender(device.site) if device is not None else Sender()
        session = Session(calling, called, host, sender, device=device)
        detail: dict[str, Any] = {"calling_ae": calling, "called_ae": called, "peer": host, **connection_detail(assoc)}
        if device is None and self.reject_unknown:
            log.warning("DIMSE association from %s@%s refused: %s", calling, host, who.reason)
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE not recognised
            assoc.kill()
            record(
                "dimse_association",
                session.request(),
                actor=f"AE:{calling}",
                outcome="denied",
                detail={**detail, "reason": who.reason},
            )
            connections.close_all()
            return
        if device is None:
            detail.update(device=None, capabilities=["echo"], reason=who.reason)
        else:
            detail.update(device=device.pk, site=device.site.code, capabilities=device.capabilities())
        record("dimse_association", session.request(), actor=f"AE:{calling}", detail=detail)
        _prefer_proposed_order(assoc)
        with self.lock:
            self.sessions[assoc] = session
        serve_retrievals(
            assoc,
            lambda: self.session_of(assoc),
            {C_GET: (set(GET_MODELS), self.get_scp.serve), C_MOVE: (set(MOVE_MODELS), self.move_scp.serve)},
        )

    def session_of(self, assoc: Association) -> Session | None:
        with self.lock:
            return self.sessions.get(assoc)

    def on_c_echo(self, event: Event) -> int:
        """C-ECHO: success for every accepted association (a known device, or an unknown one allowed to echo)."""
        with self.lock:
            session = self.sessions.get(event.assoc)
        if session is not None:
            record(
                "dimse_echo",
                session.request(),
                actor=f"AE:{session.calling_ae}",
                detail={"calling_ae": session.calling_ae, "called_ae": session.called_ae},
            )
        return SUCCESS

    def on_c_store(self, event: Event) -> int | Dataset:
        with self.lock:
            session = self.sessions.get(event.assoc)
        return self.store_scp.on_c_store(session, event)

    def on_c_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        with self.lock:
            session = self.sessions.get(event.assoc)
        yield from self.find_scp.on_c_find(session, event)

    def on_n_action(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        with self.lock:
            session = self.sessions.get(event.assoc)
        return self.commitment_scp.on_n_action(session, event)

    def on_ended(self, event: Event) -> None:
        """Log what the association stored (each C-STORE is already audited) and release its database connection."""
        with self.lock:
            session = self.sessions.pop(event.assoc, None)
        if session is not None and session.results:
            stored = sum(1 for r in session.results if r.ok)
            log.info(
                "DIMSE association from %s@%s: %d stored, %d refused",
                session.calling_ae,
                session.host,
                stored,
                len(session.results) - stored,
            )
        connections.close_all()


def _prefer_proposed_order(assoc: Association) -> None:
    """Accept, of the transfer syntaxes proposed in one context, the one the peer listed first.

    pynetdicom picks the first of the acceptor's list that was proposed; a
    sender that offers a file's own (compressed) syntax first, plus
    uncompressed fallbacks, should be able to send it as it is. Only this
    association's copy of the contexts changes, before negotiation.
    """
    primitive = assoc.requestor.primitive
    assert primitive is not None
    proposed: dict[str, list[str]] = {}
    for cx in primitive.presentation_context_definition_list:
        proposed.setdefault(str(cx.abstract_syntax), []).extend(str(ts) for ts in cx.transfer_syntax)
    contexts = assoc.acceptor.supported_contexts
    for cx in contexts:
        order = [ts for ts in dict.fromkeys(proposed.get(str(cx.abstract_syntax), [])) if ts in _KNOWN_SYNTAXES]
        if order:
            cx.transfer_syntax = [UID(ts) for ts in order]
    assoc.acceptor.supported_contexts = contexts
