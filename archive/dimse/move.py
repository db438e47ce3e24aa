"""The C-MOVE SCP: Patient Root and Study Root Query/Retrieve (PS3.4 C.4.2), sending to a registered destination.

A request is authorised and its instances selected exactly as a C-GET's
(:func:`archive.dimse.retrieve.prepare`): the calling device needs
``may_retrieve``, and the identifier, read as a C-FIND identifier, selects
the instances of the matches among the studies of the device's site. The Move Destination must be a
registered, enabled :class:`~archive.models.DicomDevice` marked
``is_move_destination``, with one host address and a port: the node never
sends to an address the caller names, only to the one the admin registered.

The instances go to the destination on a new association (the sub-association)
from the node's own AE title. For each SOP class it proposes one presentation
context of Explicit VR Little Endian and one per other stored transfer syntax; an
instance goes as its stored bytes on the context of its stored syntax
(:mod:`archive.dimse.suboperations`), and is transcoded only when the
destination accepted nothing but the fallback.

Statuses (PS3.4 C.4.2.1.5, Table C.4-2): after each sub-operation 0xFF00
Pending with the remaining, completed, failed and warning counts; done
0x0000, or 0xB000 with (0008,0058) Failed SOP Instance UID List when some
sub-operations failed or warned, 0xA702 (Refused: Out of Resources - Unable
to perform sub-operations) when all failed, including when the destination
cannot be reached or rejects the sub-association; a C-CANCEL 0xFE00 with the
counts so far; an unknown or unusable Move Destination 0xA801; a device that
may not retrieve, or an unknown caller, 0x0124; an identifier without a valid
level or unique keys 0xA900; a malformed value or undecodable identifier
0xC000; the index unavailable 0xA701 (Unable to calculate number of matches).

Audit: a refused C-MOVE leaves one ``retrieve`` record (``denied`` or
``failure``, with the status and the reason); an accepted one leaves a
``retrieve`` record before its first sub-operation (the peer's AE title and
address, the destination, the study UIDs and the number of instances) and a
``retrieve_result`` record when it ends (the final status and the counts).

pynetdicom answers C-MOVE requests itself through a handler protocol (yield
the destination address, then the count, then data sets) that opens the
sub-association before any other status can be sent, answers 0xA801 when it
cannot be opened, and re-encodes every data set; the listener therefore hands
C-MOVE requests to :meth:`MoveSCP.serve` (see :mod:`archive.dimse.retrieve`).
"""

from __future__ import annotations

import logging
import socket
from typing import Any, cast

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from archive.dimse.find import Refused
from archive.dimse.retrieve import CANCELLED, PENDING, UNABLE_TO_PERFORM, Reply, audit_result, final_status, prepare
from archive.dimse.statuses import SUCCESS
from archive.dimse.store import Session
from archive.dimse.suboperations import SubOperations, accepted_contexts, send_c_store
from archive.models import DicomDevice, Instance, parse_network

log = logging.getLogger(__name__)

MOVE_DESTINATION_UNKNOWN = 0xA801  # Refused: Move Destination unknown
#: The C-MOVE information models served, each with the C-FIND model whose identifiers it shares, and its name.
MODELS: dict[str, tuple[str, str]] = {
    str(PatientRootQueryRetrieveInformationModelMove): (str(PatientRootQueryRetrieveInformationModelFind), "patient"),
    str(StudyRootQueryRetrieveInformationModelMove): (str(StudyRootQueryRetrieveInformationModelFind), "study"),
}
#: pynetdicom (and PS3.8) allow at most 128 presentation contexts per association.
MAX_CONTEXTS = 128


class UnknownDestination(Exception):
    """The Move Destination is no device the node may send to; the message says why."""


def destination(ae_title: str, site_id: int) -> DicomDevice:
    """The device of site ``site_id`` a C-MOVE may send to as ``ae_title``; :class:`UnknownDestination` if none.

    A destination of another site is refused like an unknown one: a device may
    send its site's studies only to that site's registered destinations.
    """
    device = DicomDevice.objects.filter(ae_title=ae_title).first()
    if device is None:
        raise UnknownDestination("unknown AE title")
    if device.site_id != site_id:
        raise UnknownDestination("not a destination of the requesting device's site")
    if not device.enabled:
        raise UnknownDestination("device disabled")
    if not device.is_move_destination:
        raise UnknownDestination("not a move destination")
    if not device.port:
        raise UnknownDestination("no port registered")
    try:
        single = bool(device.host) and parse_network(device.host).num_addresses == 1
    except ValueError:
        single = False
    if not single:
        raise UnknownDestination("no single host address registered")
    return device


