"""Whether an arriving instance is already stored: a duplicate, a conflict, or new.

A SOP Instance UID names one data set for good. An arriving copy whose
UID is already indexed is a *duplicate* when it holds the same bytes, or the
same data set in the same transfer syntax under other File Meta Information
(another sender or gateway writes its own (0002,0012) Implementation Class
UID, (0002,0016) Source Application Entity Title ...); it is a *conflict*
otherwise, and the stored object is kept. A repeat of a UID within one
request is judged the same way against the request's first copy, once that
copy's fate is known.

The stored SHA-256 decides most cases in one query; the data sets are read
and hashed only when the digests differ.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.db import connections, router

from archive.dicom.part10 import file_meta_end
from archive.models import Instance
from archive.storage.base import CHUNK
from archive.storage.registry import get_storage


class Verdict(enum.Enum):
    NEW = "new"  # not indexed, and the first copy of its SOP Instance UID in the request
    REPEAT = "repeat"  # an earlier copy of the same request has its SOP Instance UID
    DUPLICATE = "duplicate"  # the same bytes, or the same data set under other File Meta Information
    CONFLICT = "conflict"  # a different data set under the same SOP Instance UID


@dataclass(frozen=True, slots=True)
class Arrival:
    """One arriving copy of an instance, as duplicate detection needs it."""

    sop_instance_uid: str
    """(0008,0018) SOP Instance UID."""
    transfer_syntax_uid: str
    """(0002,0010) Transfer Syntax UID."""
    sha256: str
    """SHA-256 of the whole Part 10 file."""
    path: Path
    """Where its bytes are staged."""


def classify_known(arrivals: Sequence[Arrival]) -> list[tuple[Verdict, int | None]]:
    """The verdict on each of ``arrivals`` against the index and the earlier copies of the same request.

    A :attr:`Verdict.REPEAT` comes with the position of the request's first
    copy of its SOP Instance UID (judge it with :func:`against_earlier` once
    that copy's fate is known); every other verdict with None.
    """
    stored = stored_hashes([a.sop_instance_uid for a in arrivals])
    first: dict[str, int] = {}
    verdicts: list[tuple[Verdict, int | None]] = []
    for position, arrival in enumerate(arrivals):
        uid = arrival.sop_instance_uid
        if uid in stored:
            verdicts.append((against_stored(arrival, stored[uid]), None))
        elif uid in first:
            verdicts.append((Verdict.REPEAT, first[uid]))
        else:
            first[uid] = position
            verdicts.append((Verdict.NEW, None))
    return verdicts


def against_stored(arrival: Arrival, stored_sha256: str) -> Verdict:
    """:attr:`Verdict.DUPLICATE` or :attr:`Verdict.CONFLICT`: ``arrival`` against the indexed instance
    of its SOP Instance UID, whose object has the digest ``stored_sha256``."""
    same = stored_sha256 == arrival.sha256 or same_data_set(arrival)
    return Verdict.DUPLICATE if same else Verdict.CONFLICT


def against_earlier(arrival: Arrival, earlier: Arrival) -> Verdict:
    """:attr:`Verdict.DUPLICATE` or :attr:`Verdict.CONFLICT`: ``arrival`` against an earlier, stored,
    copy of the same request."""
    if arrival.sha256 == earlier.sha256:
        return Verdict.DUPLICATE
    if arrival.transfer_syntax_uid == earlier.transfer_syntax_uid:
        with open(earlier.path, "rb") as first, open(arrival.path, "rb") as again:
            digest = data_set_digest(first)
            if digest is not None and digest == data_set_digest(again):
                return Verdict.DUPLICATE
    return Verdict.CONFLICT


def stored_verdict(arrival: Arrival) -> Verdict | None:
    """``arrival`` against the index as it is now: None when its SOP Instance UID is not indexed."""
    stored = stored_hashes([arrival.sop_instance_uid]).get(arrival.sop_instance_uid)
    return None if stored is None else against_stored(arrival, stored)


def same_data_set(arrival: Arrival) -> bool:
    """Whether the object stored under the SOP Instance UID of ``arrival`` holds its data set byte for byte,
    in the same transfer syntax, whatever either's File Meta Information says."""
    found = Instance.objects.filter(sop_instance_uid=arrival.sop_instance_uid)
    row = found.values_list("tier", "storage_key", "transfer_syntax_uid").first()
    if row is None or row[2] != arrival.transfer_syntax_uid:
        return False
    with get_storage(row[0]).open(row[1]) as stored, open(arrival.path, "rb") as staged:
        digest = data_set_digest(stored)
        return digest is not None and digest == data_set_digest(staged)


def data_set_digest(fh: BinaryIO) -> str | None:
    """SHA-256 of what follows a Part 10 file's File Meta Information; None when its end is not certain.

    The end is found by the meta's own elements (:func:`~archive.dicom.part10.file_meta_end`),
    never by a group length alone: a false one would make two different data sets digest alike.
    """
    start = file_meta_end(fh)
    if start is None:
        return None
    fh.seek(start)
    digest = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def stored_hashes(sop_uids: list[str]) -> dict[str, str]:
    """SHA-256 of the indexed instances among ``sop_uids`` (plain SQL: this runs on every store)."""
    if not sop_uids:
        return {}
    connection = connections[router.db_for_read(Instance)]
    q = connection.ops.quote_name
    table, uid, digest = q(Instance._meta.db_table), q("sop_instance_uid"), q("sha256")
    found: dict[str, str] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(sop_uids), 500):
            chunk = sop_uids[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            # Only model metadata is interpolated (quoted table and column names); values are parameters.
            cursor.execute(f"SELECT {uid}, {digest} FROM {table} WHERE {uid} IN ({marks})", chunk)  # noqa: S608
            found.update(cursor.fetchall())
    return found
