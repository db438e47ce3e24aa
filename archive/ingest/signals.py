"""What ingest tells the rest of the project, without knowing who listens.

The archive must not import the portal (import contracts), yet the portal's
worklist keeps a row per study up to date as instances arrive. Ingest sends
:data:`study_stored` once per study and per committed store batch (a STOW-RS
request, one C-STORE, one reindexed object), after the transaction that
wrote the study's rows has committed, so a receiver sees the new rows and its
own work can never roll the ingest back. Receivers are called robustly: one
that fails is logged and ingest carries on (the instance is stored and
acknowledged either way; ``manage.py worklist_sync`` rebuilds what a failed
receiver missed).

Keyword argument: ``study_id``, the primary key of the :class:`archive.models.Study`.

:data:`study_corrected` is sent the same way after a correction
(:mod:`archive.ingest.correct`) committed new patient or study attributes,
so that a receiver rewrites what it copied from the study (the worklist row's
patient name and ID, description ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger(__name__)

#: Sent after a committed store batch added instances to a study; ``study_id`` names it.
study_stored = Signal()
#: Sent after a committed correction changed a study's patient or study attributes; ``study_id`` names it.
study_corrected = Signal()


def announce(study_ids: Iterable[int]) -> None:
    """Send :data:`study_stored` for each study once the current transaction (if any) commits."""
    unique = sorted(set(study_ids))
    if unique:
        transaction.on_commit(lambda: _send(unique))


def announce_correction(study_ids: Iterable[int]) -> None:
    """Send :data:`study_corrected` for each study once the current transaction commits."""
    unique = sorted(set(study_ids))
    if unique:
        transaction.on_commit(lambda: _send(unique, study_corrected))


def _send(study_ids: list[int], signal: Signal = study_stored) -> None:
    for study_id in study_ids:
        for receiver, outcome in signal.send_robust(sender=None, study_id=study_id):
            if isinstance(outcome, Exception):
                log.error(
                    "a receiver of %s failed for study %d: %s (%s)",
                    "study_corrected" if signal is study_corrected else "study_stored",
                    study_id,
                    type(outcome).__name__,
                    getattr(receiver, "__qualname__", receiver),
                )
