"""Cross-cutting response middleware: security headers, JSON compression, DICOMweb CORS.

Django's SecurityMiddleware sets HSTS, nosniff, Referrer-Policy and COOP; this
adds the Content-Security-Policy (no inline script, no foreign origins) and a
Permissions-Policy that switches off browser features the product never uses.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.gzip import GZipMiddleware
from django.utils.cache import patch_vary_headers

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


CORS_PATH_PREFIX = "/dicom-web/"
CORS_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
CORS_REQUEST_HEADERS = "Authorization, Accept, Content-Type, If-None-Match"
CORS_EXPOSED_HEADERS = "ETag, Content-Location, Warning"


class DicomWebCorsMiddleware:
    """Cross-origin DICOMweb for viewers served elsewhere (OHIF), bearer tokens only.

    Off unless ``PACS_CORS_ORIGINS`` names origins. For those origins, and on
    DICOMweb paths only, it answers preflights and adds ``Access-Control-Allow-Origin``;
    it never allows credentials, and it drops the session cookie of every
    cross-origin DICOMweb request, so another origin can only ever act with a
    bearer token it was given, never with the signed-in user's session.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        origin = request.headers.get("Origin")
        if not origin or not request.path.startswith(CORS_PATH_PREFIX) or not settings.PACS_CORS_ORIGINS:
            return self.get_response(request)
        if origin != f"{request.scheme}://{request.get_host()}":
            request.COOKIES.pop(settings.SESSION_COOKIE_NAME, None)
        allowed = origin in settings.PACS_CORS_ORIGINS
        if allowed and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = HttpResponse(status=204)
            response["Access-Control-Allow-Methods"] = CORS_METHODS
            response["Access-Control-Allow-Headers"] = CORS_REQUEST_HEADERS
            response["Access-Control-Max-Age"] = "600"
        else:
            response = self.get_response(request)
        if allowed:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
        patch_vary_headers(response, ("Origin",))
        return response
