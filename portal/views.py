"""Portal pages: the home page a user lands on after signing in, and the two landings it leads to.

Radiologists land on their worklist, technologists on their QC list, referring
clinicians on "My studies" and administrators on the operations page
(:mod:`portal.landing`). ``/?home`` shows everyone the page of tiles instead.
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from archive.access import policy
from audit.trail import record
from portal import landing
from portal.access import is_administrator
from portal.accounts.roles import Role, roles_of
from portal.worklist import qc
from portal.worklist import views as worklist_views


@login_required
def home(request: HttpRequest) -> HttpResponse:
    held = roles_of(request.user)
    if "home" not in request.GET:
        if Role.RADIOLOGIST in held:
            return worklist_views.worklist(request)  # a radiologist's work is the worklist
        if Role.TECHNOLOGIST in held:
            return qc.qc_list(request)  # a technologist's work is the QC list
        if is_administrator(request.user):
            return operations(request)  # an administrator watches the archive run
        if Role.REFERRING_CLINICIAN in held:
            return my_studies(request)  # a referring clinician reads their patients' studies
    roles = sorted(r.value for r in held)
    context = {
        "roles": roles,
        "can_search": policy().can_search(request.user),
        "has_worklist": policy().can_search(request.user),
        "has_qc": Role.TECHNOLOGIST in held or request.user.is_superuser,
        "is_admin": is_administrator(request.user),
    }
    return render(request, "portal/home.html", context)


@login_required
@require_GET
def my_studies(request: HttpRequest) -> HttpResponse:
    """The studies the user may see, newest first (``?before=<token>`` for older ones), with released reports."""
    before = request.GET.get("before", "")
    try:
        page = landing.my_studies(request.user, before)
    except landing.BadToken:
        record("my_studies_view", request, outcome="failure", detail={"reason": "bad paging token"})
        return HttpResponse("before must be a paging token", status=400, content_type="text/plain")
    record("my_studies_view", request, detail={"rows": len(page.rows), "paged": bool(before)})
    return render(request, "portal/my_studies.html", {"page": page, "paged": bool(before)})


@login_required
@require_GET
def operations(request: HttpRequest) -> HttpResponse:
    """The administrators' operations page: read-only aggregates (403 for anyone else)."""
    if not is_administrator(request.user):
        record("operations_view", request, outcome="denied", detail={"reason": "not an administrator"})
        return render(request, "portal/denied.html", status=403)
    summary = landing.operations()
    record("operations_view", request)
    return render(request, "portal/operations.html", {"ops": summary})
