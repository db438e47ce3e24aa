"""The reports' JSON API: thin views over :mod:`portal.reports.services`, the same rules as the report page.

* ``GET /api/studies/{study_uid}/report``: readers get the working text, its version and every signed
  version; everyone else who may see the study gets only the final (or amended) text, never a draft.
* ``POST /api/studies/{study_uid}/report``: start the draft (from the best template); 201, or 200 if it exists.
* ``PUT``/``PATCH /api/studies/{study_uid}/report`` with ``{"version": n, "sections": {...}}``: save the draft
  over version ``n``; 409 with both texts when someone saved in between.
* ``POST /api/studies/{study_uid}/report/sign`` with ``{"status": "preliminary"|"final", "version": n}``.
* ``POST /api/studies/{study_uid}/report/addendum`` with ``{"text": "...", "version": n}``.
* ``GET /api/report-templates/`` and ``/api/report-templates/{id}``.

A study the user may not see is a 404 exactly like one that does not exist (audited). A final signature
and an addendum are the signer's own act: a bearer token (a machine) is refused them (403,
``token_may_not_sign_final``), and a session must have passed its second factor within
``PACS_REPORT_SIGN_MFA_SECONDS`` (403, ``mfa_required``, with the page where a person verifies again);
both refusals are audited. Every read is a ``report_view`` record; saves, signatures and their refusals
are audited by the services.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import path, reverse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from archive.models import Study
from audit.trail import record
from portal.api.authentication import by_token
from portal.api.views import STUDY_UID, ApiView, InvalidRequestSerializer, ProblemSerializer, check_uid, problem
from portal.mfa import factors as mfa
from portal.reports import services
from portal.reports.models import RELEASED, Report, ReportStatus, ReportTemplate, ReportVersion
from portal.reports.serializers import (
    AddendumSerializer,
    ConflictSerializer,
    DraftSerializer,
    ReportSerializer,
    SignRefusedSerializer,
    SignSerializer,
    TemplateSerializer,
)

#: The largest primary key a database holds (64-bit); a larger number in a URL names nothing.
MAX_ID = 2**63 - 1
TOKEN_REFUSAL = "bearer tokens never sign final reports or addenda: a radiologist signs in the browser"


def _study(request: Request, study_uid: str) -> Study:
    """The study if the user may see it (the one access policy); 400 for a bad UID, 404 (audited) otherwise."""
    check_uid(study_uid)
    study = services.visible_study(request.user, study_uid)
    if study is None:
        record(
            "report_view",
            request._request,
            outcome="denied",
            detail={"reason": "study not found or not visible", "via": "api"},
        )
        raise exceptions.NotFound("No such study.")
    return study


def _version_data(version: ReportVersion, numbers: dict[int, int]) -> dict[str, Any]:
    return {
        "number": version.number,
        "status": version.status,
        "signer": version.signer_name,
        "signed_at": version.signed_at,
        "sections": version.sections(),
        "addendum": version.addendum,
        "amends": numbers.get(version.predecessor_id) if version.predecessor_id else None,
        "sr_sop_instance_uid": version.sr_sop_instance_uid,
        "pdf_sop_instance_uid": version.pdf_sop_instance_uid,
    }


def _versions(report: Report, released_only: bool) -> list[dict[str, Any]]:
    versions = report.versions.order_by("number")
    if released_only:
        versions = versions.filter(status__in=RELEASED)
    found = list(versions)
    numbers = {v.pk: v.number for v in report.versions.all()} if released_only else {v.pk: v.number for v in found}
    return [_version_data(v, numbers) for v in found]


def report_data(report: Report) -> dict[str, Any]:
    """A reader's view of the report: the working text and every signed version."""
    return ReportSerializer(
        {
            "study_instance_uid": report.study_instance_uid,
            "status": report.status,
            "version": report.version,
            "sections": report.sections(),
            "critical": report.critical,
            "updated_at": report.updated_at,
            "updated_by": report.updated_by.get_username() if report.updated_by else None,
            "versions": _versions(report, released_only=False),
        }
    ).data


