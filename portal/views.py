"""Portal pages: the home page a user lands on after signing in."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from archive.access import policy
from portal.accounts.roles import roles_of


@login_required
def home(request: HttpRequest) -> HttpResponse:
    roles = sorted(r.value for r in roles_of(request.user))
    context = {"roles": roles, "can_search": policy().can_search(request.user)}
    return render(request, "portal/home.html", context)
