"""Which of several stored copies of one instance is current: the order of its versions.

A correction (:mod:`archive.ingest.correct`, split, merge) stores a corrected
copy under the same SOP Instance UID and keeps the replaced object. Each copy
records its correction in a new item of (0400,0561) Original Attributes
Sequence with (0400,0562) Attribute Modification DateTime (PS3.3 C.12.1); an
original has none. So the copies of one instance order themselves: by the
latest Attribute Modification DateTime among their items (an original first),
then by the number of items, then, for a true tie, by SHA-256 (deterministic,
and reported by whoever asks). The last is the current copy; the others are
versions 1, 2, ... (version 1 the original). Nothing here needs the index:
``reindex`` uses it to rebuild the rows and the version history from storage
alone, ``sweep`` to tell an earlier version from a conflict.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pydicom
from pydicom.valuerep import DT

#: (0400,0561) Original Attributes Sequence and (0400,0562) Attribute Modification DateTime, as DICOM JSON tags.
ORIGINAL_ATTRIBUTES = "04000561"
MODIFICATION_DATETIME = "04000562"
#: Before every correction: the rank of an original (no Original Attributes Sequence).
EPOCH = datetime.min.replace(tzinfo=UTC)

#: (latest Attribute Modification DateTime, number of Original Attributes Sequence items).
Rank = tuple[datetime, int]


def parse_datetime(value: str) -> datetime | None:
    """A DT value (PS3.5 6.2) as an aware UTC datetime; no offset is read as UTC; None when it is not a DT."""
    try:
        dt = DT(value.strip())
        if not isinstance(dt, datetime):
            return None
        # in UTC, year 1 with a positive offset (or 9999 with a negative one) leaves the range of a datetime
        return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, TypeError, OverflowError):
        return None


def rank_of_metadata(metadata: dict[str, Any] | str) -> Rank:
    """The rank of a copy from its DICOM JSON (an :class:`~archive.models.Instance` row's ``metadata``)."""
    if isinstance(metadata, str):
        metadata = json.loads(metadata or "{}")
    element = metadata.get(ORIGINAL_ATTRIBUTES) if isinstance(metadata, dict) else None
    items = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(items, list):
        return (EPOCH, 0)
    latest = EPOCH
    for item in items:
        values = item.get(MODIFICATION_DATETIME, {}).get("Value") if isinstance(item, dict) else None
        when = parse_datetime(str(values[0])) if isinstance(values, list) and values else None
        if when is not None and when > latest:
            latest = when
    return (latest, len(items))


def rank_of_file(fh: Any) -> Rank:
    """The rank of a stored Part 10 object, read from its header only (Pixel Data is not read)."""
    ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=["OriginalAttributesSequence"])
    items = ds.get("OriginalAttributesSequence") or []
    latest = EPOCH
    for item in items:
        when = parse_datetime(str(item.get("AttributeModificationDateTime", "")))
        if when is not None and when > latest:
            latest = when
    return (latest, len(items))


def ordered(copies: list[tuple[Rank, str, Any]]) -> tuple[list[tuple[Rank, str, Any]], bool]:
    """``copies`` (rank, sha256, anything) from the original to the current one; and whether two ranks tie."""
    copies = sorted(copies, key=lambda c: (c[0], c[1]))
    ranks = [c[0] for c in copies]
    return copies, len(set(ranks)) != len(ranks)
