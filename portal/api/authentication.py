"""``Authorization: Bearer`` for the JSON API: the archive's API tokens and any configured validator.

:class:`BearerAuthentication` is the DRF face of :func:`archive.bearer.authenticate_bearer`,
the one place bearer tokens are judged (DICOMweb and FHIR use it too). A request
carrying a Bearer header is authenticated by the token alone, never by a session
cookie sent along with it; a request without one falls through to the session
(:class:`rest_framework.authentication.SessionAuthentication`, with its CSRF check).
A refused token is audited (``api_auth``) and answered 401 (or 403 when the
validator says so) with a ``WWW-Authenticate: Bearer`` challenge.

``request.auth`` is a :class:`TokenAuth` for a token client and None for a
session, so a view asks :func:`by_token` whether a machine is calling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from archive.bearer import authenticate_bearer
from audit.trail import record


@dataclass(frozen=True)
class TokenAuth:
    """``request.auth`` of a request authenticated by a bearer token (no session, no second factor)."""

    scheme: str = "bearer"


def by_token(request: Request) -> bool:
    """Is the client a machine holding a bearer token (rather than a signed-in browser session)?"""
    return isinstance(request.auth, TokenAuth)


class BearerAuthentication(BaseAuthentication):
    """A bearer token in the Authorization header; None (let the session decide) without one."""

    def authenticate(self, request: Request) -> tuple[Any, TokenAuth] | None:
        scheme, _, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        if not raw.strip():
            self._refuse(request, "the Bearer header holds no token")
        bearer = authenticate_bearer(request._request)
        if bearer.user is None:
            self._refuse(request, bearer.detail or "invalid or expired token", bearer.status)
        return bearer.user, TokenAuth()

    @staticmethod
    def _refuse(request: Request, reason: str, status: int = 401) -> None:
        record("api_auth", request._request, outcome="failure", detail={"reason": reason, "path": request.path})
        if status == 403:
            raise exceptions.PermissionDenied(reason)
        raise exceptions.AuthenticationFailed(reason)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class BearerScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = BearerAuthentication
    name = "bearerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (pacs_…) issued in the admin, or a token a configured validator accepts "
            "(a SMART access token). Token clients read and draft; they never sign a final report or an addendum.",
        }
