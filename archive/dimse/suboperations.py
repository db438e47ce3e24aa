"""C-STORE sub-operations of C-GET and C-MOVE: stored instances sent as their stored bytes, and their counts.

A stored instance is sent as the data set of its Part 10 object, byte for
byte, on a presentation context of its stored transfer syntax when the peer
accepted one: nothing is decoded or re-encoded (:func:`encoded`). Only when
the peer accepted no context of that syntax is the object transcoded to
Explicit VR Little Endian
(:func:`archive.dicom.transcode.to_explicit_little_endian`), or re-encoded as
Implicit VR Little Endian when that is all the peer accepted. An instance
neither can carry, or whose stored object cannot be read, is a failed
sub-operation (:class:`Undeliverable`).

pynetdicom's ``Association.send_c_store`` takes a pydicom ``Dataset`` (which it
encodes again) or a file path (whose bytes it sends only with the
process-wide ``_config.STORE_SEND_CHUNKED_DATASET``, and only from a local
file). :func:`send_c_store` sends an already encoded data set instead: it
builds the C-STORE-RQ primitive itself and follows the steps of
``send_c_store`` (pause the association's reactor, send, wait for the
response), using these pynetdicom 3.0 internals: ``_reactor_checkpoint``,
``_is_paused``, ``dimse.msg_queue`` and ``dul.socket``. Requirements pin
pynetdicom for that reason. While it waits for the C-STORE-RSP it flushes
the pending TCP acknowledgement (:func:`response`).

:class:`SubOperations` keeps the remaining, completed, failed and warning
counts (PS3.4 C.4.2.1.4 and C.4.3.1.4) and the failed SOP Instance UIDs; it
fills them into C-GET and C-MOVE responses and into the audit trail.
"""

from __future__ import annotations

import io
import logging
import queue
import socket
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from pydicom import dcmread
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from archive.dicom.transcode import TranscodeError, to_explicit_little_endian
from archive.models import Instance

log = logging.getLogger(__name__)

SUCCESS, WARNING, FAILURE = "Success", "Warning", "Failure"
POLL = 0.001  # seconds between two flushes of the pending ACK while a C-STORE-RSP is awaited


class Undeliverable(Exception):
    """A stored instance that cannot be sent to this peer: a failed sub-operation."""


