"""Throttling password guessing: lock a user name, or an address, after repeated failures.

``PACS_SIGNIN_MAX_FAILURES`` failures for one user name (5 by default), or
``PACS_SIGNIN_MAX_FAILURES_PER_IP`` from one address (20: a hospital's
workstations often share one address behind NAT), within
``PACS_SIGNIN_LOCKOUT_SECONDS`` (15 minutes) lock further attempts until the
oldest counted failure leaves that window. The lock applies to user names that
do not exist exactly as to ones that do, so it reveals nothing about accounts.
A successful sign-in clears that user name's failures. Counting lives in the
database so every web process sees the same numbers.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from portal.models import SignInFailure


def _window() -> timedelta:
    return timedelta(seconds=settings.PACS_SIGNIN_LOCKOUT_SECONDS)


def normalise(username: str) -> str:
    return (username or "").strip().lower()[:150]


def is_locked(username: str, source_ip: str) -> bool:
    """Are sign-ins for this user name, or from this address, locked right now?"""
    since = timezone.now() - _window()
    recent = SignInFailure.objects.filter(at__gt=since)
    name = normalise(username)
    if name and recent.filter(username=name).count() >= settings.PACS_SIGNIN_MAX_FAILURES:
        return True
    return bool(source_ip) and recent.filter(source_ip=source_ip).count() >= settings.PACS_SIGNIN_MAX_FAILURES_PER_IP


def register_failure(username: str, source_ip: str) -> bool:
    """Count one failure; return whether the user name or address is now locked."""
    now = timezone.now()
    SignInFailure.objects.filter(at__lt=now - _window()).delete()
    SignInFailure.objects.create(username=normalise(username), source_ip=source_ip[:64], at=now)
    return is_locked(username, source_ip)


def clear(username: str) -> None:
    """Forget a user name's failures (after a successful sign-in or an unlock in the admin)."""
    SignInFailure.objects.filter(username=normalise(username)).delete()
