"""Last access: when each study was last read, kept cheaply enough for the frame fast path.

Lifecycle rules may count days *since last access* and promote back what
was read lately (:mod:`archive.ingest.lifecycle`), so every read path (WADO-RS
retrieve, metadata, frames, rendered, bulk data; C-GET and C-MOVE; export)
calls :func:`touch_study` with the Study Instance UID it reads. A viewer
reads hundreds of frames a minute and lifecycle rules count in days, so the
column :attr:`archive.models.Study.last_accessed_at` is written at most once
every ``PACS_LAST_ACCESS_INTERVAL_SECONDS`` (default an hour) per study and
process: this process remembers which studies it touched and when, and until
the interval has passed a touch is a dictionary lookup and nothing else.
The write itself is one conditional ``UPDATE`` (only when the stored time is
older than the interval), so several processes touching one study at once
change the row once; the memory is only a shortcut and may be lost at any
time (a restart costs one more write per study read). ``0`` switches the
recording off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q

from archive.models import Study

log = logging.getLogger(__name__)

#: Study Instance UID -> POSIX time until which this process need not write its last access again.
_touched: dict[str, float] = {}
_lock = threading.Lock()
#: The wall clock, POSIX seconds (tests replace it).
clock = time.time
#: Above this many remembered studies, those whose interval has passed are forgotten.
MAX_REMEMBERED = 50_000


def interval_seconds() -> int:
    return int(settings.PACS_LAST_ACCESS_INTERVAL_SECONDS)


def touch_study(study_instance_uid: str, now: datetime | None = None) -> bool:
    """Record that ``study_instance_uid`` was read now, unless this process did within the interval.

    Returns whether the database was asked to write (tests and benchmarks count it).
    """
    stamp = clock() if now is None else now.timestamp()
    due = _touched.get(study_instance_uid)
    if due is not None and stamp < due:
        return False  # the fast path: written (or tried) within the interval; no settings, no clock object
    return touch_studies([study_instance_uid], now, stamp)


def touch_studies(study_instance_uids: Iterable[str], now: datetime | None = None, stamp: float | None = None) -> bool:
    """:func:`touch_study` for several studies (a C-MOVE, an export) in one statement."""
    interval = interval_seconds()
    if interval <= 0:
        return False
    if stamp is None:
        stamp = clock() if now is None else now.timestamp()
    when = now or datetime.fromtimestamp(stamp, tz=UTC)
    due = []
    for uid in set(study_instance_uids):
        until = _touched.get(uid)
        if uid and (until is None or stamp >= until):
            _remember(uid, stamp + interval, stamp)
            due.append(uid)
    return _write(sorted(due), when, interval) if due else False


def forget() -> None:
    """Forget which studies this process touched (tests; a worker after fork)."""
    with _lock:
        _touched.clear()


def _remember(uid: str, until: float, stamp: float) -> None:
    with _lock:
        if len(_touched) >= MAX_REMEMBERED:
            for old in [u for u, t in _touched.items() if t <= stamp]:
                del _touched[old]
            if len(_touched) >= MAX_REMEMBERED:
                _touched.clear()  # all recent: forgetting costs one write per study, never a wrong date
        _touched[uid] = until


def _write(uids: list[str], now: datetime, interval: int) -> bool:
    """The conditional UPDATE: only rows whose last access is unknown or older than the interval change."""
    stale = Q(last_accessed_at__isnull=True) | Q(last_accessed_at__lt=now - timedelta(seconds=interval))
    try:
        with transaction.atomic():
            Study.objects.filter(stale, study_instance_uid__in=uids).update(last_accessed_at=now)
    except DatabaseError as exc:
        # A busy index must not fail a read: the next touch after the interval tries again.
        log.warning("last access of %d stud(ies) not recorded: %s", len(uids), exc)
    return True
