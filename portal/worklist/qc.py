"""The technologist's QC list: studies that arrived or failed QC at the user's sites, newest first.

A technologist lands here after signing in (:func:`portal.views.home`). The page
is rendered on the server; htmx posts "QC passed (ready)" and "QC failed
(reason)" and swaps the row it gets back. Both moves are
:func:`portal.worklist.workflow.set_status` (checked by the state machine,
audited); a row the user may not see answers 404 like one that does not exist.
Paging is by keyset on (arrival, id), so a deep page costs what the first does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from audit.trail import record
from portal.access import is_administrator
from portal.worklist import listing, workflow
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import InvalidTransition, Status
from portal.worklist.views import MAX_ID, _item, _not_found, worklist_user

#: Rows per page.
PAGE_SIZE = 50
#: What a technologist still has to judge.
TO_CHECK = (Status.ARRIVED, Status.QC_FAILED)
#: The longest reason kept for a failed QC.
REASON_MAX = 200


def qc_items(user: Any) -> QuerySet[WorklistItem]:
    """The rows ``user`` may see that wait for QC (arrived, QC failed), newest arrival first."""
    return listing.visible_items(user).filter(status__in=TO_CHECK).order_by("-arrived_at", "-pk")


def _after(token: str) -> Q | None:
    """The keyset condition of a ``before`` token ``<microseconds>.<id>``; None when it is not one."""
    micros, _, pk = token.partition(".")
    if not (micros.isdigit() and pk.isdigit() and len(micros) <= 17 and int(pk) <= MAX_ID):
        return None
    moment = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
    return Q(arrived_at__lt=moment) | Q(arrived_at=moment, pk__lt=int(pk))


def _token(item: WorklistItem) -> str:
    return f"{int(item.arrived_at.timestamp() * 1_000_000)}.{item.pk}"


def _context(request: HttpRequest, **more: Any) -> dict[str, Any]:
    return {"may_qc": workflow.may_qc(request.user), "is_admin": is_administrator(request.user), **more}


@worklist_user
@require_GET
def qc_list(request: HttpRequest) -> HttpResponse:
    """The page: one page of studies to check (``?before=<token>`` for older ones)."""
    rows = qc_items(request.user)
    before = request.GET.get("before", "")
    if before:
        condition = _after(before)
        if condition is None:
            return HttpResponse("before must be a paging token", status=400, content_type="text/plain")
        rows = rows.filter(condition)
    found = list(rows[: PAGE_SIZE + 1])
    more = _token(found[PAGE_SIZE - 1]) if len(found) > PAGE_SIZE else ""
    found = found[:PAGE_SIZE]
    record("worklist_view", request, detail={"rows": len(found), "list": "qc"})
    return render(request, "worklist/qc.html", _context(request, rows=found, more=more, paged=bool(before)))


def _row(request: HttpRequest, item: WorklistItem, status: int = 200, refusal: str = "") -> HttpResponse:
    context = _context(request, item=item, refusal=refusal)
    return render(request, "worklist/_qc_row.html", context, status=status)


def _judge(request: HttpRequest, pk: int, wanted: Status, reason: str = "") -> HttpResponse:
    item = _item(request, pk, "worklist_status")
    if item is None:
        return _not_found(request)
    refusal = ""
    if not workflow.may_qc(request.user):
        refusal, status = "Only technologists and administrators judge QC.", 403
    elif wanted == Status.QC_FAILED and not reason:
        refusal, status = "Say why QC failed.", 400
    elif len(reason) > REASON_MAX:
        refusal, status = f"A reason of at most {REASON_MAX} characters.", 400
    if refusal:
        record(
            "worklist_status",
            request,
            outcome="denied",
            study_instance_uid=item.study_instance_uid,
            detail={"to": str(wanted), "reason": refusal},
        )
        return _row(request, item, status=status, refusal=refusal)
    try:
        item = workflow.set_status(item, wanted, request.user, request, reason=reason)
    except InvalidTransition as refused:
        record(
            "worklist_status",
            request,
            outcome="denied",
            study_instance_uid=item.study_instance_uid,
            detail={"to": str(wanted), "reason": str(refused)},
        )
        item.refresh_from_db()
        return _row(request, item, status=409, refusal=str(refused))
    return _row(request, item)


@worklist_user
@require_POST
def qc_passed(request: HttpRequest, pk: int) -> HttpResponse:
    """QC passed: the study becomes ready to read."""
    return _judge(request, pk, Status.READY)


@worklist_user
@require_POST
def qc_failed(request: HttpRequest, pk: int) -> HttpResponse:
    """QC failed, with the posted ``reason`` (required; kept in the audit trail)."""
    return _judge(request, pk, Status.QC_FAILED, " ".join(request.POST.get("reason", "").split()))
