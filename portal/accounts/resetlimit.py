"""Throttling password-reset mail: a few links per address, and per client address, per window.

Within ``PACS_PASSWORD_RESET_WINDOW_SECONDS`` (an hour) an e-mail address gets
at most ``PACS_PASSWORD_RESET_MAX_PER_EMAIL`` reset requests (3) and one
client address may send at most ``PACS_PASSWORD_RESET_MAX_PER_IP`` (10). Every
request counts, known address or not, allowed or refused, so the throttle
behaves the same for accounts that exist and for ones that do not and reveals
nothing. A refused request gets the same answer as an accepted one; only the
mail is not sent. Counting lives in the database so every web process sees the
same numbers.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.utils import timezone

from portal.models import PasswordResetRequest


class Limit(StrEnum):
    """Which limit refused a request."""

    EMAIL = "email"
    IP = "ip"


def normalise(email: str) -> str:
    return (email or "").strip().lower()[:254]


def register(email: str, source_ip: str) -> Limit | None:
    """Count one request; return the limit it exceeds (then send nothing), or None."""
    now = timezone.now()
    since = now - timedelta(seconds=settings.PACS_PASSWORD_RESET_WINDOW_SECONDS)
    PasswordResetRequest.objects.filter(at__lte=since).delete()
    address = normalise(email)
    recent = PasswordResetRequest.objects.filter(at__gt=since)
    by_email = recent.filter(email=address).count()
    by_ip = recent.filter(source_ip=source_ip).count() if source_ip else 0
    PasswordResetRequest.objects.create(email=address, source_ip=source_ip[:64], at=now)
    if by_email >= settings.PACS_PASSWORD_RESET_MAX_PER_EMAIL:
        return Limit.EMAIL
    if source_ip and by_ip >= settings.PACS_PASSWORD_RESET_MAX_PER_IP:
        return Limit.IP
    return None
