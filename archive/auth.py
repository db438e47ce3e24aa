"""Authentication for DICOMweb: a signed-in session or a bearer token.

:func:`dicomweb_view` wraps every DICOMweb view. Anonymous requests get 401
with a ``WWW-Authenticate: Bearer`` challenge. Bearer requests are exempt from
CSRF (no ambient credentials); a browser session must still pass the CSRF
check for unsafe methods. Tokens are never accepted in the URL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from archive.models import ApiToken, hash_token

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def user_from_bearer(request: HttpRequest) -> Any | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return None
    try:
        token = ApiToken.objects.select_related("user").get(token_hash=hash_token(raw.strip()))
    except ApiToken.DoesNotExist:
        return None
    if not token.is_usable() or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def unauthorized(detail: str = "Authentication required") -> HttpResponse:
    response = JsonResponse({"detail": detail}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="dicom-web"'
    return response


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda r: HttpResponse(), (), {})


def dicomweb_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Require a session user or a bearer token; set ``request.user``."""

    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.META.get("HTTP_AUTHORIZATION"):
            user = user_from_bearer(request)
            if user is None:
                return unauthorized("Invalid or expired token")
            request.user = user
        elif request.user.is_authenticated:
            if request.method not in SAFE_METHODS:
                failure = _csrf_failure(request)
                if failure is not None:
                    return JsonResponse({"detail": "CSRF check failed"}, status=403)
        else:
            return unauthorized()
        return view(request, *args, **kwargs)

    return wrapper