@dataclass
class SubOperations:
    """The counts of one C-GET or C-MOVE's C-STORE sub-operations, and the UIDs of those that failed."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def count(self, outcome: str, sop_instance_uid: str) -> None:
        """One sub-operation done with ``outcome`` (:data:`SUCCESS`, :data:`WARNING` or :data:`FAILURE`)."""
        self.remaining -= 1
        if outcome == SUCCESS:
            self.completed += 1
        elif outcome == WARNING:
            self.warning += 1
        else:
            self.fail(sop_instance_uid)

    def fail(self, sop_instance_uid: str) -> None:
        self.failed += 1
        self.failed_uids.append(sop_instance_uid)

    def fail_remaining(self, sop_instance_uids: list[str]) -> None:
        """The sub-operations not attempted (the destination is gone) count as failed."""
        for uid in sop_instance_uids:
            self.fail(uid)
        self.remaining = 0

    def fill(self, rsp: Any, remaining: bool = True) -> None:
        """Set the Number of ... Sub-operations of a C-GET or C-MOVE response primitive."""
        rsp.NumberOfRemainingSuboperations = self.remaining if remaining else None
        rsp.NumberOfCompletedSuboperations = self.completed
        rsp.NumberOfFailedSuboperations = self.failed
        rsp.NumberOfWarningSuboperations = self.warning

    def audit(self) -> dict[str, int]:
        return {
            "completed": self.completed,
            "failed": self.failed,
            "warning": self.warning,
            "remaining": self.remaining,
        }


def accepted_contexts(assoc: Association) -> dict[tuple[str, str], int]:
    """The accepted contexts on which the node may send C-STOREs: (SOP Class UID, transfer syntax) → context ID."""
    out: dict[tuple[str, str], int] = {}
    for cx in assoc.accepted_contexts:
        if cx.as_scu and cx.context_id is not None:
            for ts in cx.transfer_syntax:
                out.setdefault((str(cx.abstract_syntax), str(ts)), cx.context_id)
    return out


def _not_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag.group != 2


def split_part10(fh: BinaryIO) -> tuple[str, bytes]:
    """The transfer syntax and the encoded data set of a Part 10 object (what follows its File Meta Information)."""
    read_preamble(fh, False)
    meta = read_dataset(fh, is_implicit_VR=False, is_little_endian=True, stop_when=_not_meta)
    return str(meta.TransferSyntaxUID), fh.read()


def encoded(instance: Instance, contexts: dict[tuple[str, str], int]) -> tuple[int, bytes]:
    """The context ID and the encoded data set on which ``instance`` is sent; :class:`Undeliverable` if none.

    As stored when the peer accepted the stored transfer syntax; otherwise
    transcoded to Explicit VR Little Endian, or re-encoded as Implicit VR
    Little Endian when that is all the peer accepted for the SOP class.
    """
    sop_class = instance.sop_class_uid
    stored = contexts.get((sop_class, instance.transfer_syntax_uid))
    explicit = contexts.get((sop_class, str(ExplicitVRLittleEndian)))
    implicit = contexts.get((sop_class, str(ImplicitVRLittleEndian)))
    if stored is None and explicit is None and implicit is None:
        raise Undeliverable("the peer accepted no presentation context for its SOP class and syntax")
    try:
        with instance.open_stored() as fh:
            if stored is not None:
                syntax, data = split_part10(fh)
                if syntax == instance.transfer_syntax_uid:
                    return stored, data
                fh.seek(0)
                if explicit is None and implicit is None:
                    raise Undeliverable(f"stored as {syntax}, not as indexed")
            with to_explicit_little_endian(fh) as converted:
                if explicit is not None:
                    return explicit, split_part10(converted)[1]
                reencoded = encode(dcmread(converted), True, True)  # Implicit VR Little Endian
                if reencoded is None:
                    raise Undeliverable("the data set cannot be encoded as Implicit VR Little Endian")
                return cast(int, implicit), reencoded
    except (OSError, ValueError, EOFError, KeyError, AttributeError, TypeError, TranscodeError) as exc:
        raise Undeliverable(f"the stored object cannot be sent: {exc}") from None


def response(assoc: Association) -> Any:
    """The next DIMSE message from the peer, or None when the association ends or the DIMSE timeout expires.

    While it waits, the acknowledgement of whatever part of the response has
    arrived is sent at once (``TCP_QUICKACK``, Linux) instead of after the
    kernel's delayed-ACK timer (40 ms): a peer that writes its C-STORE-RSP in
    two pieces with Nagle's algorithm on (DCMTK's storescp, getscu and movescu
    do, unless TCP_NODELAY is set in their environment) holds the second piece
    until that ACK, which would cost 40 ms per instance.
    """
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    quick = sock is not None and hasattr(socket, "TCP_QUICKACK")
    timeout = assoc.dimse_timeout
    deadline = time.monotonic() + timeout if timeout is not None else None
    while True:
        if quick:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # type: ignore[union-attr]
            except OSError:
                quick = False
        try:
            return assoc.dimse.msg_queue.get(timeout=POLL)[1]
        except queue.Empty:
            if not assoc.is_established or (deadline is not None and time.monotonic() > deadline):
                return None


def send_c_store(
    assoc: Association,
    instance: Instance,
    contexts: dict[tuple[str, str], int],
    msg_id: int,
    priority: int = 2,
    originator: tuple[str, int] | None = None,
) -> str:
    """Send ``instance`` as stored on ``assoc``; the outcome of its sub-operation (:data:`SUCCESS` ...).

    ``originator`` is the (AE title, Message ID) of the C-MOVE request a sub-operation serves.
    """
    try:
        context_id, data = encoded(instance, contexts)
    except Undeliverable as exc:
        log.warning("instance %s not sent: %s", instance.sop_instance_uid, exc)
        return FAILURE
    if not assoc.is_established:
        return FAILURE
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = priority
    req.AffectedSOPClassUID = instance.sop_class_uid
    req.AffectedSOPInstanceUID = instance.sop_instance_uid
    if originator is not None:
        req.MoveOriginatorApplicationEntityTitle = originator[0]
        req.MoveOriginatorMessageID = originator[1]
    req.DataSet = io.BytesIO(data)
    # As Association.send_c_store does: the reactor must not read the response before we do.
    assoc._reactor_checkpoint.clear()
    try:
        while not assoc._is_paused and assoc.is_established:
            time.sleep(0.0001)
        assoc.dimse.send_msg(req, context_id)
        rsp = response(assoc)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:  # the DIMSE timeout expired, or the association is gone
        if assoc.is_established:
            assoc.abort()
        return FAILURE
    status = getattr(rsp, "Status", None)
    if not isinstance(rsp, C_STORE) or status is None or rsp.MessageIDBeingRespondedTo != msg_id:
        return FAILURE
    category = STORAGE_SERVICE_CLASS_STATUS.get(int(status), (FAILURE, ""))[0]
    return category if category in (SUCCESS, WARNING) else FAILURE
