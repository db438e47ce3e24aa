"""Object keys: built from validated UIDs only, and checked to have exactly that shape.

A key is ``study/series/sop.<16 hex of SHA-256>.dcm``. :func:`object_key` builds it,
:func:`check_key` refuses anything else (which is what keeps a key inside a
storage root), and :func:`log_name` is what logs may say of it (no UIDs).
"""

from __future__ import annotations

import re

from archive.dicom.uid import validate_uid


def object_key(study: str, series: str, sop: str, sha256: str) -> str:
    """``study/series/sop.<hash prefix>.dcm`` built from validated UIDs."""
    validate_uid(study)
    validate_uid(series)
    validate_uid(sop)
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return f"{study}/{series}/{sop}.{sha256[:16]}.dcm"


_UID = r"[0-9]+(?:\.[0-9]+)*"
_KEY_RE = re.compile(rf"({_UID})/({_UID})/({_UID})\.[0-9a-f]{{16}}\.dcm")


def log_name(key: str) -> str:
    """How a log line names a stored object: by its content-hash suffix, never by its UIDs.

    Logs carry no UIDs (docs/security.md); an operator finds the file with
    ``find <tier root> -name '<this>'``.
    """
    return "*." + key.rsplit(".", 2)[-2] + ".dcm" if _KEY_RE.fullmatch(key) else "an object with a malformed key"


def is_object_key(key: str) -> bool:
    """True if ``key`` has exactly the shape :func:`object_key` builds."""
    match = _KEY_RE.fullmatch(key)
    return match is not None and all(len(uid) <= 64 for uid in match.groups())


def check_key(key: str) -> str:
    """``key`` if it is an object key, else :class:`ValueError`.

    Three UIDs (digits and dots, no empty component) and a hex digest leave no
    room for ``..``, an absolute path, a separator or a hidden name, so a
    checked key always names a file two directories below the storage root.
    """
    if not is_object_key(key):
        raise ValueError("not an object key: it could escape the storage root")
    return key
