"""Reconciliation: every instance the legacy PACS listed, checked against what actually arrived in the index.

A C-MOVE can report success while images are missing, so counts prove
nothing: each ledger instance is looked up by its SOP Instance UID, and it has
arrived only when the node recorded the legacy PACS's C-STORE of it (the
audit trail's ``store`` record of that device): stored, or identical to the
data set already held (so the data set we hold is the one the legacy PACS
sent), or refused. One that arrived is *mismatched* when it contradicts the
inventory (another Study or Series Instance UID or SOP Class UID), belongs to
another site, or was refused as a different object under its UID; otherwise
its stored object is read back and must match the SHA-256 taken at ingest
(then it is *complete* and *verified*: identical). The SHA-256 of its pixel data (the frames' bytes)
is kept to find the same images under different UIDs. One that is not in the
index stays where it was; the caller decides whether it is missing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.utils import timezone

from archive.models import Instance
from migration.models import LedgerInstance, State

CHUNK = 4 * 1024 * 1024  # bytes read at a time to verify a stored object


@dataclass
class Arrival:
    """What the index says of one ledger instance: its new state, or None when it has not arrived."""

    state: State
    error: str = ""
    size: int = 0
    pixel_sha256: str = ""
    verified: bool = False


def check(rows: list[LedgerInstance], site_id: int, refused: dict[str, str], delivered: set[str]) -> dict[int, Arrival]:
    """The arrivals among ``rows`` (keyed by ledger row id).

    ``delivered``: the SOP Instance UIDs whose C-STORE from the legacy PACS the node recorded as stored or as
    identical to what it held; ``refused``: those it refused, with why. An instance in the index that is neither
    has not arrived from the legacy PACS (the index holds it from elsewhere): it is left out.
    """
    by_uid = {r.sop_instance_uid: r for r in rows}
    stored = Instance.objects.filter(sop_instance_uid__in=by_uid).select_related("series__study")
    found: dict[int, Arrival] = {}
    for instance in stored:
        uid = instance.sop_instance_uid
        if uid in delivered or uid in refused:
            found[by_uid[uid].pk] = _judge(by_uid[uid], instance, site_id, refused.get(uid))
    return found


def _judge(row: LedgerInstance, instance: Instance, site_id: int, refusal: str | None) -> Arrival:
    series, study = instance.series, instance.series.study
    contradictions = []
    if study.study_instance_uid != row.series.study.study_instance_uid:
        contradictions.append("Study Instance UID differs")
    if series.series_instance_uid != row.series.series_instance_uid:
        contradictions.append("Series Instance UID differs")
    if row.sop_class_uid and instance.sop_class_uid != row.sop_class_uid:
        contradictions.append("SOP Class UID differs")
    if study.site_id != site_id:
        contradictions.append("already held in another site's study")
    if refusal is not None:
        contradictions.append(f"the legacy copy was refused: {refusal}")
    if contradictions:
        return Arrival(State.MISMATCHED, "; ".join(contradictions), size=instance.size)
    digest, pixels = _digests(instance)
    if digest != instance.sha256:
        return Arrival(State.FAILED, "the stored object does not match its SHA-256", size=instance.size)
    return Arrival(State.COMPLETE, size=instance.size, pixel_sha256=pixels, verified=True)


def _digests(instance: Instance) -> tuple[str, str]:
    """The SHA-256 of the stored object, and of its pixel data (its frames' bytes, each frame a list of
    ``[offset, length]`` ranges; empty when frame boundaries are unknown)."""
    whole = hashlib.sha256()
    frames = hashlib.sha256()
    ranges = [(int(o), int(n)) for frame in (instance.frames or []) for o, n in frame]
    position = 0
    with instance.open_stored() as stream:
        while chunk := stream.read(CHUNK):
            whole.update(chunk)
            end = position + len(chunk)
            for offset, length in ranges:  # the frames' bytes that fall in this chunk, in order
                lo, hi = max(offset, position), min(offset + length, end)
                if lo < hi:
                    frames.update(chunk[lo - position : hi - position])
            position = end
    return whole.hexdigest(), frames.hexdigest() if ranges else ""


def apply(row: LedgerInstance, arrival: Arrival) -> None:
    """Set ``row`` (unsaved) to what ``arrival`` found."""
    row.state, row.last_error = arrival.state, arrival.error
    row.size, row.pixel_sha256, row.verified = arrival.size, arrival.pixel_sha256, arrival.verified
    row.received_at = row.updated_at = timezone.now()