def released_data(report: Report, released: ReportVersion) -> dict[str, Any]:
    """Everyone else's view: the latest final or amended text, and the final and amended versions only."""
    return ReportSerializer(
        {
            "study_instance_uid": report.study_instance_uid,
            "status": released.status,
            "version": None,
            "sections": released.sections(),
            "critical": report.critical,
            "updated_at": released.signed_at,
            "updated_by": None,
            "versions": _versions(report, released_only=True),
        }
    ).data


def _audit_read(request: Request, study: Study, **detail: Any) -> None:
    record(
        "report_view",
        request._request,
        patient_id=study.patient.patient_id,
        study_instance_uid=study.study_instance_uid,
        detail={**detail, "via": "api"},
    )


def _readers_only(request: Request, study: Study, action: str) -> Report:
    """The study's report for a reader; 403 (audited) for anyone else, 404 when no report was started yet."""
    if not services.is_reader(request.user):
        services.refuse(action, request._request, request.user, study, "not a reader")
        raise exceptions.PermissionDenied("Only radiologists write and sign reports.")
    report = Report.objects.filter(study=study).select_related("study__patient").first()
    if report is None:
        services.refuse(action, request._request, request.user, study, "no report yet")
        raise exceptions.NotFound("This study has no report yet: POST to /report to start the draft.")
    return report


def _invalid(request: Request, study: Study, action: str, errors: Any) -> Response:
    services.refuse(action, request._request, request.user, study, "invalid request: " + ", ".join(sorted(errors)))
    return problem(400, "The request is not right.", errors=errors)


def _conflict(exc: services.Conflict, yours: dict[str, str]) -> Response:
    return problem(
        409,
        f"The report changed: it is at version {exc.current.version} now. Merge the texts and save over that version.",
        version=exc.current.version,
        theirs=exc.current.sections(),
        yours=yours,
    )


def _store_failed(exc: services.StoreFailed) -> Response:
    response = problem(503, f"{exc}. Try again later.")
    response["Retry-After"] = "30"
    return response


_READ_ERRORS = {400: ProblemSerializer, 401: ProblemSerializer, 403: ProblemSerializer, 404: ProblemSerializer}
_WRITE_ERRORS = {**_READ_ERRORS, 400: InvalidRequestSerializer, 409: ConflictSerializer}


