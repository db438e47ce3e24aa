"""What C-GET and C-MOVE share: their responses, their final status, their result record, and their dispatch.

:class:`Reply` decodes a C-GET or C-MOVE request's identifier and sends its
responses (Pending with counts, the final one with (0008,0058) Failed SOP
Instance UID List when it has failures, a refusal with an Error Comment).
:func:`final_status` is the final status PS3.4 C.4.2.1.5 / C.4.3.1.4 gives the
counts: 0x0000 when every sub-operation completed, 0xA702 when all failed,
0xB000 otherwise. :func:`audit_result` writes the ``retrieve_result`` record
of a retrieve that ran: its final status and counts.

:func:`serve_retrievals` makes one accepted association hand its C-GET and
C-MOVE requests to the node's SCPs instead of pynetdicom's own service class,
whose handler protocol cannot refuse a C-MOVE before opening the
sub-association, and re-encodes every data set it sends. It replaces the
association's ``_serve_request`` (a pynetdicom 3.0 internal; requirements pin
pynetdicom) with one that takes those two requests and passes every other to
pynetdicom, doing what pynetdicom does around a service: forget stale
C-CANCELs, and mark the reactor paused so that C-STOREs can be sent on the
association while it waits.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

from archive.dimse.statuses import SUCCESS
from archive.dimse.store import Session
from archive.dimse.suboperations import SubOperations

log = logging.getLogger(__name__)

PENDING = 0xFF00  # Pending: sub-operations are continuing
CANCELLED = 0xFE00  # Cancel: sub-operations terminated due to Cancel indication
WARNING_STATUS = 0xB000  # Warning: sub-operations complete, one or more failures or warnings
UNABLE_TO_CALCULATE = 0xA701  # Refused: Out of Resources - Unable to calculate number of matches
UNABLE_TO_PERFORM = 0xA702  # Refused: Out of Resources - Unable to perform sub-operations
OUTCOME = {SUCCESS: "success", WARNING_STATUS: "warning", CANCELLED: "cancelled"}

Retrieval = C_GET | C_MOVE


class Reply:
    """The responses to one C-GET or C-MOVE request, sent on its association and presentation context."""

    def __init__(self, assoc: Association, req: Retrieval, context: PresentationContext) -> None:
        self.assoc = assoc
        self.req = req
        self.context = context
        self.syntax = context.transfer_syntax[0]
        self.priority = int(req.Priority) if req.Priority is not None else 2

    def identifier(self) -> Dataset:
        """The request's identifier (raises what pydicom raises on an undecodable one)."""
        raw = self.req.Identifier
        if raw is None:
            raise ValueError("no identifier")
        raw.seek(0)
        ts = self.syntax
        return decode(raw, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)

    def cancelled(self) -> bool:
        """Whether a C-CANCEL for this request has arrived (and forget it)."""
        return self.assoc.dimse.cancel_req.pop(self.req.MessageID, None) is not None  # type: ignore[arg-type]

    def send(self, status: int, ops: SubOperations | None = None, comment: str = "") -> None:
        """A Pending response with the counts, or a refusal with an Error Comment."""
        rsp = self._response(status)
        if comment:
            rsp.ErrorComment = comment[:64]  # type: ignore[assignment]
        if ops is not None:
            ops.fill(rsp)
        self.assoc.dimse.send_msg(rsp, self.context.context_id)  # type: ignore[arg-type]

    def final(self, status: int, ops: SubOperations) -> None:
        """The final response: the counts, and the Failed SOP Instance UID List unless all completed."""
        rsp = self._response(status)
        ops.fill(rsp, remaining=status == CANCELLED)
        if status != SUCCESS:
            listed = Dataset()
            listed.FailedSOPInstanceUIDList = ops.failed_uids
            ts = self.syntax
            rsp.Identifier = io.BytesIO(encode(listed, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated) or b"")
        self.assoc.dimse.send_msg(rsp, self.context.context_id)  # type: ignore[arg-type]

    def _response(self, status: int) -> Retrieval:
        rsp = C_MOVE() if isinstance(self.req, C_MOVE) else C_GET()
        rsp.MessageIDBeingRespondedTo = self.req.MessageID
        rsp.AffectedSOPClassUID = self.req.AffectedSOPClassUID
        rsp.Status = status
        return rsp


def final_status(ops: SubOperations) -> int:
    """0x0000 when every sub-operation completed, 0xA702 when all failed, 0xB000 otherwise."""
    if not ops.failed and not ops.warning:
        return SUCCESS
    if not ops.completed and not ops.warning:
        return UNABLE_TO_PERFORM
    return WARNING_STATUS


def audit_result(session: Session, detail: dict[str, Any], status: int | str, ops: SubOperations) -> None:
    """The ``retrieve_result`` record of a retrieve that ran: its final status (or why none) and its counts."""
    if isinstance(status, str):
        outcome, shown = status, status
    else:
        outcome, shown = OUTCOME.get(status, "failure"), f"0x{status:04X}"
    session.audit("retrieve_result", detail, outcome, status=shown, **ops.audit())


Server = Callable[[Association, Session | None, Any, PresentationContext], None]


def serve_retrievals(
    assoc: Association, session: Callable[[], Session | None], servers: dict[type, tuple[set[str], Server]]
) -> None:
    """Make ``assoc`` hand each request of a type in ``servers`` (C_GET, C_MOVE) for one of its SOP classes to it.

    ``session`` returns the association's session when the request arrives.
    """
    serve = assoc._serve_request

    def _serve_request(msg: Any, context_id: int) -> None:
        taken = servers.get(type(msg))
        context = next((cx for cx in assoc.accepted_contexts if cx.context_id == context_id), None)
        if taken is None or context is None or str(context.abstract_syntax) not in taken[0] or not msg.is_valid_request:
            serve(msg, context_id)
            return
        assoc.dimse.cancel_req = {}
        assoc._is_paused = True  # C-GET sends C-STOREs on this association while its reactor waits here
        try:
            taken[1](assoc, session(), msg, context)
        except Exception:  # noqa: BLE001 - a fault of ours ends the association, as pynetdicom does
            log.exception("%s failed", type(msg).__name__)
            assoc.abort()
        finally:
            assoc._is_paused = False
            assoc.dimse.cancel_req = {}

    assoc._serve_request = _serve_request  # type: ignore[method-assign]
