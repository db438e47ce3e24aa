"""Small response helpers shared by the DICOMweb views."""

from __future__ import annotations

import functools

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import get_script_prefix, reverse


def error(status: int, detail: str, allow: str | None = None) -> HttpResponse:
    """A JSON error body with a human-readable reason; never a stack trace."""
    response = JsonResponse({"detail": detail}, status=status)
    if allow:
        response["Allow"] = allow
    return response


#: How long a client should wait before sending a request again after a 503.
RETRY_AFTER_SECONDS = 30


def retry_later(detail: str) -> HttpResponse:
    """503 with Retry-After: a passing fault of the archive (its disk, its index), nothing acknowledged."""
    response = error(503, detail)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def dicomweb_root(request: HttpRequest) -> str:
    """The absolute URL of the DICOMweb root, e.g. ``http://host/dicom-web``."""
    return request.build_absolute_uri(_root_path(get_script_prefix())).rstrip("/")


@functools.cache
def _root_path(script_prefix: str) -> str:
    """The root's path under ``script_prefix`` (the argument keys the cache; reverse() reads the prefix itself)."""
    return reverse("dicomweb-root")
