"""The worklist pages: thin views over :mod:`~portal.worklist.listing`, :mod:`~portal.worklist.claims`
and :mod:`~portal.worklist.workflow`.

The page is rendered on the server; htmx (``static/worklist/``) posts the
filters to :func:`rows` and swaps the result in, polls :func:`changes` every
second and reloads the rows when something visible changed, and posts claims
and releases, swapping the row it gets back. Filters travel in POST bodies,
never in URLs (free text may be a patient's name). A row the user may not see
answers 404 exactly like one that does not exist. Every render of rows is a
``worklist_view`` audit record; every claim, release, status change and
refusal is audited by the service that does it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from archive.access import policy, visibility
from audit.trail import record
from portal.access import is_administrator
from portal.worklist import claims, listing, workflow
from portal.worklist.models import SavedWorklist, WorklistItem
from portal.worklist.statuses import ACTIVE, InvalidTransition, Priority, Status

#: A change is reported again for this long, so a transaction that committed late is never missed.
LAG_MICROSECONDS = 1_000_000

View = Callable[..., HttpResponse]
#: The largest primary key a database holds (64-bit); a larger number in a URL names nothing.
MAX_ID = 2**63 - 1


def worklist_user(view: View) -> View:
    """Signed in and allowed to search the archive (radiologists, technologists, administrators); else 403."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not policy().can_search(request.user):
            record("worklist_view", request, outcome="denied", detail={"reason": "may not search the archive"})
            return render(request, "worklist/denied.html", status=403)
        return view(request, *args, **kwargs)

    return wrapped


def _token(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1_000_000) if moment else 0


def _context(request: HttpRequest, form: listing.FilterForm, found: listing.Page, **more: Any) -> dict[str, Any]:
    user = request.user
    return {
        "form": form,
        "page": found,
        "columns": listing.COLUMNS,
        "statuses": Status.choices,
        "priorities": Priority.choices,
        "now": timezone.now(),
        "may_claim": claims.may_claim(user),
        "may_qc": workflow.may_qc(user),
        "is_admin": is_administrator(user),
        **more,
    }


def _audit_view(request: HttpRequest, data: dict[str, Any], found: listing.Page) -> None:
    filters = {k: str(v) for k, v in data.items() if v not in (None, "", [], False)}
    record("worklist_view", request, detail={"rows": len(found.rows), "filters": filters})


@worklist_user
@require_GET
def worklist(request: HttpRequest) -> HttpResponse:
    """The page: filters, saved worklists and the first page of rows (a saved worklist's with ``?saved=<id>``)."""
    initial: dict[str, Any] = {}
    saved_id = request.GET.get("saved", "")
    if saved_id:
        pk = int(saved_id) if saved_id.isdigit() and len(saved_id) < 19 else 0  # no id is beyond 64 bits
        saved = SavedWorklist.usable_by(request.user).filter(pk=pk).first()
        if saved is None:
            return render(request, "worklist/denied.html", {"message": "No such saved worklist."}, status=404)
        initial = {k: v for k, v in saved.filters.items() if k in listing.SAVED_FIELDS}
    form = listing.FilterForm(initial)
    data = form.cleaned_data if form.is_valid() else {}
    seen = visibility(request.user)
    found = listing.page(request.user, data, seen=seen)
    _audit_view(request, data, found)
    context = _context(
        request,
        form,
        found,
        since=_token(timezone.now()) - LAG_MICROSECONDS,
        saved_lists=SavedWorklist.usable_by(request.user).select_related("owner", "shared_with"),
        sites=listing.visible_sites(request.user, seen).values_list("code", "name"),
        groups=request.user.groups.order_by("name"),
        saved_id=saved_id,
        checked_statuses=data.get("status") or [str(s) for s in ACTIVE],
    )
    return render(request, "worklist/page.html", context)


@worklist_user
@require_POST
def rows(request: HttpRequest) -> HttpResponse:
    """The rows for the posted filters (htmx swaps them in); 400 with the reasons for bad filters."""
    form = listing.FilterForm(request.POST)
    if not form.is_valid():
        return render(request, "worklist/_errors.html", {"form": form}, status=400)
    found = listing.page(request.user, form.cleaned_data)
    _audit_view(request, form.cleaned_data, found)
    return render(request, "worklist/_results.html", _context(request, form, found))


@worklist_user
@require_GET
def changes(request: HttpRequest) -> HttpResponse:
    """204 unless a row the user may see changed after ``since``; then a new watcher and ``HX-Trigger``.

    Only rows changed after ``since`` are read (an index range), so polling
    stays cheap however long the list. The new ``since`` lags the newest
    change by a second: a transaction that set an earlier time but committed
    later is still seen (at worst one extra reload).
    """
    raw = request.GET.get("since", "")
    if not raw.isdigit() or len(raw) > 17:  # microseconds; 17 digits reach beyond the year 5000
        return HttpResponse("since must be a number of microseconds", status=400, content_type="text/plain")
    since = datetime.fromtimestamp(int(raw) / 1_000_000, tz=UTC)
    newest = listing.visible_items(request.user).filter(updated_at__gt=since).aggregate(n=Max("updated_at"))["n"]
    if newest is None:
        return HttpResponse(status=204)
    token = max(int(raw), min(_token(newest), _token(timezone.now()) - LAG_MICROSECONDS))
    if token == int(raw):
        token += 1  # every row after it was reported; move on at least a little
    response = render(request, "worklist/_watch.html", {"since": token})
    response["HX-Trigger"] = "worklist-changed"
    return response


