"""Portal pages: the home page a user lands on after signing in (radiologists land on their worklist,
technologists on their QC list)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from archive.access import policy
from portal.accounts.roles import Role, roles_of
from portal.worklist import qc
from portal.worklist import views as worklist_views


@login_required
def home(request: HttpRequest) -> HttpResponse:
    held = roles_of(request.user)
    if Role.RADIOLOGIST in held and "home" not in request.GET:
        return worklist_views.worklist(request)  # a radiologist's work is the worklist
    if Role.TECHNOLOGIST in held and "home" not in request.GET:
        return qc.qc_list(request)  # a technologist's work is the QC list
    roles = sorted(r.value for r in held)
    context = {
        "roles": roles,
        "can_search": policy().can_search(request.user),
        "has_worklist": policy().can_search(request.user),
        "has_qc": Role.TECHNOLOGIST in held or request.user.is_superuser,
    }
    return render(request, "portal/home.html", context)
