"""The HTTP side of FHIR: authentication, methods, formats and OperationOutcome errors.

:func:`fhir_view` wraps every FHIR view: a bearer token or a signed-in
session (CSRF checked for a session's POST), else 401 with a Bearer
challenge; a method the interaction does not answer is 405; a client that
accepts only XML gets 406 (we speak JSON); the index down is 503 with
Retry-After. Errors are OperationOutcome resources, never a stack trace.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt

from archive.bearer import authenticate_bearer

FHIR_JSON = "application/fhir+json; charset=utf-8"
#: What a client may ask for and get JSON (the ``_format`` parameter or the Accept header).
JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
XML_FORMATS = {"xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir"}
RETRY_AFTER_SECONDS = 30
log = logging.getLogger(__name__)

View = Callable[..., HttpResponseBase]


def fhir_response(resource: dict[str, Any], status: int = 200) -> HttpResponse:
    response = HttpResponse(json.dumps(resource, ensure_ascii=False, separators=(",", ":")), status=status)
    response["Content-Type"] = FHIR_JSON
    response["Cache-Control"] = "private, no-store"
    return response


def outcome(status: int, code: str, text: str, allow: str | None = None) -> HttpResponse:
    """An OperationOutcome with one error ``issue`` (``code`` from the FHIR IssueType value set)."""
    response = fhir_response(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]},
        status,
    )
    if allow:
        response["Allow"] = allow
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="fhir"'
    if status == 503:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _wants_xml_only(request: HttpRequest) -> bool:
    asked = request.GET.get("_format", "").split(";")[0].strip().lower()
    if asked:
        return asked not in JSON_FORMATS
    accept = [part.split(";")[0].strip().lower() for part in request.META.get("HTTP_ACCEPT", "").split(",")]
    accept = [a for a in accept if a]
    return bool(accept) and all(a in XML_FORMATS for a in accept)


def _csrf_failed(request: HttpRequest) -> bool:
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda r: HttpResponse(), (), {}) is not None


def fhir_view(methods: tuple[str, ...] = ("GET", "HEAD"), anonymous: bool = False) -> Callable[[View], View]:
    """Authenticate, then check method and format, before ``view`` runs (see the module's docstring)."""
    allow = ", ".join(methods)

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                response = checked(request, *args, **kwargs)
            except (OperationalError, InterfaceError):
                log.exception("FHIR request not served: the index is not available")
                response = outcome(503, "transient", "The archive's index is not available right now; try again later.")
            patch_vary_headers(response, ("Authorization", "Accept"))
            return response

        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.META.get("HTTP_AUTHORIZATION"):
                bearer = authenticate_bearer(request)
                if bearer.user is None:
                    if bearer.status == 403:
                        return outcome(403, "forbidden", bearer.detail)
                    return outcome(401, "login", bearer.detail)
                request.user = bearer.user
            elif request.user.is_authenticated:
                if request.method not in ("GET", "HEAD", "OPTIONS") and _csrf_failed(request):
                    return outcome(403, "forbidden", "CSRF check failed")
            elif not anonymous:
                return outcome(401, "login", "Authentication required")
            if request.method not in methods:
                return outcome(405, "not-supported", f"Only {allow} may be used here", allow=allow)
            if _wants_xml_only(request):
                return outcome(406, "not-supported", "This server speaks FHIR JSON only (application/fhir+json)")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