class ReportView(ApiView):
    """A study's report: read it, start the draft, save the draft over the version it edited."""

    @extend_schema(
        operation_id="report_read",
        parameters=[STUDY_UID],
        summary="A study's report (readers: working text and versions; others: the final text only)",
        tags=["reports"],
        responses={200: ReportSerializer, **_READ_ERRORS},
    )
    def get(self, request: Request, study_uid: str) -> Response:
        study = _study(request, study_uid)
        report = Report.objects.filter(study=study).first()
        if services.is_reader(request.user):
            _audit_read(request, study, found=report is not None)
            if report is None:
                raise exceptions.NotFound("This study has no report yet: POST to start the draft.")
            return Response(report_data(report))
        released = services.released_version(report)
        _audit_read(request, study, found=released is not None, released_only=True)
        if report is None or released is None:
            raise exceptions.NotFound("This study has no final report yet.")
        return Response(released_data(report, released))

    @extend_schema(
        operation_id="report_start",
        parameters=[STUDY_UID],
        summary="Start the study's draft from the best template (200 when it exists already)",
        tags=["reports"],
        request=None,
        responses={200: ReportSerializer, 201: ReportSerializer, **_READ_ERRORS},
    )
    def post(self, request: Request, study_uid: str) -> Response:
        study = _study(request, study_uid)
        if not services.is_reader(request.user):
            services.refuse("report_start", request._request, request.user, study, "not a reader")
            raise exceptions.PermissionDenied("Only radiologists write reports.")
        existed = Report.objects.filter(study=study).exists()
        report = services.open_report(study, request.user)
        assert report is not None  # a reader always gets one
        _audit_read(request, study, started=not existed)
        return Response(report_data(report), status=200 if existed else 201)

    @extend_schema(
        operation_id="report_save",
        parameters=[STUDY_UID],
        summary="Save the draft over the version it edited: every section (PUT)",
        tags=["reports"],
        request=DraftSerializer,
        responses={200: ReportSerializer, **_WRITE_ERRORS},
    )
    def put(self, request: Request, study_uid: str) -> Response:
        return self._save(request, study_uid, partial=False)

    @extend_schema(
        operation_id="report_save_sections",
        parameters=[STUDY_UID],
        summary="Save the draft over the version it edited: only the sections sent (PATCH)",
        tags=["reports"],
        request=DraftSerializer,
        responses={200: ReportSerializer, **_WRITE_ERRORS},
    )
    def patch(self, request: Request, study_uid: str) -> Response:
        return self._save(request, study_uid, partial=True)

    def _save(self, request: Request, study_uid: str, partial: bool) -> Response:
        study = _study(request, study_uid)
        report = _readers_only(request, study, "report_save")
        body = DraftSerializer(data=request.data)
        if not body.is_valid():
            return _invalid(request, study, "report_save", body.errors)
        sent: dict[str, str] = dict(body.validated_data["sections"])
        if not partial and len(sent) < len(report.sections()):
            missing = sorted(set(report.sections()) - set(sent))
            return _invalid(request, study, "report_save", {"sections": [f"PUT sends every section: {missing}"]})
        try:
            sections = services.clean_sections(sent, report.sections())
            report = services.save_draft(
                report, request.user, sections, body.validated_data["version"], request._request
            )
        except services.Conflict as exc:
            return _conflict(exc, services.clean_sections(sent, exc.current.sections()))
        except services.Refused as exc:
            if exc.status == 400:
                services.refuse("report_save", request._request, request.user, study, str(exc))
            return problem(exc.status, f"Refused: {exc}.")
        return Response(report_data(report))


def _signature(
    request: Request, study: Study, report: Report, action: str, sign: Callable[[bool], object], *, final: bool
) -> Response:
    """One signature (``final``: a final one or an addendum, never by a token): ``sign`` called with whether the
    session's second factor is fresh, its refusals answered as JSON (and audited), the signed report on success."""
    if final and by_token(request):
        services.refuse(action, request._request, request.user, study, TOKEN_REFUSAL)
        return problem(403, f"Refused: {TOKEN_REFUSAL}.", code="token_may_not_sign_final")
    try:
        sign(_fresh(request))
    except services.NeedsFreshMFA:
        return _needs_mfa(study)
    except services.Conflict as exc:
        return _conflict(exc, report.sections())
    except services.Refused as exc:
        if exc.status == 400:
            services.refuse(action, request._request, request.user, study, str(exc))
        return problem(exc.status, f"Refused: {exc}.", code="refused")
    except services.StoreFailed as exc:
        return _store_failed(exc)
    report.refresh_from_db()
    return Response(report_data(report), status=201)


class SignView(ApiView):
    """Sign the report's current text preliminary or final."""

    @extend_schema(
        operation_id="report_sign",
        parameters=[STUDY_UID],
        summary="Sign the report preliminary or final (final: a session with a fresh second factor, never a token)",
        tags=["reports"],
        request=SignSerializer,
        responses={201: ReportSerializer, **_WRITE_ERRORS, 403: SignRefusedSerializer, 503: ProblemSerializer},
    )
    def post(self, request: Request, study_uid: str) -> Response:
        study = _study(request, study_uid)
        report = _readers_only(request, study, "report_sign")
        body = SignSerializer(data=request.data)
        if not body.is_valid():
            return _invalid(request, study, "report_sign", body.errors)
        level = ReportStatus(body.validated_data["status"])
        version = body.validated_data["version"]
        return _signature(
            request,
            study,
            report,
            "report_sign",
            lambda fresh: services.sign(report, request.user, level, version, request._request, mfa_fresh=fresh),
            final=level == ReportStatus.FINAL,
        )


