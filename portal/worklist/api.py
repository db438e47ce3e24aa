"""The worklist's JSON API (``/api/worklist/``): thin views over :mod:`~portal.worklist.listing` and
:mod:`~portal.worklist.claims`.

* ``GET /api/worklist/items/?status=&modality=&site=&body_part=&priority=&date_from=&date_to=&mine=&unassigned=
  &sort=&desc=&cursor=&limit=``: a page of rows, keyset-paged like the page (``next`` is the next page's URL).
* ``POST /api/worklist/items/search``: the same with the filters in a JSON body, free text (``q``) included:
  a patient's name never travels in a URL, where logs and browser histories would keep it.
* ``GET /api/worklist/items/{study_uid}``: one row.
* ``POST /api/worklist/items/{study_uid}/claim`` (``{"override": true}`` for an administrator) and ``/release``.

Who may use it is the page's rule: users who may search the archive (radiologists, technologists,
administrators), by session or bearer token; which rows they see is the one access policy's answer
(:func:`portal.worklist.listing.visible_items`). A row the user may not see is a 404 exactly like one
that does not exist. Every page served is a ``worklist_view`` audit record; claims, releases and their
refusals are audited by :mod:`~portal.worklist.claims`; every other refusal here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import QueryDict
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from archive.access import policy
from audit.trail import record
from portal.api.views import (
    STUDY_UID,
    ApiView,
    BadRequest,
    InvalidRequestSerializer,
    ProblemSerializer,
    check_uid,
    problem,
)
from portal.worklist import claims, listing
from portal.worklist.models import WorklistItem
from portal.worklist.serializers import (
    PRIORITY_NAMES,
    ClaimRefusedSerializer,
    ClaimSerializer,
    SearchSerializer,
    WorklistItemSerializer,
    WorklistPageSerializer,
)
from portal.worklist.statuses import Status

#: The filters a GET takes in its query (free text ``q`` only in a search body).
QUERY_FILTERS = ("status", "modality", "site", "body_part", "priority", "date_from", "date_to", "mine", "unassigned")
PAGING = ("sort", "desc", "cursor", "limit")
MAX_LIMIT = 200
_PRIORITY_VALUES = {name: str(int(value)) for value, name in PRIORITY_NAMES.items()}


class MaySearch(BasePermission):
    """The worklist's users: those the access policy lets search the archive (the page's rule); refusals audited."""

    message = "Only radiologists, technologists and administrators use the worklist."

    def has_permission(self, request: Request, view: Any) -> bool:
        if policy().can_search(request.user):
            return True
        if request.user and request.user.is_authenticated:
            record(
                "worklist_view", request._request, outcome="denied", detail={"reason": "may not search", "via": "api"}
            )
        return False


def _form_data(values: dict[str, list[str]]) -> tuple[QueryDict, int]:
    """The filters as :class:`~portal.worklist.listing.FilterForm` reads them, and the page size."""
    data = QueryDict(mutable=True)
    for key, items in values.items():
        if key == "status":
            for item in items:
                for value in (v.strip() for v in item.split(",")):
                    if value:
                        data.appendlist("status", value)
        elif key == "priority":
            wanted = items[-1].strip().lower()
            data["priority"] = _PRIORITY_VALUES.get(wanted, "?") if wanted else ""  # "?": FilterForm says why
        elif key == "cursor":
            data["after"] = items[-1]
        elif key in ("mine", "unassigned", "desc"):
            flag = items[-1].strip().lower()
            if flag not in ("", "true", "false", "1", "0"):
                raise BadRequest(f"{key} is true or false.")
            if flag in ("true", "1"):
                data[key] = "on"
        elif key != "limit":
            data[key] = items[-1]
    raw = (values.get("limit") or [""])[-1].strip()
    if raw and not (len(raw) <= 3 and raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
        raise BadRequest(f"limit is a number from 1 to {MAX_LIMIT}.")
    return data, int(raw) if raw else listing.PAGE_SIZE


def _page(request: Request, values: dict[str, list[str]], link: bool) -> Response:
    data, size = _form_data(values)
    form = listing.FilterForm(data)
    if not form.is_valid():
        fields = sorted(form.errors)
        record(
            "worklist_view",
            request._request,
            outcome="denied",
            detail={"reason": "bad filters", "fields": fields, "via": "api"},
        )
        errors = {("cursor" if k == "after" else k): v for k, v in form.errors.items()}
        return problem(400, "The filters are not right.", errors=errors)
    found = listing.page(request.user, form.cleaned_data, size=size)
    filters = {k: str(v) for k, v in form.cleaned_data.items() if v not in (None, "", [], False) and k != "q"}
    if form.cleaned_data.get("q"):
        filters["q"] = "(free text)"
    record("worklist_view", request._request, detail={"rows": len(found.rows), "filters": filters, "via": "api"})
    cursor = str(found.next_after) if found.next_after else None
    following = None
    if cursor and link:
        query = [(k, v) for k, vs in values.items() if k != "cursor" for v in vs] + [("cursor", cursor)]
        following = request.build_absolute_uri(request.path + "?" + urlencode(query))
    rows = WorklistItemSerializer(found.rows, many=True).data
    return Response({"results": rows, "next_cursor": cursor, "next": following})


_FILTER_PARAMETERS = [
    OpenApiParameter(
        "status",
        OpenApiTypes.STR,
        description="Statuses, repeated or comma-separated (default: arrived, ready, in_progress, preliminary; "
        "'all' for every one): " + ", ".join(Status.values),
    ),
    OpenApiParameter("modality", OpenApiTypes.STR, description="Modality (e.g. CT), matched within the study's."),
    OpenApiParameter("site", OpenApiTypes.STR, description="A site's code."),
    OpenApiParameter("body_part", OpenApiTypes.STR, description="(0018,0015) Body Part Examined, e.g. CHEST."),
    OpenApiParameter("priority", OpenApiTypes.STR, enum=list(PRIORITY_NAMES.values())),
    OpenApiParameter("date_from", OpenApiTypes.DATE, description="Study date on or after (YYYY-MM-DD)."),
    OpenApiParameter("date_to", OpenApiTypes.DATE, description="Study date on or before (YYYY-MM-DD)."),
    OpenApiParameter("mine", OpenApiTypes.BOOL, description="Claimed by me, or routed to me or my groups."),
    OpenApiParameter("unassigned", OpenApiTypes.BOOL, description="Claimed by nobody and routed to nobody."),
    OpenApiParameter("sort", OpenApiTypes.STR, enum=list(listing.SORTS), description="Default: priority."),
    OpenApiParameter("desc", OpenApiTypes.BOOL, description="Sort descending."),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="next_cursor of the previous page."),
    OpenApiParameter("limit", OpenApiTypes.INT, description=f"Rows per page, 1 to {MAX_LIMIT} (default 50)."),
]
_COMMON_ERRORS = {400: InvalidRequestSerializer, 401: ProblemSerializer, 403: ProblemSerializer}


class ItemsView(ApiView):
    """A page of the worklist: the filters in the query, keyset-paged."""

    permission_classes = [MaySearch]

    @extend_schema(
        operation_id="worklist_items_list",
        summary="A page of the worklist, filtered and sorted (keyset paging)",
        tags=["worklist"],
        parameters=_FILTER_PARAMETERS,
        responses={200: WorklistPageSerializer, **_COMMON_ERRORS},
    )
    def get(self, request: Request) -> Response:
        values = dict(request.query_params.lists())
        if "q" in values:
            record("worklist_view", request._request, outcome="denied", detail={"reason": "free text in the URL"})
            raise BadRequest("Free text never goes in a URL: POST it as q to /api/worklist/items/search.")
        unknown = sorted(set(values) - set(QUERY_FILTERS) - set(PAGING))
        if unknown:
            raise BadRequest("Unknown parameters: " + ", ".join(u[:40] for u in unknown[:10]) + ".")
        return _page(request, values, link=True)


class SearchView(ApiView):
    """A page of the worklist: the filters, free text included, in a JSON body."""

    permission_classes = [MaySearch]

    @extend_schema(
        operation_id="worklist_items_search",
        summary="A page of the worklist with the filters (free text included) in the body",
        tags=["worklist"],
        request=SearchSerializer,
        responses={200: WorklistPageSerializer, **_COMMON_ERRORS},
    )
    def post(self, request: Request) -> Response:
        body = request.data
        if not isinstance(body, dict):
            raise BadRequest("The body is a JSON object of filters.")
        unknown = sorted(set(body) - set(QUERY_FILTERS) - set(PAGING) - {"q"})
        if unknown:
            raise BadRequest("Unknown members: " + ", ".join(str(u)[:40] for u in unknown[:10]) + ".")
        values: dict[str, list[str]] = {}
        for key, value in body.items():
            items = value if key == "status" and isinstance(value, list) else [value]
            if not all(isinstance(v, str | int | bool) or v is None for v in items):
                raise BadRequest(f"{key} is a string" + (" or a list of strings." if key == "status" else "."))
            values[key] = ["" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in items]
        return _page(request, values, link=False)


def _visible_item(request: Request, study_uid: str, action: str) -> WorklistItem:
    """The row of a study the user may see; 400 for a bad UID, 404 (audited) for any other miss."""
    check_uid(study_uid)
    item = listing.visible_items(request.user).filter(study_instance_uid=study_uid).first()
    if item is None:
        record(action, request._request, outcome="denied", detail={"reason": "not found or not visible", "via": "api"})
        raise exceptions.NotFound("No such study on your worklist.")
    return item


class ItemView(ApiView):
    """One study's worklist row."""

    permission_classes = [MaySearch]

    @extend_schema(
        operation_id="worklist_item",
        parameters=[STUDY_UID],
        summary="One study's worklist row",
        tags=["worklist"],
        responses={
            200: WorklistItemSerializer,
            400: ProblemSerializer,
            401: ProblemSerializer,
            403: ProblemSerializer,
            404: ProblemSerializer,
        },
    )
    def get(self, request: Request, study_uid: str) -> Response:
        item = _visible_item(request, study_uid, "worklist_view")
        record(
            "worklist_view",
            request._request,
            patient_id=item.patient_id,
            study_instance_uid=item.study_instance_uid,
            detail={"rows": 1, "via": "api"},
        )
        return Response(WorklistItemSerializer(item).data)


