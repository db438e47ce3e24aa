"""The correction form: a technologist or an administrator corrects a study's patient and study attributes.

Opened from the QC list (``/worklist/qc/<row>/correct``). The form shows the
values the index holds now; what the user changes, with a required reason,
goes to :func:`archive.ingest.correct.correct_study`, which writes a new
version of every instance through the ingest path and audits it. An invalid
value comes back as a form error (400) and nothing is written; a study in the
trash, under a tier move or changed meanwhile comes back as 409. A row the
user may not see answers 404 like one that does not exist.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from archive.dicom.corrections import CORRECTABLE
from archive.ingest.correct import REASON_MAX, CorrectionRefused, correct_study, study_values
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
    item = _item(request, pk, "correct")
    if item is None:
        return _not_found(request)
    study = item.study
    if not workflow.may_qc(request.user):
        record(
            "correct",
            request,
            outcome="denied",
            study_instance_uid=item.study_instance_uid,
            detail={"reason": "only technologists and administrators"},
        )
        return render(request, "worklist/denied.html", {"message": "Only technologists correct studies."}, status=403)
    current = study_values(study)
    if request.method == "GET":
        form = CorrectionForm(initial=current)
        return _page(request, item, form, done="done" in request.GET)
    form = CorrectionForm(request.POST, initial=current)
    if not form.is_valid():
        return _page(request, item, form, status=400)
    changes = {k: form.cleaned_data[k] for k in CORRECTABLE if form.cleaned_data[k] != current.get(k, "")}
    try:
        correct_study(study, changes, form.cleaned_data["reason"], user=request.user, request=request)
    except CorrectionRefused as refused:
        for field, why in refused.errors.items():
            form.add_error(field if field in form.fields else None, why)
        if not refused.errors:
            form.add_error(None, str(refused))
        return _page(request, item, form, status=refused.status)
    return HttpResponseRedirect(reverse("worklist-correct", args=[item.pk]) + "?done", status=303)


def _page(request: HttpRequest, item: Any, form: CorrectionForm, status: int = 200, done: bool = False) -> HttpResponse:
    return render(request, "worklist/correct.html", {"item": item, "form": form, "done": done}, status=status)
