"""What C-GET and C-MOVE share: authorisation and selection, responses, final status, audit, and dispatch.

:func:`prepare` answers everything that comes before the first sub-operation,
the same way for both: the calling device needs ``may_retrieve`` (else 0x0124
Refused: Not authorized); the identifier is read as a C-FIND identifier is
(:func:`archive.dimse.find.parse_identifier`: 0xA900 without a valid level or
unique keys, 0xC000 for a malformed or undecodable value) and selects the
instances of the matches among the studies of the device's site
(:func:`selected_instances`); the index unavailable, or more than 65,535
instances (the counts are US), 0xA701 (Refused: Out of Resources - Unable to
calculate number of matches). A refusal leaves a ``retrieve`` record
(``denied`` or ``failure``, with the status and the reason); an accepted
request a ``retrieve`` record with the study UIDs and the number of
instances, written before the first sub-operation: a retrieve the trail
cannot show is refused, never performed.

Selected instances that are not ONLINE (on a tier that needs a restore) are
not sent: each is a failed sub-operation (:meth:`Plan.sub_operations`), the
restore of the NEARLINE ones is started
(:func:`archive.ingest.restore.restore_for_retrieve`, audited), and the final
response's Error Comment says so with an estimate, so a retry later succeeds.

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
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, close_old_connections
from django.db.models import QuerySet
from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

from archive.access import site_studies
from archive.dimse.find import UNABLE_TO_PROCESS, Refused, parse_identifier, text_of
from archive.dimse.statuses import NOT_AUTHORIZED, SUCCESS
from archive.dimse.store import Session
from archive.dimse.suboperations import FAILURE, SubOperations
from archive.ingest.lastaccess import touch_studies
from archive.ingest.restore import restore_for_retrieve
from archive.models import Availability, Instance, Site
from archive.query.matching import BadQuery, Level, Query, matching_queryset
from audit.trail import record

log = logging.getLogger(__name__)

PENDING = 0xFF00  # Pending: sub-operations are continuing
CANCELLED = 0xFE00  # Cancel: sub-operations terminated due to Cancel indication
WARNING_STATUS = 0xB000  # Warning: sub-operations complete, one or more failures or warnings
UNABLE_TO_CALCULATE = 0xA701  # Refused: Out of Resources - Unable to calculate number of matches
UNABLE_TO_PERFORM = 0xA702  # Refused: Out of Resources - Unable to perform sub-operations
OUTCOME = {SUCCESS: "success", WARNING_STATUS: "warning", CANCELLED: "cancelled"}
#: At most this many sub-operations per retrieve: the counts are US (PS3.7 9.3.3), and a bigger one is refused.
MAX_SUBOPERATIONS = 65535
#: The path from an instance to each level's row, to select the instances of the matches.
INSTANCE_PATH = {
    Level.PATIENT: "series__study__patient__in",
    Level.STUDY: "series__study__in",
    Level.SERIES: "series__in",
    Level.INSTANCE: "pk__in",
}

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

    def final(self, status: int, ops: SubOperations, comment: str = "") -> None:
        """The final response: the counts, the Failed SOP Instance UID List unless all completed, an Error Comment."""
        rsp = self._response(status)
        if comment and status != SUCCESS:
            rsp.ErrorComment = comment[:64]  # type: ignore[assignment]
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


def selected_instances(site: Site, query: Query) -> QuerySet[Instance]:
    """The instances of the query's matches among the studies of ``site``, in study, series and instance order."""
    matches = matching_queryset(site_studies(site), query).values("pk")
    return (
        Instance.objects.select_related("series__study")
        .filter(**{INSTANCE_PATH[query.level]: matches})
        .filter(series__study__in=site_studies(site).values("pk"))
        .order_by("series__study_id", "series_id", "instance_number", "pk")
    )


