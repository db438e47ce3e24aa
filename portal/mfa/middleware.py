"""Enforce the second factor on every page and session-authenticated API.

Installed after ``django_otp.middleware.OTPMiddleware``. A signed-in session
that still owes a second factor (see :func:`portal.mfa.factors.needs_challenge`) may
reach only the MFA pages, sign-out, health and the SSO endpoints: pages
redirect to enrolment (no authenticator yet) or to the challenge; API paths
answer 403 with a JSON reason instead of an HTML redirect.

Bearer-token requests are untouched: a token client has no session, so
``request.user`` is anonymous here. A request that carries both a session
cookie and a Bearer header to DICOMweb, FHIR or the JSON API is passed as well, because
those views then authenticate by the token alone and ignore the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse

from portal.mfa import factors as mfa

#: URL names reachable while a second factor is owed.
OPEN_URL_NAMES = frozenset(
    {
        "mfa_enrol",
        "mfa_verify",
        "logout",
        "oidc_logout",
        "oidc_authentication_init",
        "oidc_authentication_callback",
        "health",
        "login",
        "fhir-metadata",
        "ehr-launch-page",  # an EHR launch ends this session and starts the clinician's own
        "ehr-launch-problem",
    }
)
#: Paths answered with JSON 403 rather than a redirect.
API_PREFIXES = ("/dicom-web/", "/fhir/", "/api/")
#: Paths whose views authenticate a Bearer header by itself, never the session.
BEARER_ONLY_PREFIXES = ("/dicom-web/", "/fhir/", "/api/")


class MFAEnforcementMiddleware:
    """Block sessions that owe a second factor from everything but the MFA pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        match = request.resolver_match
        if match is not None and match.url_name in OPEN_URL_NAMES:
            return None
        if request.path_info.startswith(BEARER_ONLY_PREFIXES) and request.META.get(
            "HTTP_AUTHORIZATION", ""
        ).lower().startswith("bearer "):
            return None
        if not mfa.needs_challenge(request):
            return None
        if request.path_info.startswith(API_PREFIXES):
            return JsonResponse({"detail": "A second authentication factor is required."}, status=403)
        target = "mfa_verify" if mfa.has_second_factor(request.user) else "mfa_enrol"
        query = urlencode({"next": request.get_full_path()}) if request.method == "GET" else ""
        return HttpResponseRedirect(reverse(target) + (f"?{query}" if query else ""))
