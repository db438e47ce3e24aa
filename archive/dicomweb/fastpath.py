"""A WSGI fast path for the request a viewer makes most: one stored frame.

A viewer scrolling a series asks for a frame per image, hundreds a minute,
and Django's full request cycle (session, CSRF, MFA and message middleware,
URL resolution) costs more than reading the frame. :class:`FastPath` wraps
the Django application and answers ``GET …/instances/{uid}/frames/{n}`` from
bearer-token clients itself, through :func:`archive.dicomweb.frames.fast_frame`: the
same token check, access policy, negotiation, ETag and audit record as the
full view, and the same response headers, because the response passes
through the header-setting middleware of ``settings.MIDDLEWARE``
(:data:`RESPONSE_MIDDLEWARE`). Everything else, and any request the fast
path declines (a bad token, an unknown frame, a frame that must be decoded,
HEAD, a signed-in browser session), goes to Django, so every error answer is
the full view's.

Other DICOMweb requests that carry a bearer token go to :class:`BearerHandler`:
Django with only the middleware that can apply to them (:data:`BEARER_MIDDLEWARE`).
Sessions, CSRF, sign-in state, MFA and messages concern browser sessions,
and a DICOMweb request with an ``Authorization`` header is authenticated by
that header alone (:func:`archive.dicomweb.auth.dicomweb_view`), never by a cookie.
``PACS_FAST_PATH=0`` switches both off.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from archive.dicomweb import frames

log = logging.getLogger(__name__)

FRAME_PATH = re.compile(
    r"^/dicom-web/studies/([0-9.]{1,64})/series/([0-9.]{1,64})/instances/([0-9.]{1,64})/frames/([1-9][0-9]{0,8})\Z"
)
#: Middleware that only decorates responses (security headers, CORS); the rest never applies to bearer requests.
RESPONSE_MIDDLEWARE = frozenset(
    {
        "django.middleware.security.SecurityMiddleware",
        "pacs.middleware.DicomWebCorsMiddleware",
        "pacs.middleware.SecurityHeadersMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
)

#: What a bearer-token DICOMweb request goes through: response headers, compression, URL normalisation.
BEARER_MIDDLEWARE = RESPONSE_MIDDLEWARE | {
    "django.middleware.common.CommonMiddleware",
    "pacs.middleware.JsonGZipMiddleware",
}
DICOMWEB_PREFIX = "/dicom-web/"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BearerHandler(WSGIHandler):
    """Django's WSGI handler with :data:`BEARER_MIDDLEWARE` only (in ``settings.MIDDLEWARE`` order)."""

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler reads settings.MIDDLEWARE; it is narrowed only while this handler is built,
        # once, when the WSGI module is imported (before any request thread exists).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = [m for m in full if m in BEARER_MIDDLEWARE]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


class _Declined(Exception):
    """The fast path cannot answer this request; Django will."""


class FastPath:
    """WSGI middleware: frames and other bearer DICOMweb requests short-cut; everything else to ``app``."""

    def __init__(self, app: WSGIApp, bearer_app: WSGIApp | None = None) -> None:
        self.app = app
        self.bearer_app = bearer_app or app
        self.enabled = bool(getattr(settings, "PACS_FAST_PATH", True))
        handler: Callable[[HttpRequest], HttpResponseBase] = self._answer
        for path in reversed([m for m in settings.MIDDLEWARE if m in RESPONSE_MIDDLEWARE]):
            handler = import_string(path)(handler)
        self.handler = handler

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not self.enabled or not path.startswith(DICOMWEB_PREFIX):
            return self.app(environ, start_response)
        if environ.get("HTTP_AUTHORIZATION", "")[:7].lower() != "bearer ":
            return self.app(environ, start_response)
        match = FRAME_PATH.match(path)
        if match is None or environ.get("REQUEST_METHOD") != "GET":
            return self.bearer_app(environ, start_response)
        signals.request_started.send(sender=self.__class__, environ=environ)
        request = WSGIRequest(environ)
        request.fast_path_match = match.groups()  # type: ignore[attr-defined]
        try:
            response = self.handler(request)
        except _Declined:
            return self.bearer_app(environ, start_response)
        except Exception:
            log.exception("the frame fast path failed; the request goes to the full view")
            return self.bearer_app(environ, start_response)
        response._resource_closers.append(request.close)  # type: ignore[attr-defined]
        response._handler_class = self.__class__  # type: ignore[attr-defined]  # close() sends request_finished
        cookies = [("Set-Cookie", c.output(header="")) for c in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", [*response.items(), *cookies])
        return response

    @staticmethod
    def _answer(request: HttpRequest) -> HttpResponseBase:
        try:
            request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it on the full path
        except DisallowedHost:
            raise _Declined from None
        response = frames.fast_frame(request, *request.fast_path_match)  # type: ignore[attr-defined]
        if response is None:
            raise _Declined
        return response
