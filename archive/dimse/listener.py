"""The DICOM DIMSE listener: C-ECHO and C-STORE SCP for modalities without DICOMweb.

Built on pynetdicom. Only known peers may associate: ``PACS_DIMSE_ALLOWED``
maps calling AE titles (optionally bound to an address or network) to the
code of the :class:`~archive.models.Site` their studies belong to, e.g.
``"CT1@10.0.0.21=general,MR2=general"``. Anyone else gets an
A-ASSOCIATE-RJ (permanent, "calling AE title not recognised") and an audit
record. Every storage SOP class is accepted in every transfer syntax
pydicom and pynetdicom know, compressed ones included, as sent.

What "byte-for-byte" means over DIMSE: a C-STORE carries a data set, not a
Part 10 file. The data set bytes are kept exactly as they arrived (never
decoded and re-encoded); the 128-byte preamble, ``DICM`` and the File Meta
Information are built here from the association: Media Storage SOP Class and
Instance UID from the request, Transfer Syntax UID from the presentation
context, Sending AE Title from the peer and Source/Receiving AE Title from
this listener. That file then takes the one ingest path
(:func:`archive.ingest.store.store_instance`), so integrity, idempotence and conflict
rules are the same as for STOW-RS.

C-STORE statuses (PS3.4 B.2.3, PS3.7 C): stored or identical duplicate 0x0000;
not a readable instance, or one with a value the index cannot hold, 0xC000;
data set UIDs differ from the request's 0xA900; a different object under a
stored SOP Instance UID 0xC111 (an "Error: Cannot understand" code, a
permanent failure so that senders do not retry; PS3.4 has no C-STORE status
for duplicates, and STOW-RS reports 0111); a study of another site 0x0124;
too large, or a failure of storage, of the index or of the archive itself,
0xA700. A data set identical to the stored one counts as a duplicate even
when its file meta differs (another sender, or STOW-RS first).

Each C-STORE is audited on its own, and a stored instance's record is written
in the transaction that indexes it: a success status is never sent for an
instance the trail does not show, even if the server stops mid-association.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import zlib
from dataclasses import dataclass, field
from typing import cast

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.http import HttpRequest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    _config,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from archive.dimse.peers import AllowedPeer, validate_ae_title
from archive.dimse.statuses import DOES_NOT_MATCH, NOT_AUTHORIZED, OUT_OF_RESOURCES, STATUS, SUCCESS, status_dataset
from archive.ingest.store import Outcome, Sender, StoreResult, record_stores, store_instance
from archive.models import Site, Study
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter
from audit.trail import record

log = logging.getLogger(__name__)
TRANSFER_SYNTAXES = list(dict.fromkeys([*ALL_TRANSFER_SYNTAXES, *AllTransferSyntaxes]))
_KNOWN_SYNTAXES = frozenset(TRANSFER_SYNTAXES)


@dataclass
class _Session:
    """What one accepted association knows: its peer, its site, and what it stored."""

    calling_ae: str
    called_ae: str
    host: str
    sender: Sender
    results: list[StoreResult] = field(default_factory=list)

    def request(self) -> HttpRequest:
        """A bare request that carries the peer's address into the audit trail."""
        request = HttpRequest()
        request.META["REMOTE_ADDR"] = self.host
        return request


