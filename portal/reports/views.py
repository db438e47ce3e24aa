"""The report pages: thin views over :mod:`portal.reports.services`.

Every view finds the study through the one access policy first: a study the
user may not see answers 404 exactly like one that does not exist (audited as
a denied ``report_view``). Readers (radiologists, administrators) get the
editor and the history; everyone else who may see the study gets only the
final and amended versions, never a draft or a preliminary.

The editor is a plain form (it works without JavaScript); ``static/reports/reports.js``
autosaves it, sending the version it edited and an ``Accept: application/json``
header, and shows a conflict (both texts) when the answer is 409. A final
signature or an addendum from a session whose second factor is older than
``PACS_REPORT_SIGN_MFA_SECONDS`` is sent to the MFA challenge (``fresh=1``) and
back to the report.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from archive.dicom.uid import is_valid_uid
from archive.models import Study
from audit.trail import record
from portal.mfa import factors as mfa
from portal.reports import services
from portal.reports.models import SECTIONS, CriticalResult, Report, ReportStatus, ReportVersion

View = Callable[..., HttpResponse]


def _not_found(request: HttpRequest, uid: str) -> HttpResponse:
    record("report_view", request, outcome="denied", detail={"reason": "study not found or not visible"})
    return render(request, "reports/missing.html", status=404)


def with_study(view: View) -> View:
    """Signed in, a valid UID, and a study the user may see (else 400 / 404); passes the study on."""

    @login_required
    @never_cache
    @wraps(view)
    def wrapped(request: HttpRequest, study_instance_uid: str) -> HttpResponse:
        if not is_valid_uid(study_instance_uid):
            return render(
                request, "reports/missing.html", {"message": "That is not a valid Study Instance UID."}, status=400
            )
        study = services.visible_study(request.user, study_instance_uid)
        if study is None:
            return _not_found(request, study_instance_uid)
        return view(request, study)

    return wrapped


def _version(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isascii() and raw.isdigit() and len(raw) < 10 else None


def _context(request: HttpRequest, study: Study, report: Report | None, **more: Any) -> dict[str, Any]:
    user = request.user
    reader = services.is_reader(user)
    versions: list[ReportVersion] = list(report.versions.order_by("number")) if report and reader else []
    released = services.released_version(report)
    return {
        "study": study,
        "patient": study.patient,
        "report": report if reader else None,
        "reader": reader,
        "sections": [(name, label, getattr(report, name) if report else "") for name, label in SECTIONS],
        "may_edit": bool(report and services.may_edit(user, report)),
        "may_sign": bool(report and services.may_sign(user, study)),
        "versions": versions,
        "released": released,
        "released_sections": [(label, getattr(released, name)) for name, label in SECTIONS] if released else [],
        "critical_results": list(report.critical_results.all()) if report and reader else [],
        "methods": CriticalResult.Method.choices,
        "mfa_window_minutes": max(1, services.mfa_window() // 60),
        "now": timezone.now(),
        **more,
    }


def _page(request: HttpRequest, study: Study, status: int = 200, **more: Any) -> HttpResponse:
    report = services.open_report(study, request.user)
    return render(request, "reports/page.html", _context(request, study, report, **more), status=status)


@with_study
@require_GET
def report_page(request: HttpRequest, study: Study) -> HttpResponse:
    """The report of a study: the editor and history for readers, the final report for everyone else."""
    record("report_view", request, patient_id=study.patient.patient_id, study_instance_uid=study.study_instance_uid)
    return _page(request, study)


@with_study
@require_GET
def panel(request: HttpRequest, study: Study) -> HttpResponse:
    """The same report as a fragment for the panel beside the viewer."""
    record("report_view", request, patient_id=study.patient.patient_id, study_instance_uid=study.study_instance_uid)
    report = services.open_report(study, request.user)
    return render(request, "reports/_report.html", _context(request, study, report, in_panel=True))


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _refused(request: HttpRequest, study: Study, exc: services.Refused) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": str(exc)}, status=exc.status)
    return _page(request, study, status=exc.status, error=str(exc))


def _conflict(request: HttpRequest, study: Study, exc: services.Conflict, yours: dict[str, str]) -> HttpResponse:
    theirs = exc.current.sections()
    if _wants_json(request):
        return JsonResponse(
            {"error": "conflict", "version": exc.current.version, "theirs": theirs, "yours": yours}, status=409
        )
    labels = dict(SECTIONS)
    conflict = [(labels[name], theirs[name], yours.get(name, "")) for name in theirs]
    return _page(request, study, status=409, conflict=conflict)


def _report_or_refuse(request: HttpRequest, study: Study) -> Report | None:
    return Report.objects.filter(study=study).first() if services.is_reader(request.user) else None


def _save_posted(request: HttpRequest, study: Study, report: Report) -> Report:
    """Save the posted sections over the posted version when they differ from what is stored."""
    edited = _version(request.POST.get("version"))
    if edited is None:
        raise services.Refused("the form names no version", status=400)
    sections = services.clean_sections(request.POST, report.sections())
    if sections == report.sections() and edited == report.version:
        return report
    return services.save_draft(report, request.user, sections, edited, request)


def _fresh_mfa_redirect(study: Study) -> HttpResponse:
    back = reverse("report", args=[study.study_instance_uid])
    return HttpResponseRedirect(f"{reverse('mfa_verify')}?{urlencode({'next': back, 'fresh': '1'})}")


#: One change to a report: given the reader's report, do it; an answer of its own, or None for "back to the report".
Step = Callable[[Report], HttpResponse | None]


def _change(
    request: HttpRequest,
    study: Study,
    action: str,
    verb: str,
    step: Step,
    yours: Callable[[], dict[str, str]] = dict,
) -> HttpResponse:
    """The one shape of every change to a report (save, sign, amend, flag a critical result).

    Only a reader has a report to change (anyone else is refused, audited as
    ``action``); the step's refusals are answered alike: a stale second factor
    goes to the MFA challenge and back, a conflict shows both texts (``yours``
    is the text the user sent), a refusal its reason and status, a failed store
    503. Success goes back to the report page unless the step answers itself.
    """
    report = _report_or_refuse(request, study)
    if report is None:
        services.refuse(action, request, request.user, study, "not a reader")
        return _refused(request, study, services.Refused(f"only radiologists {verb}"))
    try:
        answer = step(report)
    except services.NeedsFreshMFA:
        return _fresh_mfa_redirect(study)
    except services.Conflict as exc:
        return _conflict(request, study, exc, yours())
    except services.Refused as exc:
        return _refused(request, study, exc)
    except services.StoreFailed as exc:
        return _page(request, study, status=503, error=str(exc))
    return answer or HttpResponseRedirect(reverse("report", args=[study.study_instance_uid]))


@with_study
@require_POST
def save(request: HttpRequest, study: Study) -> HttpResponse:
    """Save the draft (autosave or the button): 200, or 409 with both texts when someone saved in between."""

    def step(report: Report) -> HttpResponse | None:
        report = _save_posted(request, study, report)
        if _wants_json(request):
            return JsonResponse({"version": report.version, "saved_at": report.updated_at.isoformat()})
        return None

    return _change(request, study, "report_save", "write reports", step, lambda: services.clean_sections(request.POST))


@with_study
@require_POST
def sign(request: HttpRequest, study: Study) -> HttpResponse:
    """Save what is posted, then sign it preliminary or final (final: a recent second factor, else re-prompt)."""
    level = request.POST.get("level", "")

    def step(report: Report) -> None:
        if level not in (ReportStatus.PRELIMINARY, ReportStatus.FINAL):
            raise services.Refused("sign preliminary or final", status=400)
        if services.may_sign(request.user, study):
            report = _save_posted(request, study, report)
        fresh = mfa.verified_within(request, services.mfa_window())
        services.sign(report, request.user, ReportStatus(level), report.version, request, mfa_fresh=fresh)

    return _change(request, study, "report_sign", "sign reports", step, lambda: services.clean_sections(request.POST))


@with_study
@require_POST
def amend(request: HttpRequest, study: Study) -> HttpResponse:
    """Add an addendum to a final report: a new signed version (a recent second factor, else re-prompt)."""

    def step(report: Report) -> None:
        edited = _version(request.POST.get("version"))
        if edited is None:
            raise services.Refused("the form names no version", status=400)
        fresh = mfa.verified_within(request, services.mfa_window())
        services.amend(report, request.user, request.POST.get("addendum", ""), edited, request, mfa_fresh=fresh)

    return _change(request, study, "report_amend", "amend reports", step)


@with_study
@require_POST
def critical(request: HttpRequest, study: Study) -> HttpResponse:
    """Flag a critical result and record its communication (to whom, when, how)."""

    def step(report: Report) -> None:
        posted = request.POST.get("communicated_at", "")
        when: datetime | None = parse_datetime(posted[:40]) if posted else timezone.now()
        if when is None:
            raise services.Refused("give the time of the communication", status=400)
        if timezone.is_naive(when):
            when = timezone.make_aware(when)
        services.flag_critical(
            report,
            request.user,
            finding=request.POST.get("finding", ""),
            communicated_to=request.POST.get("communicated_to", ""),
            method=request.POST.get("method", ""),
            communicated_at=when,
            request=request,
        )

    return _change(request, study, "report_critical_result", "flag critical results", step)


@with_study
@require_GET
def printable(request: HttpRequest, study: Study) -> HttpResponse:
    """A printable page of one signed version: the latest final one, or (readers) any version by ``?v=``."""
    report = Report.objects.filter(study=study).first()
    version: ReportVersion | None
    wanted = _version(request.GET.get("v"))
    if report is not None and wanted is not None and services.is_reader(request.user):
        version = report.versions.filter(number=wanted).first()
    else:
        version = services.released_version(report)
    record(
        "report_print",
        request,
        outcome="success" if version else "failure",
        patient_id=study.patient.patient_id,
        study_instance_uid=study.study_instance_uid,
        detail={"number": version.number if version else None},
    )
    if version is None:
        return render(request, "reports/missing.html", {"message": "This study has no final report yet."}, status=404)
    context = {
        "study": study,
        "patient": study.patient,
        "version": version,
        "sections": [(label, getattr(version, name)) for name, label in SECTIONS],
        "addenda": version.addenda(),
    }
    return render(request, "reports/print.html", context)