@dataclass
class Plan:
    """An accepted retrieve: its audit detail, the instances to send, and those that cannot be read now.

    ``waiting`` are the selected instances that are not ONLINE: each counts as
    a failed sub-operation (listed in the Failed SOP Instance UID List), and
    ``comment`` is the final response's Error Comment saying what was done
    about them (a restore started, with an estimate; or an administrator needed).
    """

    detail: dict[str, Any]
    instances: list[Instance]
    waiting: list[Instance] = field(default_factory=list)
    comment: str = ""

    def sub_operations(self) -> SubOperations:
        """The counts before the first C-STORE: one sub-operation per instance, those waiting already failed."""
        ops = SubOperations(remaining=len(self.instances) + len(self.waiting))
        for instance in self.waiting:
            ops.count(FAILURE, instance.sop_instance_uid)
        return ops


def prepare(
    session: Session | None,
    reply: Reply,
    models: dict[str, tuple[str, str]],
    service: str,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Plan | None:
    """Authorise a C-GET or C-MOVE and select its instances; None when refused (answered and audited).

    ``models`` maps each served SOP class to (its C-FIND model, its name);
    ``check``, called once the device may retrieve, raises :class:`Refused`
    (C-MOVE's destination) and may add to the audit detail.
    """
    if session is None:
        reply.send(NOT_AUTHORIZED, comment="association not authorized")
        return None
    model = str(reply.req.AffectedSOPClassUID)
    detail = session.detail(models[model][1] if model in models else model, service=service)
    device = session.device
    reason = session.refusal(device is not None and device.may_retrieve, f"retrieve ({service})")
    if device is None or reason is not None:
        reason = reason or "unknown device"
        session.audit("retrieve", detail, "denied", status=f"0x{NOT_AUTHORIZED:04X}", reason=reason)
        reply.send(NOT_AUTHORIZED, comment=reason)
        return None
    try:
        if check is not None:
            check(detail)
        identifier = reply.identifier()
        query = parse_identifier(identifier, models[model][0])
        detail["level"] = query.level.query_retrieve_level
        detail["query"] = {str(e.keyword)[:64]: text_of(e)[:64] for e in list(identifier)[:16] if e.VR != "SQ"}
        instances = list(selected_instances(device.site, query)[: MAX_SUBOPERATIONS + 1])
        if len(instances) > MAX_SUBOPERATIONS:
            raise Refused(UNABLE_TO_CALCULATE, f"more than {MAX_SUBOPERATIONS} instances: narrow the request")
        studies = sorted({i.series.study.study_instance_uid for i in instances})
        record(
            "retrieve",
            session.request(),
            actor=f"AE:{session.calling_ae}",
            study_instance_uid=studies[0] if len(studies) == 1 else "",
            detail={**detail, "studies": studies[:20], "instances": len(instances)},
        )
        touch_studies(studies)  # last access, for lifecycle rules (archive/ingest/lastaccess.py)
        online = [i for i in instances if i.availability == Availability.ONLINE]
        waiting = [i for i in instances if i.availability != Availability.ONLINE]
        comment = ""
        if waiting:
            held = restore_for_retrieve(
                [i.pk for i in waiting], actor=f"AE:{session.calling_ae}", request=session.request()
            )
            comment = held.comment
            detail["not_online"] = {"restoring": held.restoring, "offline": held.offline}
    except Refused as exc:
        refuse(session, reply, detail, exc.status, str(exc))
        return None
    except BadQuery as exc:
        refuse(session, reply, detail, UNABLE_TO_PROCESS, str(exc))
        return None
    except DatabaseError as exc:
        close_old_connections()
        log.warning("%s from %s failed: %s", service, session.calling_ae, exc)
        refuse(session, reply, detail, UNABLE_TO_CALCULATE, "the index is not available")
        return None
    except (AttributeError, ValueError, KeyError, TypeError, EOFError) as exc:  # an undecodable identifier
        refuse(session, reply, detail, UNABLE_TO_PROCESS, "the identifier cannot be decoded", str(exc))
        return None
    return Plan(detail, online, waiting, comment)


def refuse(session: Session, reply: Reply, detail: dict[str, Any], status: int, comment: str, reason: str = "") -> None:
    """Answer ``status`` with ``comment`` and leave the ``retrieve`` / ``failure`` record."""
    session.audit("retrieve", detail, "failure", status=f"0x{status:04X}", reason=(reason or comment)[:200])
    reply.send(status, comment=comment)


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