class AddendumView(ApiView):
    """Amend a final report with an addendum: a new signed version, stored into the archive."""

    @extend_schema(
        operation_id="report_addendum",
        parameters=[STUDY_UID],
        summary="Amend a final report with an addendum (a session with a fresh second factor, never a token)",
        tags=["reports"],
        request=AddendumSerializer,
        responses={201: ReportSerializer, **_WRITE_ERRORS, 403: SignRefusedSerializer, 503: ProblemSerializer},
    )
    def post(self, request: Request, study_uid: str) -> Response:
        study = _study(request, study_uid)
        report = _readers_only(request, study, "report_amend")
        body = AddendumSerializer(data=request.data)
        if not body.is_valid():
            return _invalid(request, study, "report_amend", body.errors)
        text, version = body.validated_data["text"], body.validated_data["version"]
        return _signature(
            request,
            study,
            report,
            "report_amend",
            lambda fresh: services.amend(report, request.user, text, version, request._request, mfa_fresh=fresh),
            final=True,
        )


def _fresh(request: Request) -> bool:
    """Did this session pass its second factor recently? Never for a token (a token has no second factor)."""
    return not by_token(request) and mfa.verified_within(request._request, services.mfa_window())


def _needs_mfa(study: Study) -> Response:
    minutes = max(1, services.mfa_window() // 60)
    return problem(
        403,
        f"Signing a final report or an addendum needs a second factor passed within the last {minutes} minutes: "
        "verify again (verify_url), then send the signature again.",
        code="mfa_required",
        verify_url=reverse("mfa_verify") + "?fresh=1",
    )


class TemplatesView(ApiView):
    """The enabled report templates (starting texts per modality and body part)."""

    @extend_schema(
        operation_id="report_templates",
        summary="The enabled report templates",
        tags=["reports"],
        responses={200: TemplateSerializer(many=True), 401: ProblemSerializer, 403: ProblemSerializer},
    )
    def get(self, request: Request) -> Response:
        _templates_reader(request)
        templates = ReportTemplate.objects.filter(enabled=True)
        record("report_templates_view", request._request, detail={"via": "api"})
        return Response(TemplateSerializer(templates, many=True).data)


class TemplateView(ApiView):
    """One enabled report template."""

    @extend_schema(
        operation_id="report_template",
        summary="One report template",
        tags=["reports"],
        responses={200: TemplateSerializer, 401: ProblemSerializer, 403: ProblemSerializer, 404: ProblemSerializer},
    )
    def get(self, request: Request, pk: int) -> Response:
        _templates_reader(request)
        template = ReportTemplate.objects.filter(enabled=True, pk=pk).first() if pk <= MAX_ID else None
        record("report_templates_view", request._request, detail={"template": pk, "found": template is not None})
        if template is None:
            raise exceptions.NotFound("No such template.")
        return Response(TemplateSerializer(template).data)


def _templates_reader(request: Request) -> None:
    if not services.is_reader(request.user):
        record("report_templates_view", request._request, outcome="denied", detail={"reason": "not a reader"})
        raise exceptions.PermissionDenied("Only radiologists use report templates.")


#: Mounted under ``/api/`` by :mod:`pacs.urls`.
urlpatterns = [
    path("studies/<str:study_uid>/report", ReportView.as_view(), name="api-report"),
    path("studies/<str:study_uid>/report/sign", SignView.as_view(), name="api-report-sign"),
    path("studies/<str:study_uid>/report/addendum", AddendumView.as_view(), name="api-report-addendum"),
    path("report-templates/", TemplatesView.as_view(), name="api-report-templates"),
    path("report-templates/<int:pk>", TemplateView.as_view(), name="api-report-template"),
]