def _site_sender(site: Site) -> Sender:
    """New studies go to ``site``; existing studies may grow only if they are ``site``'s."""
    known: dict[str, bool] = {}

    def may_add_to(study_uid: str) -> bool:
        if study_uid not in known:
            owner = list(Study.objects.filter(study_instance_uid=study_uid).values_list("site_id", flat=True)[:1])
            known[study_uid] = not owner or owner[0] == site.pk  # no row: a new study
        return known[study_uid]

    return Sender(site=site, may_add_to=may_add_to)


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
    """A C-ECHO/C-STORE SCP bound to one address; :meth:`start` runs it in a thread."""

    def __init__(
        self,
        ae_title: str,
        allowed: list[AllowedPeer],
        host: str = "0.0.0.0",  # noqa: S104 - a DICOM listener serves modalities on the network
        port: int = 11112,
        max_pdu: int = 256 * 1024,
    ) -> None:
        self.ae_title = validate_ae_title(ae_title)
        self.allowed = allowed
        self.address = (host, port)
        self.max_bytes = settings.PACS_STOW_MAX_BYTES
        self.sessions: dict[Association, _Session] = {}
        self.lock = threading.Lock()
        # pynetdicom has no public config module: _config is where its documentation puts its options.
        _config.LOG_HANDLER_LEVEL = "none"  # no per-PDU debug handlers
        self.ae = AE(ae_title=self.ae_title)
        self.ae.maximum_pdu_size = max_pdu
        self.ae.maximum_associations = 16
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(cast(UID, context.abstract_syntax), TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
        self.server: ThreadedAssociationServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_STORE, self.on_c_store),
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
        return server

    def start(self) -> None:
        """Listen in a background thread (tests, embedding)."""
        server = self.server or self.bind()
        self.thread = threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
        self.thread.start()

    def serve_forever(self) -> None:
        """Listen in this thread until interrupted (KeyboardInterrupt)."""
        server = self.server or self.bind()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        self.ae.shutdown()
        if self.thread is not None:
            self.thread.join(timeout=10)

    # --- Event handlers (each runs in the association's own thread, except CONN_CLOSE) ---

    def on_requested(self, event: Event) -> None:
        """Accept known peers only: reject the rest before any negotiation, and audit it."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        assert primitive is not None
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        host = str(assoc.requestor.address)
        close_old_connections()
        peer = next((p for p in self.allowed if p.matches(calling, host)), None)
        site = Site.objects.filter(code=peer.site_code).first() if peer is not None else None
        session = _Session(calling, called, host, _site_sender(site) if site is not None else Sender())
        if site is None:
            reason = "unknown calling AE title or address" if peer is None else f"no site {peer.site_code!r}"
            log.warning("DIMSE association from %s@%s refused: %s", calling, host, reason)
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE not recognised
            assoc.kill()
            record(
                "dimse_association",
                session.request(),
                actor=f"AE:{calling}",
                outcome="denied",
                detail={"calling_ae": calling, "called_ae": called, "peer": host, "reason": reason},
            )
            connections.close_all()
            return
        _prefer_proposed_order(assoc)
        with self.lock:
            self.sessions[assoc] = session

    def on_c_store(self, event: Event) -> int | Dataset:
        with self.lock:
            session = self.sessions.get(event.assoc)
        if session is None:
            return status_dataset(NOT_AUTHORIZED, "association not authorized")
        request = cast(C_STORE, event.request)
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        transfer_syntax = UID(event.context.transfer_syntax)
        data = request.DataSet.getbuffer()  # type: ignore[union-attr]
        try:
            result, status = self._store(session, data, sop_class, sop_instance, transfer_syntax)
        finally:
            data.release()
        session.results.append(result)
        if status != SUCCESS:
            log.info("C-STORE from %s refused: %s", session.calling_ae, result.outcome.value)
            return status_dataset(status, result.detail or result.outcome.value)
        return SUCCESS

    def _store(
        self, session: _Session, data: memoryview, sop_class: str, sop_instance: str, transfer_syntax: UID
    ) -> tuple[StoreResult, int]:
        """Stage the received data set as a Part 10 file and ingest it; the result and its C-STORE status."""
        refused = StoreResult(Outcome.INVALID, sop_class_uid=sop_class, sop_instance_uid=sop_instance)
        found = _dataset_uids(data, transfer_syntax)
        if found is not None and found != (sop_class, sop_instance):
            refused.detail = "SOP Class/Instance UID differ from the C-STORE request"
            _audit_refusal(session, refused)
            return refused, DOES_NOT_MATCH
        writer = StagingWriter(get_storage("hot"), self.max_bytes)
        try:
            writer.write(b"\x00" * 128 + b"DICM")
            writer.write(self._file_meta(session, sop_class, sop_instance, transfer_syntax))
            writer.write(data)
        except (ValueError, OSError) as exc:  # over the size limit, or the disk failed
            writer.abort()
            refused.detail = str(exc)
            _audit_refusal(session, refused)
            return refused, OUT_OF_RESOURCES

        try:
            result = store_instance(
                writer.finish(), sender=session.sender, audit=lambda results: _audit(session, results, sop_instance)
            )
        except DatabaseError as exc:  # e.g. the index is locked or unreachable: the sender may retry later
            close_old_connections()
            log.warning("C-STORE from %s not indexed: %s", session.calling_ae, exc)
            refused.detail = "the index is not available"
            _audit_refusal(session, refused)
            return refused, OUT_OF_RESOURCES
        except Exception:  # noqa: BLE001 - a fault of ours: logged, audited and answered, never pynetdicom's bare 0xC211
            log.exception("C-STORE from %s failed", session.calling_ae)
            refused.detail = "the archive could not store this instance"
            _audit_refusal(session, refused)
            return refused, OUT_OF_RESOURCES
        if result.ok:
            return result, SUCCESS
        return result, STATUS[result.outcome]

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

    def _file_meta(self, session: _Session, sop_class: str, sop_instance: str, transfer_syntax: UID) -> bytes:
        meta = FileMetaDataset()
        meta.FileMetaInformationGroupLength = 0  # computed when encoded
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = UID(sop_class)
        meta.MediaStorageSOPInstanceUID = UID(sop_instance)
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
        meta.SourceApplicationEntityTitle = self.ae_title
        meta.SendingApplicationEntityTitle = session.calling_ae
        meta.ReceivingApplicationEntityTitle = self.ae_title
        return encode_file_meta(meta)


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


def _dataset_uids(data: memoryview, transfer_syntax: UID) -> tuple[str, str] | None:
    """(0008,0016) and (0008,0018) of an encoded data set, or None when they cannot be read.

    Reads only the first elements (a deflated data set is inflated only as far
    as needed); anything unreadable is left to the full parse at ingest.
    """
    head = bytes(data[: 64 * 1024])
    if transfer_syntax.is_deflated:
        head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, 64 * 1024)
    try:
        ds = read_dataset(
            io.BytesIO(head),
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            stop_when=lambda tag, vr, length: tag > 0x00080018,
        )
        return str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    except (AttributeError, ValueError, EOFError, OSError, KeyError, TypeError, zlib.error):
        return None


def _audit(session: _Session, results: list[StoreResult], sop_instance: str) -> None:
    """The "store" record of one C-STORE (called inside its index transaction when it stored)."""
    record_stores(
        session.request(),
        results,
        via="DIMSE",
        actor=f"AE:{session.calling_ae}",
        calling_ae=session.calling_ae,
        called_ae=session.called_ae,
        sop_instance_uid=sop_instance,
    )


def _audit_refusal(session: _Session, refused: StoreResult) -> None:
    """The record of a C-STORE refused before ingest; the refusal stands even if the trail cannot be written."""
    try:
        _audit(session, [refused], refused.sop_instance_uid)
    except DatabaseError as exc:
        close_old_connections()
        log.error("audit record of a refused C-STORE from %s not written: %s", session.calling_ae, exc)
