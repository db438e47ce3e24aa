"""Reading the worklist: who sees which rows, filters, sorting and keyset paging.

Rows are limited by the one access policy: :func:`visible_items` keeps the
rows of the studies :func:`archive.access.visible_studies` gives the user.
A page is one query ordered by the chosen column and the row id, starting
after the last row of the previous page (keyset paging: as fast at page
1000 as at page 1); the row named by the cursor is looked up among the
visible rows, so a cursor never reveals anything. Paging back is the same
query turned around: the rows before the first row of the current page, in
the reverse order, the first page-full of them, flipped (as fast at any
depth); with fewer than a page-full before it, the page is the first one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django import forms
from django.db.models import Q, QuerySet

from archive.access import Visibility, visibility, visible_studies
from archive.models import Site, Study
from portal.worklist.models import WorklistItem
from portal.worklist.rows import IMAGES
from portal.worklist.statuses import ACTIVE, Priority, Status

PAGE_SIZE = 50

#: Sortable columns: the key the page sends -> the model fields, in order (the row id always ends the order).
SORTS: dict[str, tuple[str, ...]] = {
    "priority": ("priority", "arrived_at"),
    "status": ("status",),
    "patient": ("patient_name_search",),
    "patient_id": ("patient_id",),
    "age": ("patient_age",),
    "sex": ("patient_sex",),
    "modality": ("modality",),
    "body_part": ("body_part",),
    "description": ("description",),
    "site": ("site_code",),
    "study_date": ("study_date",),
    "arrived": ("arrived_at",),
    "images": ("image_count",),
    "priors": ("priors_count",),
    "reader": ("reader_name",),
}

#: The columns in the order shown, with their headings (every one sortable).
COLUMNS = [
    ("priority", "Priority"),
    ("status", "Status"),
    ("patient", "Patient"),
    ("patient_id", "Patient ID"),
    ("age", "Age"),
    ("sex", "Sex"),
    ("modality", "Modality"),
    ("body_part", "Body part"),
    ("description", "Description"),
    ("site", "Site"),
    ("study_date", "Study date"),
    ("arrived", "Arrived"),
    ("images", "Images"),
    ("priors", "Priors"),
    ("reader", "Reader"),
]

#: The filter fields a saved worklist keeps.
SAVED_FIELDS = (
    "status",
    "modality",
    "site",
    "body_part",
    "priority",
    "date_from",
    "date_to",
    "mine",
    "unassigned",
    "q",
    "sort",
    "desc",
)


class FilterForm(forms.Form):
    """The worklist's filters, as the page posts them; every field optional."""

    status = forms.MultipleChoiceField(choices=[("all", "All"), *Status.choices], required=False)
    modality = forms.CharField(max_length=16, required=False)
    site = forms.CharField(max_length=32, required=False)
    body_part = forms.CharField(max_length=64, required=False)
    priority = forms.TypedChoiceField(
        choices=[("", "Any"), *Priority.choices], coerce=int, empty_value=None, required=False
    )
    date_from = forms.DateField(required=False)
    date_to = forms.DateField(required=False)
    mine = forms.BooleanField(required=False)
    unassigned = forms.BooleanField(required=False)
    q = forms.CharField(max_length=64, required=False, strip=True)
    sort = forms.ChoiceField(choices=[(k, k) for k in SORTS], required=False)
    desc = forms.BooleanField(required=False)
    after = forms.IntegerField(min_value=1, max_value=2**63 - 1, required=False)
    before = forms.IntegerField(min_value=1, max_value=2**63 - 1, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The date range ends before it begins.")
        if data.get("after") and data.get("before"):
            raise forms.ValidationError("A page starts after one row or ends before one, not both.")
        return data


@dataclass
class Page:
    rows: list[WorklistItem]
    next_after: int | None
    sort: str
    desc: bool
    filters: dict[str, Any] = field(default_factory=dict)
    #: The cursor of the page before this one (its first row's id); None on the first page.
    previous_before: int | None = None


def visible_items(user: Any, seen: Visibility | None | object = None) -> QuerySet[WorklistItem]:
    """The rows of the studies ``user`` may see (the access policy decides, nothing here).

    ``seen`` is the user's :func:`archive.access.visibility` when the caller
    already has it (one computation per request).
    """
    if not isinstance(seen, Visibility):
        seen = visibility(user)
    rows = WorklistItem.objects.annotate(images=IMAGES)  # always the current count of images
    if seen is None:  # the policy decides by queryset alone
        return rows.filter(study__in=visible_studies(user))
    allowed = seen.condition("study")
    return rows.filter(allowed) if allowed is not None else rows.none()


def visible_sites(user: Any, seen: Visibility | None | object = None) -> QuerySet[Site]:
    """The sites offered as a filter: the user's sites and those of studies granted one by one."""
    if not isinstance(seen, Visibility):
        seen = visibility(user)
    if seen is None:
        return Site.objects.filter(studies__in=visible_studies(user)).distinct()
    if seen.everything:
        return Site.objects.all()
    sites = Site.objects.filter(pk__in=sorted(seen.site_ids))
    if seen.study_ids:  # the sites of studies granted one by one (few)
        granted = Study.objects.filter(pk__in=sorted(seen.study_ids)).values("site_id")
        sites = Site.objects.filter(Q(pk__in=sorted(seen.site_ids)) | Q(pk__in=granted))
    return sites


def _day(value: date) -> str:
    return value.strftime("%Y%m%d")


def filtered(rows: QuerySet[WorklistItem], data: dict[str, Any], user: Any) -> QuerySet[WorklistItem]:
    """Apply the cleaned filters of :class:`FilterForm` to ``rows``."""
    statuses = data.get("status") or []
    if not statuses:
        rows = rows.filter(status__in=ACTIVE)
    elif "all" not in statuses:
        rows = rows.filter(status__in=statuses)
    if data.get("modality"):
        rows = rows.filter(modality__icontains=data["modality"].strip())
    if data.get("site"):
        rows = rows.filter(site_code=data["site"])
    if data.get("body_part"):
        rows = rows.filter(body_part__iexact=data["body_part"].strip())
    if data.get("priority") is not None:
        rows = rows.filter(priority=data["priority"])
    if data.get("date_from"):
        rows = rows.filter(study_date__gte=_day(data["date_from"]))
    if data.get("date_to"):
        rows = rows.filter(study_date__lte=_day(data["date_to"]))
    if data.get("mine"):
        rows = rows.filter(
            Q(claimed_by=user) | Q(assigned_reader=user) | Q(assigned_group__in=user.groups.values("pk"))
        )
    if data.get("unassigned"):
        rows = rows.filter(claimed_by__isnull=True, assigned_reader__isnull=True, assigned_group__isnull=True)
    text = (data.get("q") or "").strip()
    if text:
        rows = rows.filter(
            Q(patient_name_search__contains=text.upper())
            | Q(patient_id__istartswith=text)
            | Q(accession_number__istartswith=text)
            | Q(description__icontains=text)
        )
    return rows


def _after(columns: tuple[str, ...], anchor: WorklistItem, desc: bool) -> Q:
    """Rows strictly after ``anchor`` in the order of ``columns`` + id (keyset condition)."""
    keys = [*columns, "id"]
    op = "lt" if desc else "gt"
    condition = Q()
    for n, key in enumerate(keys):
        step = Q(**{f"{key}__{op}": getattr(anchor, key)})
        for earlier in keys[:n]:
            step &= Q(**{earlier: getattr(anchor, earlier)})
        condition |= step
    return condition


def _ordered(rows: QuerySet[WorklistItem], columns: tuple[str, ...], desc: bool) -> QuerySet[WorklistItem]:
    prefix = "-" if desc else ""
    return rows.order_by(*(prefix + c for c in (*columns, "id")))


def page(user: Any, data: dict[str, Any], size: int | None = None, seen: Visibility | None | object = None) -> Page:
    """One page of the worklist for ``user`` with the cleaned filters ``data``.

    ``after`` (a row id) asks for the page following that row, ``before`` for
    the page preceding it; a cursor naming no visible row gives the first page.
    """
    size = size or PAGE_SIZE
    sort = data.get("sort") or "priority"
    desc = bool(data.get("desc"))
    columns = SORTS[sort]
    visible = visible_items(user, seen)
    rows = filtered(visible, data, user)
    cursor = data.get("after") or data.get("before")
    anchor = visible.filter(pk=cursor).first() if cursor else None
    if anchor is not None and data.get("before"):
        # Backwards: the rows before the anchor in the reverse order, a page-full of them, flipped.
        earlier = list(_ordered(rows.filter(_after(columns, anchor, not desc)), columns, not desc)[: size + 1])
        if len(earlier) > size:
            found = earlier[:size][::-1]
            return Page(found, found[-1].pk, sort, desc, previous_before=found[0].pk)
        anchor = None  # less than a page-full before it: the first page
    if anchor is not None:
        rows = rows.filter(_after(columns, anchor, desc))
    found = list(_ordered(rows, columns, desc)[: size + 1])
    more = len(found) > size
    found = found[:size]
    previous = found[0].pk if anchor is not None and found else None
    return Page(found, found[-1].pk if more and found else None, sort, desc, previous_before=previous)
