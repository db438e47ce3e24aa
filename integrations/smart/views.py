"""SMART's pages: this archive's discovery document, and the App Launch's launch, callback and study list.

``/smart/launch`` and ``/smart/callback`` are thin over :mod:`.launch`. The
callback starts a new session (anything of a previous one in the browser is
ended first) limited to the launch's grants, then redirects away at once, so
the URL that carried the authorization code is left after one use and sends
no Referer (``Referrer-Policy: no-referrer``). One study opens the viewer;
several or none open ``/smart/studies``, which lists what the session may see
(each listing audited, ``smart.studies``, with the studies it showed).
A refused launch gets a page that says what happened and what to do.
"""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from archive.access import visible_studies
from audit.trail import record
from integrations.smart import discovery, launch
from integrations.smart.launch import Problem
from portal.accounts.sessions import limit_session

BACKEND = "portal.accounts.backends.LockoutModelBackend"

#: What each problem page says happened, what to do, and its HTTP status.
PROBLEMS: dict[Problem, tuple[str, str, str, int]] = {
    Problem.MISSING: (
        "This launch is incomplete",
        "The EHR opened this app without saying which EHR it is (iss) or which launch (launch).",
        "Open the images again from the patient's chart in your EHR.",
        400,
    ),
    Problem.UNKNOWN_ISS: (
        "This EHR is not registered here",
        "The EHR that opened this app is not one the archive's administrator has connected.",
        "Tell your administrator which EHR you opened the images from.",
        403,
    ),
    Problem.DISCOVERY: (
        "The EHR could not be reached",
        "The archive could not read the EHR's SMART configuration, so it cannot ask the EHR to sign you in.",
        "Try again in a minute; if it keeps happening, tell your administrator.",
        502,
    ),
    Problem.STATE: (
        "This sign-in could not be finished",
        "The answer from the EHR does not belong to a launch begun in this browser, or it came too late or twice.",
        "Open the images again from the patient's chart in your EHR.",
        400,
    ),
    Problem.DENIED: (
        "The EHR did not authorize the viewer",
        "The EHR declined to give the image viewer access (or you declined it).",
        "Open the images again from the patient's chart and allow access when the EHR asks.",
        403,
    ),
    Problem.TOKEN: (
        "The EHR's authorization could not be used",
        "The EHR did not complete the authorization the archive asked for.",
        "Open the images again from the patient's chart in your EHR; if it keeps happening, tell your administrator.",
        502,
    ),
    Problem.NO_PATIENT: (
        "No patient was chosen",
        "The EHR opened the image viewer without a patient, so there is nothing to show.",
        "Open the images from a patient's chart.",
        400,
    ),
    Problem.PATIENT: (
        "The patient could not be matched",
        "The archive could not tell with certainty which of its patients the EHR's patient is, so it opened nothing.",
        "Tell your administrator.",
        409,
    ),
}


def _private(response: HttpResponseBase) -> HttpResponseBase:
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response


def _problem(request: HttpRequest, problem: launch.LaunchProblem) -> HttpResponseBase:
    title, what, todo, status = PROBLEMS[problem.problem]
    page = {"title": title, "what": what, "todo": todo}
    return _private(render(request, "integrations/ehr/problem.html", page, status=status))


@require_GET
def smart_configuration(request: HttpRequest) -> HttpResponse:
    """``/.well-known/smart-configuration`` (also under ``/fhir/`` and ``/dicom-web/``): public, as SMART asks."""
    found = discovery.published()
    if found is None:
        return JsonResponse({"detail": "No EHR authorization server is registered for this archive"}, status=404)
    response = JsonResponse(found)
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response


@never_cache
@require_GET
def smart_launch(request: HttpRequest) -> HttpResponseBase:
    try:
        where = launch.begin(request, request.GET.get("iss", ""), request.GET.get("launch", ""))
    except launch.LaunchProblem as problem:
        return _problem(request, problem)
    return _private(redirect(where))


@never_cache
@require_GET
def smart_callback(request: HttpRequest) -> HttpResponseBase:
    try:
        opened = launch.finish(
            request, request.GET.get("state", ""), request.GET.get("code", ""), request.GET.get("error", "")
        )
    except launch.LaunchProblem as problem:
        return _problem(request, problem)
    request.session.flush()  # nothing of a previous session in this browser survives
    login(request, opened.user, backend=BACKEND)
    limit_session(request, opened.scope)
    if len(opened.studies) == 1:
        return _private(redirect("viewer-study", opened.studies[0].study_instance_uid))
    return _private(redirect("smart-studies"))


@never_cache
@login_required
@require_GET
def smart_studies(request: HttpRequest) -> HttpResponseBase:
    """What the session may see (a launched session: its grants), most recent first; or "no images"."""
    studies = list(
        visible_studies(request.user).select_related("patient").order_by("-study_date", "-study_time", "-id")[:200]
    )
    patient_ids = {study.patient.patient_id for study in studies}
    record(
        "smart.studies",
        request,
        patient_id=patient_ids.pop() if len(patient_ids) == 1 else "",
        detail={"studies": [study.study_instance_uid for study in studies]},
    )
    if not studies:
        return _private(render(request, "integrations/iid/none.html", status=404))
    return _private(render(request, "integrations/iid/studies.html", {"studies": studies}))
