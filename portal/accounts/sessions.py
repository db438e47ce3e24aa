"""Session lifetime rules for clinical workstations.

A signed-in session ends when any of these holds (checked on every request by
:class:`portal.accounts.middleware.SessionPolicyMiddleware`):

* it was idle longer than ``PACS_SESSION_IDLE_SECONDS`` (default 15 minutes);
* it began longer ago than ``SESSION_COOKIE_AGE`` (absolute limit, 12 hours),
  however active it was;
* the user (or an administrator) chose "sign out everywhere" after it began:
  that raises the user's session generation and every older session is refused.

A session may also be limited to one grant scope (an EHR launch):
:func:`limit_session` marks it, the middleware hands the scope to the access
policy on every request (:func:`apply_session_scope`), and the policy then shows
that scope's grants only.

Sessions carry their start, last activity and generation (set at sign-in by
:mod:`portal.accounts.authevents`); a session without them is treated as expired.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.models import F
from django.http import HttpRequest

from portal.accounts.authevents import GENERATION, LAST_SEEN, SIGNED_IN_AT
from portal.models import UserProfile

#: Last activity is written back at most this often, not on every frame request.
TOUCH_EVERY_SECONDS = 30


def expiry_reason(request: HttpRequest, now: float | None = None) -> str:
    """Why this signed-in session must end, or ``""`` when it may go on."""
    now = time.time() if now is None else now
    session = request.session
    current = (
        UserProfile.objects.filter(user_id=int(request.user.pk or 0))
        .values_list("session_generation", flat=True)
        .first()
    )
    if session.get(GENERATION) != (current or 0):
        return "signed out everywhere"
    if now - float(session.get(SIGNED_IN_AT, 0)) > settings.SESSION_COOKIE_AGE:
        return "absolute timeout"
    if now - float(session.get(LAST_SEEN, 0)) > settings.PACS_SESSION_IDLE_SECONDS:
        return "idle timeout"
    return ""


def touch(request: HttpRequest, now: float | None = None) -> None:
    now = time.time() if now is None else now
    if now - float(request.session.get(LAST_SEEN, 0)) >= TOUCH_EVERY_SECONDS:
        request.session[LAST_SEEN] = int(now)


def sign_out_everywhere(user: Any) -> None:
    """End every session of ``user`` on every device (the current one included)."""
    UserProfile.of(user)
    UserProfile.objects.filter(user=user).update(session_generation=F("session_generation") + 1)


#: Session key naming the grant scope a session is limited to (set by :func:`limit_session`).
SESSION_SCOPE = "pacs_grant_scope"
#: Attribute on ``request.user`` carrying that scope for the policy (set by :func:`apply_session_scope`).
_SCOPE_ATTRIBUTE = "_pacs_grant_scope"


def limit_session(request: HttpRequest, scope: str) -> None:
    """Limit the signed-in session of ``request`` to the grants of ``scope`` from now on."""
    request.session[SESSION_SCOPE] = scope
    setattr(request.user, _SCOPE_ATTRIBUTE, scope)


def apply_session_scope(request: HttpRequest) -> None:
    """Carry the session's grant scope, if any, to ``request.user`` (middleware, every request)."""
    scope = request.session.get(SESSION_SCOPE, "")
    if scope:
        setattr(request.user, _SCOPE_ATTRIBUTE, str(scope))


def session_scope(user: Any) -> str:
    """The grant scope ``user``'s session is limited to, or ``""``."""
    return str(getattr(user, _SCOPE_ATTRIBUTE, "") or "")
