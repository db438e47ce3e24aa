"""Sweeping a tier: objects that never got an index row, and stale staging files."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from archive.models import Instance
from archive.storage.registry import get_storage

log = logging.getLogger(__name__)


def sweep_orphans(tier: str = "hot", min_age: timedelta = timedelta(hours=1)) -> int:
    """Remove stored objects that no index row points to, and stale staging files."""
    storage = get_storage(tier)
    cutoff = (timezone.now() - min_age).timestamp()
    removed = 0
    known = set(Instance.objects.filter(tier=tier).values_list("storage_key", flat=True))
    for key in list(storage.keys()):
        if key not in known and storage.modified(key) < cutoff:
            storage.delete(key)
            removed += 1
    for path in storage.staging_dir.glob("*.part"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