_CLAIM_RESPONSES = {
    200: WorklistItemSerializer,
    400: ProblemSerializer,
    401: ProblemSerializer,
    403: ClaimRefusedSerializer,
    404: ProblemSerializer,
    409: ClaimRefusedSerializer,
}


class ClaimView(ApiView):
    """Claim a study for reading: it is locked to the caller until released, signed or idle too long."""

    permission_classes = [MaySearch]

    @extend_schema(
        operation_id="worklist_item_claim",
        parameters=[STUDY_UID],
        summary="Claim a study for reading (409 naming the holder when someone else has it)",
        tags=["worklist"],
        request=ClaimSerializer,
        responses=_CLAIM_RESPONSES,
    )
    def post(self, request: Request, study_uid: str) -> Response:
        item = _visible_item(request, study_uid, "worklist_claim")
        options = ClaimSerializer(data=request.data if isinstance(request.data, dict) else {"override": request.data})
        if not options.is_valid():
            return problem(400, "The claim's options are not right.", errors=options.errors)
        override = bool(options.validated_data["override"])
        action = "worklist_claim_override" if override else "worklist_claim"
        return _claim_action(
            request, item, action, lambda: claims.claim(item, request.user, request._request, override=override)
        )


class ReleaseView(ApiView):
    """Give a claimed study back to the worklist (ready)."""

    permission_classes = [MaySearch]

    @extend_schema(
        operation_id="worklist_item_release",
        parameters=[STUDY_UID],
        summary="Give a claimed study back (its holder, or an administrator)",
        tags=["worklist"],
        request=None,
        responses=_CLAIM_RESPONSES,
    )
    def post(self, request: Request, study_uid: str) -> Response:
        item = _visible_item(request, study_uid, "worklist_release")
        return _claim_action(
            request, item, "worklist_release", lambda: claims.release(item, request.user, request._request)
        )


def _claim_action(request: Request, item: WorklistItem, action: str, run: Any) -> Response:
    try:
        item = run()
    except claims.ClaimRefused as refused:
        claims.refuse(action, request._request, request.user, item, refused)
        return problem(refused.status, f"Refused: {refused}.", holder=refused.holder)
    return Response(WorklistItemSerializer(item).data)


#: Mounted under ``/api/`` by :mod:`pacs.urls`.
urlpatterns = [
    path("worklist/items/", ItemsView.as_view(), name="api-worklist-items"),
    path("worklist/items/search", SearchView.as_view(), name="api-worklist-search"),
    path("worklist/items/<str:study_uid>", ItemView.as_view(), name="api-worklist-item"),
    path("worklist/items/<str:study_uid>/claim", ClaimView.as_view(), name="api-worklist-claim"),
    path("worklist/items/<str:study_uid>/release", ReleaseView.as_view(), name="api-worklist-release"),
]
