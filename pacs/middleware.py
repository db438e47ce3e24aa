"""Cross-cutting response middleware: security headers and JSON compression.

Django's SecurityMiddleware sets HSTS, nosniff, Referrer-Policy and COOP; this
adds the Content-Security-Policy (no inline script, no foreign origins) and a
Permissions-Policy that switches off browser features the product never uses.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.gzip import GZipMiddleware

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PERMISSIONS = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


class SecurityHeadersMiddleware:
    """Adds CSP and Permissions-Policy unless a view set its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS)
        return response


COMPRESSIBLE = ("application/dicom+json", "application/json")


class JsonGZipMiddleware(GZipMiddleware):
    """gzip for DICOM JSON (QIDO results, WADO metadata) only.

    Series metadata shrinks about thirty-fold, which matters on a hospital
    link. HTML pages are left alone (they carry CSRF tokens: BREACH), and pixel
    data is not worth the CPU. Strong ETags become weak, which every view's
    If-None-Match comparison accepts.
    """

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if not response.get("Content-Type", "").startswith(COMPRESSIBLE):
            return response
        return super().process_response(request, response)
