"""Re-hashing every object on a tier (``manage.py tiers verify``): what does not match is reported, never served.

Each object the index places on the tier is read back whole (decompressed,
for the cold tier) and its SHA-256 and size compared with the index. An
object that does not match, is missing or cannot be read is reported, audited
and *quarantined*: the bad bytes are moved aside (``<key>.corrupt`` beside
it on a filesystem tier, left in place on S3) so that reads fail with the
archive's usual answer for a missing object instead of serving damaged
pixels as good. Another tier may still hold a good copy (see the README).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from archive.ingest.mover import hash_object
from archive.models import Instance
from archive.storage.base import reason
from archive.storage.filesystem import FileSystemStorage
from archive.storage.keys import log_name
from archive.storage.registry import get_storage
from audit.trail import record

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    checked: int = 0
    bytes: int = 0
    seconds: float = 0.0
    mismatches: list[str] = field(default_factory=list)


def verify_tier(tier: str, progress: Callable[[int, int], None] | None = None, actor: str = "verify") -> VerifyReport:
    """Re-hash every object the index places on ``tier``; quarantine and report those that do not match."""
    storage = get_storage(tier)
    report = VerifyReport()
    started = time.monotonic()
    rows = Instance.objects.filter(tier=tier).order_by("id").values_list("id", "storage_key", "sha256", "size")
    total = rows.count()
    for pk, key, sha256, size in rows.iterator(chunk_size=2000):
        try:
            found, length = hash_object(storage, key)
            why = "" if (found, length) == (sha256, size) else "its bytes do not match the stored SHA-256"
        except FileNotFoundError:
            why, length = "it is missing", 0
        except OSError as exc:
            why, length = f"it cannot be read ({reason(exc)})", 0
        report.checked += 1
        report.bytes += length
        if why:
            report.mismatches.append(f"{log_name(key)}: {why}")
            log.error("verify %s: %s %s", tier, log_name(key), why)
            quarantine(storage, key)
            sop = Instance.objects.filter(pk=pk).values_list("series__study__study_instance_uid", flat=True).first()
            record(
                "tier-verify",
                actor=actor,
                outcome="failure",
                study_instance_uid=sop or "",
                detail={"tier": tier, "object": log_name(key), "why": why},
            )
        if progress:
            progress(report.checked, total)
    report.seconds = time.monotonic() - started
    record("tier-verify", actor=actor, detail={"tier": tier, "checked": report.checked, "bad": len(report.mismatches)})
    return report


def quarantine(storage: object, key: str) -> None:
    """Move a damaged object out of the way, so no read serves it (filesystem tiers)."""
    if isinstance(storage, FileSystemStorage):
        path = storage.path(key)
        try:
            os.replace(path, str(path) + ".corrupt")
        except FileNotFoundError:
            return
