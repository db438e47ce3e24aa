"""Sign-in, failed sign-in and sign-out: audit records, lockout counting, session stamps.

Django announces these through its auth signals (``user_logged_in``,
``user_login_failed``, ``user_logged_out``), whichever way the user signed in
(password form, admin, OpenID Connect). Receiving them is the one accepted
exception to the project's "no signals" rule; the receivers are connected in
:meth:`portal.apps.PortalConfig.ready` and do nothing but call explicit
functions.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.http import HttpRequest

from audit.trail import client_ip, record
from portal.accounts import lockout
from portal.models import UserProfile

#: Session keys set at sign-in and checked by :mod:`portal.accounts.middleware`.
SIGNED_IN_AT = "pacs_signed_in_at"
LAST_SEEN = "pacs_last_seen"
GENERATION = "pacs_session_generation"


def stamp_session(request: HttpRequest, user: Any) -> None:
    """Remember when the session began and which session generation it belongs to."""
    now = int(time.time())
    request.session[SIGNED_IN_AT] = now
    request.session[LAST_SEEN] = now
    request.session[GENERATION] = UserProfile.of(user).session_generation


def on_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is None:
        return
    stamp_session(request, user)
    lockout.clear(user.get_username())
    backend = getattr(user, "backend", "") or ""
    record("sign-in", request, user=user, detail={"backend": backend.rsplit(".", 1)[-1]})


def on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username = str(credentials.get("username", ""))[:150]
    ip = client_ip(request)
    if request is not None and getattr(request, "pacs_signin_locked", False):
        record("sign-in", request, outcome="locked", actor=username, detail={"reason": "too many failures"})
        return
    locked_now = lockout.register_failure(username, ip)
    record("sign-in", request, outcome="failure", actor=username, detail={"locked": locked_now})
    if locked_now:
        record("sign-in-lockout", request, outcome="failure", actor=username, detail={"source_ip": ip})


def on_logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    reason = getattr(request, "pacs_signout_reason", "user") if request is not None else "user"
    record("sign-out", request, user=user, detail={"reason": reason})


def connect() -> None:
    user_logged_in.connect(on_logged_in, dispatch_uid="portal.accounts.authevents.logged_in")
    user_login_failed.connect(on_login_failed, dispatch_uid="portal.accounts.authevents.login_failed")
    user_logged_out.connect(on_logged_out, dispatch_uid="portal.accounts.authevents.logged_out")
