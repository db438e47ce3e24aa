"""Background work of the archive on Django's Tasks API (the database backend; ``manage.py db_worker`` runs it).

:func:`run_moves` takes planned tier moves as far as they can go, then, while
any of them still waits (a source inside its grace period, a target that
could not be reached), enqueues itself again for later. Running it twice is
harmless: the ledger and its leases make every step happen once.
:func:`~archive.ingest.trash.purge_trash` (defined beside the trash, which
schedules it) purges what has waited its time in the trash.

Restores have their own task, :func:`archive.ingest.restore.run_restores`.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from django_tasks import task

from archive.ingest.mover import Mover, grace_seconds, pending_moves
from archive.ingest.trash import purge_trash

__all__ = ["purge_trash", "run_moves"]


@task()
def run_moves(batch: str = "") -> dict[str, int]:
    """Advance the moves of ``batch`` (every batch when empty); return the counts of what was done."""
    report = Mover(batch or None).run()
    if pending_moves(batch or None).exists():
        run_moves.using(run_after=timezone.now() + timedelta(seconds=max(grace_seconds(), 5))).enqueue(batch)
    return {"moved": report.moved, "deleted": report.deleted, "bytes": report.bytes, "failed": len(report.failed)}
