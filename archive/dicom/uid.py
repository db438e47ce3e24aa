"""Validation of DICOM Unique Identifiers (PS3.5 §9).

A UID is at most 64 characters of digits and dots, with no empty component.
Only validated UIDs ever reach a storage key or a database query, so a value
such as ``../../etc`` or ``1.2;DROP`` is refused before it can do harm.
"""

from __future__ import annotations

import re

UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_LENGTH = 64


class InvalidUID(ValueError):
    """Raised for a value that is not a syntactically valid UID."""


def is_valid_uid(value: object) -> bool:
    """True if ``value`` is a string of digit components joined by dots, ≤ 64 chars."""
    return isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH and UID_RE.fullmatch(value) is not None


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` if it is a valid UID, otherwise raise :class:`InvalidUID`."""
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise InvalidUID(f"{what} is not a valid DICOM UID: {shown}")
    assert isinstance(value, str)
    return value
