"""Tiers that need a restore, with no S3 server: folders the environment declares NEARLINE (minutes) or OFFLINE.

A filesystem tier declared ``"retrieval": "minutes"`` holds NEARLINE objects:
every read path treats them as it treats GLACIER objects, and its restore is
immediate (a folder is always readable), so :func:`advance_restores` brings
them back in one or two passes. A tier declared ``"retrieval": "manual"``
holds OFFLINE objects (media on a shelf). The GLACIER semantics themselves
are tested against moto (tests/archive/ingest/test_restore.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db.models import QuerySet

from archive.ingest.mover import Mover, plan_moves
from archive.ingest.restore import advance_restores
from archive.models import Instance
from archive.storage import registry


def declare_tiers(settings: Any, root: Path) -> None:
    """``vault`` (NEARLINE, minutes) and ``shelf`` (OFFLINE, manual) folders under ``root``; moves unthrottled."""
    for name in ("vault", "shelf"):
        (root / name).mkdir(parents=True, exist_ok=True)
    settings.PACS_TIERS = {
        "vault": {"backend": "filesystem", "root": str(root / "vault"), "retrieval": "minutes"},
        "shelf": {"backend": "filesystem", "root": str(root / "shelf"), "retrieval": "manual"},
    }
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    settings.PACS_TIER_MOVE_LEASE_SECONDS = 0
    settings.PACS_TIER_MOVE_CONCURRENCY = 1
    settings.PACS_TIER_MOVE_BYTES_PER_SECOND = 0
    settings.PACS_PRIORS_COUNT = 0
    registry.forget()


def move_to(instances: QuerySet[Instance], tier: str) -> None:
    """Move ``instances`` to ``tier`` with the mover (as a lifecycle rule would)."""
    batch, count = plan_moves(instances, tier)
    report = Mover(batch).run()
    assert report.moved == count and not report.failed


def restore_until_done(passes: int = 10) -> None:
    for _ in range(passes):
        if not advance_restores().active:
            return
    pytest.fail("the restores did not finish")
