"""The browser side of an EHR launch: the launch page, its problems, "images not yet available", the study list.

The launch URL is ``/ehr/launch/<client id>#<token>``. A fragment is never
sent to a server, so the token is in no request line, no access log (ours or
a proxy's) and no Referer. The page is static HTML plus a static script
(``integrations/ehr-launch.js``; the CSP forbids inline script) that reads the
fragment, removes it from the address bar and the history entry
(``history.replaceState``), POSTs it here with the CSRF token, and then
``location.replace``-s to wherever the answer points, so the launch page
leaves no entry of its own either. The page is served with
``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``.

A consumed token starts a new session (the browser's previous session, if
any, is ended first) limited to the launch's grants, then goes to the viewer
of its study, to the list of its studies when it named several, or to the
waiting page when none has arrived yet. The waiting page and the list refresh
themselves with a meta refresh (no script) and grant each study of the launch
as it arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from archive.models import Study
from integrations.ehr import launch
from integrations.ehr.launch import Problem
from integrations.models import EhrLaunch
from portal.accounts.sessions import limit_session, session_scope

#: The session's launch (its waiting page needs it).
SESSION_LAUNCH = "pacs_ehr_launch"
BACKEND = "portal.accounts.backends.LockoutModelBackend"
MAX_TOKEN_CHARS = 200

#: What each problem page says happened, what to do, and its HTTP status.
PROBLEMS: dict[Problem, tuple[str, str, str, int]] = {
    Problem.MISSING: (
        "This launch link is incomplete",
        "The link carried no launch token: it may have been cut short when it was copied.",
        "Open the images again from the patient's chart in your EHR.",
        400,
    ),
    Problem.TAMPERED: (
        "This launch link is damaged",
        "The launch token in the link was altered, so it cannot be trusted and was not used.",
        "Open the images again from the patient's chart in your EHR. Do not edit or forward launch links.",
        400,
    ),
    Problem.UNKNOWN: (
        "This launch link is not known here",
        "This server never issued that launch link, or has forgotten it.",
        "Open the images again from the patient's chart in your EHR.",
        404,
    ),
    Problem.EXPIRED: (
        "This launch link has expired",
        "Launch links work for a short time only (usually two minutes), and this one was opened too late.",
        "Open the images again from the patient's chart in your EHR: it makes a fresh link.",
        410,
    ),
    Problem.USED: (
        "This launch link was already used",
        "Each launch link opens the images once. This one had been used before, so it was refused.",
        "Open the images again from the patient's chart in your EHR. If you did not open this link before, "
        "tell your administrator: someone else may have.",
        410,
    ),
    Problem.WRONG_INTEGRATION: (
        "This launch link belongs to another system",
        "The link was made for a different EHR connection than the one it was opened through. It has been "
        "cancelled for safety.",
        "Open the images again from the patient's chart in your EHR, and tell your administrator.",
        403,
    ),
    Problem.DISABLED: (
        "This EHR connection is switched off",
        "The administrator has disabled the connection between your EHR and the image archive.",
        "Contact your administrator.",
        403,
    ),
    Problem.ACCOUNT_DISABLED: (
        "Your image-viewing account is disabled",
        "The account the archive keeps for you has been deactivated by an administrator.",
        "Contact your administrator.",
        403,
    ),
    Problem.RETRY: (
        "The images could not be opened just now",
        "Another launch for you was being opened at the same moment. Nothing was opened.",
        "Open the images again from the patient's chart in your EHR.",
        409,
    ),
    Problem.FAILED: (
        "The images could not be opened",
        "Your browser could not finish opening the link: cookies may be blocked for this site, or the "
        "connection dropped. Nothing was opened.",
        "Allow cookies for this site, then open the images again from the patient's chart in your EHR.",
        400,
    ),
}


def _private(response: HttpResponseBase) -> HttpResponseBase:
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "POST"])
def launch_page(request: HttpRequest, client_id: str) -> HttpResponseBase:
    """GET: the page that reads the fragment. POST (from its script): consume the token, answer where to go."""
    if request.method == "GET":
        return _private(render(request, "integrations/ehr/launch.html", {"client_id": client_id}))
    token = request.POST.get("token", "")[:MAX_TOKEN_CHARS]
    try:
        opened = launch.open_launch(token, client_id[:64], request)
    except launch.LaunchProblem as problem:
        where = reverse("ehr-launch-problem", args=[problem.problem.value])
        return _private(JsonResponse({"location": where}, status=PROBLEMS[problem.problem][3]))
    request.session.flush()  # nothing of a previous session in this browser survives
    login(request, opened.user, backend=BACKEND)
    limit_session(request, opened.launch.scope)
    request.session[SESSION_LAUNCH] = opened.launch.pk
    return _private(JsonResponse({"location": _destination(opened.launch, opened.studies)}))


def _destination(found: EhrLaunch, studies: Sequence[Study]) -> str:
    """One study asked for and there: its viewer. Several: the launch's list. None yet: the waiting page."""
    if not studies:
        return reverse("ehr-waiting")
    if len(studies) == 1 and launch.requested(found) == 1:
        return reverse("viewer-study", args=[studies[0].study_instance_uid])
    return reverse("ehr-studies")


def _session_launch(request: HttpRequest) -> EhrLaunch | None:
    """The launch this session was opened by, if it is one."""
    launch_pk = request.session.get(SESSION_LAUNCH)
    if not launch_pk:
        return None
    return (
        EhrLaunch.objects.select_related("integration")
        .filter(pk=launch_pk, user_id=int(request.user.pk or 0), scope=session_scope(request.user))
        .exclude(scope="")
        .first()
    )


def _no_launch(request: HttpRequest) -> HttpResponse:
    context = {
        "title": "No launch in this session",
        "what": "This page belongs to a launch from an EHR, and this session has none.",
        "todo": PROBLEMS[Problem.UNKNOWN][2],
    }
    return render(request, "integrations/ehr/problem.html", context, status=404)


@require_GET
def problem_page(request: HttpRequest, problem: str) -> HttpResponseBase:
    try:
        which = Problem(problem)
    except ValueError:
        which = Problem.UNKNOWN
    title, what, todo, status = PROBLEMS[which]
    context = {"title": title, "what": what, "todo": todo}
    return _private(render(request, "integrations/ehr/problem.html", context, status=status))


@never_cache
@login_required
@require_GET
def waiting(request: HttpRequest) -> HttpResponse:
    """Grants what has arrived and goes to the viewer; until then, a page that asks again every 10 seconds."""
    found = _session_launch(request)
    if found is None:
        return _no_launch(request)
    studies = launch.grant_arrived(found, request).allowed
    if studies:
        return redirect(_destination(found, studies))
    page: dict[str, Any] = {"launch": found, "ended": not launch.is_open(found), "refresh_seconds": 10}
    return render(request, "integrations/ehr/waiting.html", page)


@never_cache
@login_required
@require_GET
def studies(request: HttpRequest) -> HttpResponse:
    """The studies of a launch that named several: links to the viewer; refreshes while some have not arrived."""
    found = _session_launch(request)
    if found is None:
        return _no_launch(request)
    matches = launch.grant_arrived(found, request)
    if not matches.allowed:
        return redirect("ehr-waiting")
    pending = matches.missing_uids + matches.missing_accessions
    page: dict[str, Any] = {
        "launch": found,
        "studies": matches.allowed,
        "pending": len(pending),
        "refresh": bool(pending) and launch.is_open(found),
        "refresh_seconds": 10,
    }
    return render(request, "integrations/ehr/studies.html", page)
