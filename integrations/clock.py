"""The one clock of the integrations: token and assertion lifetimes are read against it.

A function of its own so tests can move time (expiry of a launch token, of a
client assertion) without touching the rest of the process.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()