def proposed_contexts(instances: list[Instance]) -> list[PresentationContext]:
    """Per SOP class one context of Explicit VR Little Endian, then one per other stored syntax (at most 128).

    The fallback contexts come first so that every SOP class keeps one when there are too many syntaxes.
    """
    syntaxes: dict[str, list[str]] = {}
    for instance in instances:
        found = syntaxes.setdefault(instance.sop_class_uid, [])
        if instance.transfer_syntax_uid not in found:
            found.append(instance.transfer_syntax_uid)
    fallback = str(ExplicitVRLittleEndian)
    contexts = [build_context(sop_class, fallback) for sop_class in syntaxes]
    for sop_class, stored in syntaxes.items():
        for ts in stored:
            if ts != fallback and len(contexts) < MAX_CONTEXTS:
                contexts.append(build_context(sop_class, ts))
    return contexts[:MAX_CONTEXTS]


class MoveSCP:
    """Answers C-MOVE requests in the Patient Root and Study Root models for a node whose AE title is ``ae_title``."""

    def __init__(self, ae_title: str, timeout: float = 30.0) -> None:
        self.ae_title = ae_title  # the calling AE title of every sub-association
        self.timeout = timeout

    def serve(self, assoc: Association, session: Session | None, req: C_MOVE, context: PresentationContext) -> None:
        """Answer one C-MOVE request received on ``assoc`` (``session`` None: an association not accepted)."""
        reply = Reply(assoc, req, context)
        target = str(req.MoveDestination or "").strip()
        found: list[DicomDevice] = []

        def check(detail: dict[str, Any]) -> None:
            detail["destination"] = {"ae": target[:16]}
            try:
                assert session is not None and session.device is not None  # check runs once the device may retrieve
                dest = destination(target, session.device.site_id)
            except UnknownDestination as exc:
                raise Refused(MOVE_DESTINATION_UNKNOWN, f"move destination: {exc}") from None
            detail["destination"].update(host=dest.host, port=dest.port)
            found.append(dest)

        plan = prepare(session, reply, MODELS, "C-MOVE", check)
        if plan is None or session is None:
            return
        ops = plan.sub_operations()
        status = self.send(reply, session, found[0], plan.instances, ops) if plan.instances else SUCCESS
        if status is None:  # the requesting association is gone: no one to answer
            audit_result(session, plan.detail, "aborted", ops)
            return
        if status != CANCELLED:
            status = final_status(ops)
        reply.final(status, ops, plan.comment)
        audit_result(session, plan.detail, status, ops)

    def send(
        self, reply: Reply, session: Session, dest: DicomDevice, instances: list[Instance], ops: SubOperations
    ) -> int | None:
        """The sub-operations to ``dest``; :data:`CANCELLED`, :data:`UNABLE_TO_PERFORM`, or None if the caller left.

        Otherwise the counts in ``ops`` decide the final status.
        """
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 10.0)
        store = ae.associate(
            dest.host, cast(int, dest.port), contexts=proposed_contexts(instances), ae_title=dest.ae_title
        )
        if not store.is_established:
            log.warning("C-MOVE from %s: destination %s not reachable", session.calling_ae, dest.ae_title)
            ops.fail_remaining([i.sop_instance_uid for i in instances])
            return UNABLE_TO_PERFORM
        try:
            sock = store.dul.socket.socket if store.dul.socket is not None else None
            if sock is not None:  # each C-STORE-RQ's last fragment must not wait for an ACK (Nagle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            contexts = accepted_contexts(store)
            originator = (session.calling_ae, cast(int, reply.req.MessageID))
            for n, instance in enumerate(instances):
                if not reply.assoc.is_established:
                    return None
                if reply.cancelled():
                    return CANCELLED
                if not store.is_established:  # the destination left: the rest cannot be sent
                    ops.fail_remaining([i.sop_instance_uid for i in instances[n:]])
                    break
                msg_id = (n % 65535) + 1
                outcome = send_c_store(store, instance, contexts, msg_id, reply.priority, originator)
                ops.count(outcome, instance.sop_instance_uid)
                if ops.remaining:
                    reply.send(PENDING, ops)
        finally:
            if store.is_established:
                store.release()
        return SUCCESS
