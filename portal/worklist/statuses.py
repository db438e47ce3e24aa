"""The reading status of a study and the moves between statuses: the worklist's state machine.

::

    scheduled ──> arrived ──> ready ──> in progress ──> preliminary ──> final ──> amended
                     │          ▲  │        │   ▲            │                      │
                     │          └──┼────────┘   └────────────┘ (reopened)           └─> amended
                     └──> qc failed <┘        (release, expiry)
    every status before final ──> cancelled

* ``arrived`` is where a study stored without an order starts; ``scheduled``
  (an order came first) becomes ``arrived`` when its images do.
* ``ready``: technologist QC passed, or automatically at arrival
  (``PACS_WORKLIST_AUTO_READY``). ``qc failed`` goes back to ``ready`` when
  the technologist has fixed it.
* ``in progress``: claimed by one reader (:mod:`portal.worklist.claims`);
  a release or an expired claim puts it back to ``ready``.
* ``preliminary``, ``final`` and ``amended`` follow the report
  (:func:`portal.worklist.workflow.follow_report`); a preliminary report may be
  signed preliminary again after edits; ``final`` and ``amended`` accept only an
  addendum (``amended``).

:func:`check` is the one judge of a move; services call it before writing.
"""

from __future__ import annotations

from django.db import models


class Status(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    ARRIVED = "arrived", "Arrived"
    READY = "ready", "Ready"
    IN_PROGRESS = "in_progress", "In progress"
    PRELIMINARY = "preliminary", "Preliminary"
    FINAL = "final", "Final"
    AMENDED = "amended", "Amended"
    CANCELLED = "cancelled", "Cancelled"
    QC_FAILED = "qc_failed", "QC failed"


class Priority(models.IntegerChoices):
    """Lower sorts first: STAT rows lead the list."""

    STAT = 0, "STAT"
    URGENT = 1, "Urgent"
    ROUTINE = 2, "Routine"


S = Status
MOVES: dict[Status, frozenset[Status]] = {
    S.SCHEDULED: frozenset({S.ARRIVED, S.CANCELLED}),
    S.ARRIVED: frozenset({S.READY, S.QC_FAILED, S.CANCELLED}),
    S.READY: frozenset({S.IN_PROGRESS, S.QC_FAILED, S.CANCELLED}),
    S.QC_FAILED: frozenset({S.READY, S.CANCELLED}),
    S.IN_PROGRESS: frozenset({S.READY, S.IN_PROGRESS, S.PRELIMINARY, S.FINAL, S.CANCELLED}),
    S.PRELIMINARY: frozenset({S.IN_PROGRESS, S.PRELIMINARY, S.FINAL, S.CANCELLED}),
    S.FINAL: frozenset({S.AMENDED}),
    S.AMENDED: frozenset({S.AMENDED}),
    S.CANCELLED: frozenset(),
}

#: Statuses a reader can still claim (``in progress`` only from an expired claim or by override).
CLAIMABLE = frozenset({S.READY, S.IN_PROGRESS})
#: What "to read" shows when no status filter is chosen.
ACTIVE = (S.ARRIVED, S.READY, S.IN_PROGRESS, S.PRELIMINARY)


class InvalidTransition(ValueError):
    """A move the state machine does not allow."""

    def __init__(self, current: str, wanted: str) -> None:
        super().__init__(f"a study cannot go from {Status(current).label} to {Status(wanted).label}")
        self.current, self.wanted = current, wanted


def allowed(current: str, wanted: str) -> bool:
    return Status(wanted) in MOVES[Status(current)]


def check(current: str, wanted: str) -> None:
    """Raise :class:`InvalidTransition` unless ``current`` may become ``wanted``."""
    if not allowed(current, wanted):
        raise InvalidTransition(current, wanted)
