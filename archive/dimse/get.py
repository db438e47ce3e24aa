"""The C-GET SCP: Patient Root and Study Root Query/Retrieve (PS3.4 C.4.3), sending on the same association.

A request is authorised and its instances selected as a C-MOVE's are
(:func:`archive.dimse.retrieve.prepare`: ``may_retrieve``, the identifier read
as a C-FIND identifier, the instances of the matches among the studies of the
calling device's site). Each selected instance is one C-STORE sub-operation
on the requesting association, on a storage context the peer accepted with
the SCP role (SCP/SCU role selection), sent as its stored bytes when the peer
accepted its stored transfer syntax and transcoded to Explicit VR Little
Endian only when it accepted nothing else (:mod:`archive.dimse.suboperations`).

Statuses (PS3.4 C.4.3.1.4): after each sub-operation 0xFF00 Pending with the
remaining, completed, failed and warning counts; done 0x0000, or 0xB000 with
(0008,0058) Failed SOP Instance UID List when some sub-operations failed or
warned, 0xA702 when all did; a C-CANCEL 0xFE00 with the counts and the list
so far; a device that may not retrieve, or an unknown caller, 0x0124
(Refused: Not authorized); an identifier without a valid level or unique keys
0xA900; a malformed value 0xC000; the index unavailable 0xA701. Every C-GET
leaves a ``retrieve`` record (refused: ``denied`` or ``failure``; accepted:
``success``, written before the first sub-operation, with the number of
instances) and, when it ran, a ``retrieve_result`` record with its final
status and counts.
"""

from __future__ import annotations

import logging
from typing import cast

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from archive.dimse.retrieve import CANCELLED, PENDING, Reply, audit_result, final_status, prepare
from archive.dimse.store import Session
from archive.dimse.suboperations import accepted_contexts, send_c_store

log = logging.getLogger(__name__)

#: The C-GET information models served, each with the C-FIND model whose identifiers it shares, and its name.
MODELS: dict[str, tuple[str, str]] = {
    str(PatientRootQueryRetrieveInformationModelGet): (str(PatientRootQueryRetrieveInformationModelFind), "patient"),
    str(StudyRootQueryRetrieveInformationModelGet): (str(StudyRootQueryRetrieveInformationModelFind), "study"),
}


class GetSCP:
    """Answers C-GET requests in the Patient Root and Study Root models."""

    def serve(self, assoc: Association, session: Session | None, req: C_GET, context: PresentationContext) -> None:
        """Answer one C-GET request received on ``assoc`` (``session`` None: an association not accepted)."""
        reply = Reply(assoc, req, context)
        plan = prepare(session, reply, MODELS, "C-GET")
        if plan is None or session is None:
            return
        ops = plan.sub_operations()
        contexts = accepted_contexts(assoc)
        msg_id = cast(int, req.MessageID)
        status = None
        for n, instance in enumerate(plan.instances):
            if not assoc.is_established:
                audit_result(session, plan.detail, "aborted", ops)
                return
            if reply.cancelled():
                status = CANCELLED
                break
            outcome = send_c_store(assoc, instance, contexts, (msg_id + n) % 65535 + 1, reply.priority)
            ops.count(outcome, instance.sop_instance_uid)
            if ops.remaining:
                reply.send(PENDING, ops)
        if not assoc.is_established:
            audit_result(session, plan.detail, "aborted", ops)
            return
        status = status if status is not None else final_status(ops)
        reply.final(status, ops, plan.comment)
        audit_result(session, plan.detail, status, ops)
