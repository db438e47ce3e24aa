"""Ends sessions that are idle, too old, or signed out everywhere (see :mod:`portal.accounts.sessions`).

Installed right after Django's ``AuthenticationMiddleware`` (and before the MFA
middleware), so an ended session is already anonymous for everything after
it: pages then redirect to sign-in and DICOMweb answers 401. Bearer-token
requests carry no session and pass untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

from portal.accounts import sessions


class SessionPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            reason = sessions.expiry_reason(request)
            if reason:
                request.pacs_signout_reason = reason  # type: ignore[attr-defined]
                logout(request)
            else:
                sessions.touch(request)
                sessions.apply_session_scope(request)  # a launched session sees only its own grants
        return self.get_response(request)
