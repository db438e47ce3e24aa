"""The password authentication backend: Django's, refusing locked user names and addresses.

Every password check goes through here (the portal sign-in, the admin, any
``authenticate()`` caller), so the lockout of :mod:`portal.accounts.lockout` cannot be
bypassed by another form. A locked attempt fails without checking the password
at all; Django then emits ``user_login_failed`` as for any failure.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from audit.trail import client_ip
from portal.accounts import lockout


class LockoutModelBackend(ModelBackend):
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if username is None:
            username = kwargs.get("username")
        if username is not None and lockout.is_locked(username, client_ip(request)):
            if request is not None:
                request.pacs_signin_locked = True  # type: ignore[attr-defined]
            raise PermissionDenied("locked")
        return super().authenticate(request, username=username, password=password, **kwargs)
