"""One-time launch tokens: made from :mod:`secrets`, known to the database only by their SHA-256.

A token is 256 random bits and a short MAC of them under the server's secret
key, both base64url: ``<random>.<mac>``. The random part is what makes the
token unguessable; the MAC only lets the launch page tell a token that was
altered in transit (a typo, a truncated link) from one this server never made
or has forgotten, so the clinician reads the right explanation. Neither the
token nor its hash is ever logged or written to the audit trail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from enum import Enum

from django.conf import settings

RANDOM_BYTES = 32
MAC_BYTES = 12
_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{16}")


class Shape(Enum):
    """What a presented string is, before the database is asked."""

    GOOD = "good"
    TAMPERED = "tampered"  # looks like a token, but its MAC does not match
    MALFORMED = "malformed"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(random_part: str) -> str:
    key = hashlib.sha256(b"pacs ehr launch token\0" + settings.SECRET_KEY.encode()).digest()
    return _b64(hmac.new(key, random_part.encode(), hashlib.sha256).digest()[:MAC_BYTES])


def new_token() -> tuple[str, str]:
    """A fresh token and the SHA-256 (hex) the database keeps."""
    random_part = _b64(secrets.token_bytes(RANDOM_BYTES))
    token = f"{random_part}.{_mac(random_part)}"
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def shape(token: str) -> Shape:
    if not _SHAPE.fullmatch(token):
        return Shape.MALFORMED
    random_part, mac = token.split(".")
    return Shape.GOOD if hmac.compare_digest(mac, _mac(random_part)) else Shape.TAMPERED