def _item(request: HttpRequest, pk: int, action: str) -> WorklistItem | None:
    """The visible row ``pk``; a miss is audited (without saying whether it exists)."""
    item = listing.visible_items(request.user).filter(pk=pk).first() if pk <= MAX_ID else None
    if item is None:
        record(action, request, outcome="denied", detail={"item": pk, "reason": "not found or not visible"})
    return item


def _row(request: HttpRequest, item: WorklistItem, status: int = 200, refusal: str = "") -> HttpResponse:
    context = _context(request, listing.FilterForm(), listing.Page([item], None, "priority", False))
    return render(request, "worklist/_row.html", {**context, "item": item, "refusal": refusal}, status=status)


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "worklist/denied.html", {"message": "No such study on your worklist."}, status=404)


def _claim_action(action: str, run: Callable[[WorklistItem, HttpRequest], WorklistItem]) -> View:
    @worklist_user
    @require_POST
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        item = _item(request, pk, action)
        if item is None:
            return _not_found(request)
        try:
            item = run(item, request)
        except claims.ClaimRefused as refused:
            claims.refuse(action, request, request.user, item, refused)
            item.refresh_from_db()
            return _row(request, item, status=409, refusal=str(refused))
        return _row(request, item)

    view.__name__ = action
    return view


claim = _claim_action("worklist_claim", lambda item, request: claims.claim(item, request.user, request))
override = _claim_action(
    "worklist_claim_override", lambda item, request: claims.claim(item, request.user, request, override=True)
)
release = _claim_action("worklist_release", lambda item, request: claims.release(item, request.user, request))


def _status_action(wanted: Status) -> View:
    @worklist_user
    @require_POST
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        item = _item(request, pk, "worklist_status")
        if item is None:
            return _not_found(request)
        if not workflow.may_qc(request.user):
            record(
                "worklist_status",
                request,
                outcome="denied",
                study_instance_uid=item.study_instance_uid,
                detail={"to": str(wanted), "reason": "only technologists and administrators"},
            )
            return _row(request, item, status=403, refusal="Only technologists and administrators change this.")
        try:
            item = workflow.set_status(item, wanted, request.user, request)
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

    view.__name__ = f"mark_{wanted}"
    return view


mark_ready = _status_action(Status.READY)
mark_qc_failed = _status_action(Status.QC_FAILED)


@worklist_user
@require_GET
def open_study(request: HttpRequest, pk: int) -> HttpResponse:
    """Open the row's study in the viewer; for its claimer this counts as activity on the claim."""
    item = _item(request, pk, "worklist_open")
    if item is None:
        return _not_found(request)
    claims.touch(item, request.user)
    return HttpResponseRedirect(reverse("viewer-study", args=[item.study_instance_uid]))


@worklist_user
@require_POST
def save(request: HttpRequest) -> HttpResponse:
    """Save the posted filters under a name (replacing one of the same name), optionally shared with a group."""
    form = listing.FilterForm(request.POST)
    name = request.POST.get("saved_name", "").strip()[:100]
    if not form.is_valid() or not name:
        return HttpResponse("Give the worklist a name, and valid filters.", status=400, content_type="text/plain")
    group_id = request.POST.get("share_with", "")
    group = request.user.groups.filter(pk=int(group_id)).first() if group_id.isdigit() and len(group_id) < 19 else None
    if group_id and (group is None or len(group_id) > 18):
        return HttpResponse("You can share only with a group you belong to.", status=400, content_type="text/plain")
    filters = {k: v for k, v in request.POST.lists() if k in listing.SAVED_FIELDS}
    kept = {k: (v if k == "status" else v[-1]) for k, v in filters.items() if any(v)}
    saved, _ = SavedWorklist.objects.update_or_create(
        owner_id=request.user.pk, name=name, defaults={"filters": kept, "shared_with": group}
    )
    record("worklist_save", request, detail={"saved": saved.pk, "shared_with": group.name if group else ""})
    response = HttpResponse(status=204)
    response["HX-Redirect"] = reverse("worklist") + f"?saved={saved.pk}"
    return response


@worklist_user
@require_POST
def forget(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete one of the user's own saved worklists."""
    deleted, _ = SavedWorklist.objects.filter(owner_id=request.user.pk, pk=min(pk, MAX_ID)).delete()
    if not deleted:
        return _not_found(request)
    record("worklist_forget", request, detail={"saved": pk})
    response = HttpResponse(status=204)
    response["HX-Redirect"] = reverse("worklist")
    return response
