"""The correction form: a technologist or an administrator corrects a study's patient and study attributes.

Opened from the QC list (``/worklist/qc/<row>/correct``). The form shows the
values the index holds now; what the user changes, with a required reason,
goes to :func:`archive.ingest.correct.correct_study`, which writes a new
version of every instance through the ingest path and audits it. An invalid
value comes back as a form error (400) and nothing is written; a study in the
trash, under a tier move or changed meanwhile comes back as 409. A row the
user may not see answers 404 like one that does not exist.

The same page splits the study (chosen series move to a new study,
:func:`archive.ingest.split.split_study`) and merges it into another study the
user may see, named by its Study Instance UID
(:func:`archive.ingest.merge.merge_study`); both are corrections of the same
kind, with a required reason.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from archive.access import visible_studies
from archive.dicom.corrections import CORRECTABLE
from archive.dicom.uid import is_valid_uid
from archive.ingest.correct import REASON_MAX, CorrectionRefused, correct_study, study_values
from archive.ingest.merge import merge_study
from archive.ingest.split import split_study
from archive.models import Series
from audit.trail import record
from portal.worklist import workflow
from portal.worklist.views import _item, _not_found, worklist_user


class CorrectionForm(forms.Form):
    """One text field per correctable attribute (checked by the archive, per VR) and the reason."""

    reason = forms.CharField(max_length=REASON_MAX, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for keyword, (vr, _, label) in CORRECTABLE.items():
            self.fields[keyword] = forms.CharField(
                label=label, required=False, max_length=1024, help_text=f"VR {vr}", strip=True
            )
        self.order_fields([*CORRECTABLE, "reason"])


@worklist_user
@require_http_methods(["GET", "POST"])
def correct(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the form with the current values; POST: make the correction (then back here with ``?done``)."""
    item, answer = _allowed(request, pk, "correct")
    if answer is not None:
        return answer
    study = item.study
    current = study_values(study)
    if request.method == "GET":
        record(
            "worklist_view",
            request,
            patient_id=item.patient_id,
            study_instance_uid=item.study_instance_uid,
            detail={"rows": 1, "page": "correct"},
        )
        form = CorrectionForm(initial=current)
        return _page(request, item, form, done="done" in request.GET)
    form = CorrectionForm(request.POST, initial=current)
    if not form.is_valid():
        return _page(request, item, form, status=400)
    changes = {k: form.cleaned_data[k] for k in CORRECTABLE if form.cleaned_data[k] != current.get(k, "")}
    try:
        correct_study(study, changes, form.cleaned_data["reason"], user=request.user, request=request)
    except CorrectionRefused as why_not:
        for field, why in why_not.errors.items():
            form.add_error(field if field in form.fields else None, why)
        if not why_not.errors:
            form.add_error(None, str(why_not))
        return _page(request, item, form, status=why_not.status)
    return HttpResponseRedirect(reverse("worklist-correct", args=[item.pk]) + "?done", status=303)


def _page(
    request: HttpRequest,
    item: Any,
    form: CorrectionForm | None = None,
    status: int = 200,
    done: bool = False,
    problem: str = "",
) -> HttpResponse:
    context = {
        "item": item,
        "form": form or CorrectionForm(initial=study_values(item.study)),
        "done": done,
        "problem": problem,
        "series": Series.objects.filter(study_id=item.study_id).order_by("series_number", "pk"),
    }
    return render(request, "worklist/correct.html", context, status=status)


def _allowed(request: HttpRequest, pk: int, action: str) -> tuple[Any, HttpResponse | None]:
    """The visible row ``pk`` whose study the user may correct, or the answer that refuses (404, 403)."""
    item = _item(request, pk, "correct")
    if item is None:
        return None, _not_found(request)
    if not workflow.may_qc(request.user):
        record("correct", request, outcome="denied", study_instance_uid=item.study_instance_uid, detail={"op": action})
        return None, render(
            request, "worklist/denied.html", {"message": "Only technologists correct studies."}, status=403
        )
    return item, None


@worklist_user
@require_POST
def split(request: HttpRequest, pk: int) -> HttpResponse:
    """Move the posted ``series`` (Series Instance UIDs) of the row's study to a new study."""
    item, refused = _allowed(request, pk, "split")
    if refused is not None:
        return refused
    try:
        split_study(
            item.study,
            request.POST.getlist("series"),
            request.POST.get("reason", ""),
            user=request.user,
            request=request,
        )
    except CorrectionRefused as why:
        return _page(request, item, status=why.status, problem=_said(why))
    return HttpResponseRedirect(reverse("worklist-correct", args=[item.pk]) + "?done", status=303)


@worklist_user
@require_POST
def merge(request: HttpRequest, pk: int) -> HttpResponse:
    """Merge the row's study into the study the user may see whose UID is posted as ``target``."""
    item, refused = _allowed(request, pk, "merge")
    if refused is not None:
        return refused
    uid = request.POST.get("target", "").strip()
    target = visible_studies(request.user).filter(study_instance_uid=uid).first() if is_valid_uid(uid) else None
    if target is None:
        record(
            "correct",
            request,
            outcome="denied",
            study_instance_uid=item.study_instance_uid,
            detail={"op": "merge", "reason": "no such target"},
        )
        return _page(request, item, status=400, problem="Merge into: no study you may see has this Study Instance UID.")
    try:
        merge_study(item.study, target, request.POST.get("reason", ""), user=request.user, request=request)
    except CorrectionRefused as why:
        return _page(request, item, status=why.status, problem=_said(why))
    return HttpResponseRedirect(reverse("worklist-qc") + "?merged", status=303)


def _said(refused: CorrectionRefused) -> str:
    details = "; ".join(f"{k}: {v}" for k, v in sorted(refused.errors.items()))
    return f"{refused}{' (' + details + ')' if details else ''}."
