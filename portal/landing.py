"""What two roles land on after signing in: a referring clinician's "My studies" and an administrator's operations.

* :func:`my_studies`: the studies the one access policy lets the user see
  (:func:`archive.access.visible_studies`), newest study date first, paged by
  keyset on (study date, study time, id) so a deep page costs what the first
  does. Each row carries the report state a clinician may read: the status of
  the latest *released* version (final or amended), never a draft or a
  preliminary. The page token is a study's id; its sort values are read back
  from the user's own visible studies, so no PHI ever travels in the URL.
* :func:`operations`: a handful of aggregates for administrators: today's
  arrivals, the worklist backlog, claims, tier moves and restores in flight,
  budget alerts and the last recorded audit-chain verification. Every number
  is one ``COUNT`` / ``GROUP BY`` in the database; nothing loops over the index.

Both run a constant number of queries whatever the archive's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from archive.access import visible_studies
from archive.dicom.modalities import image_modalities
from archive.models import (
    ACTIVE_MOVE_STATES,
    ACTIVE_RESTORE_STATES,
    Budget,
    Restore,
    Study,
    TierMove,
)
from audit.models import AuditEvent
from portal.reports.models import RELEASED, ReportVersion
from portal.worklist.claims import idle_limit
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Priority, Status

#: Rows per page of "My studies".
PAGE_SIZE = 50
#: The largest primary key a token may name (64-bit signed).
MAX_ID = 2**63 - 1
#: Worklist statuses that still wait for someone (the backlog).
BACKLOG = (Status.SCHEDULED, Status.ARRIVED, Status.READY, Status.IN_PROGRESS, Status.PRELIMINARY, Status.QC_FAILED)
#: Worklist statuses of a study no report has been finalised for yet ("unread").
UNREAD = (Status.ARRIVED, Status.READY, Status.IN_PROGRESS)


class BadToken(ValueError):
    """The ``before`` paging token is not the id of one of the user's studies (HTTP 400)."""


@dataclass(frozen=True)
class StudyRow:
    """One line of "My studies"."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    study_date: str  # YYYY-MM-DD, or "" when the study has none
    modalities: str
    description: str
    report_state: str  # "final", "amended" or "" (nothing released yet)
    token: str


@dataclass(frozen=True)
class StudyPage:
    rows: list[StudyRow]
    more: str  # the token of the next page, "" on the last one


def _display_date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _display_name(value: str) -> str:
    """A DICOM person name for reading: components separated by spaces, not carets."""
    return " ".join(part for part in value.split("^") if part)


def released_state() -> Subquery:
    """The status of a study's latest released (final or amended) report version, for ``annotate``."""
    latest = ReportVersion.objects.filter(report__study=OuterRef("pk"), status__in=RELEASED).order_by("-number")
    return Subquery(latest.values("status")[:1])


def _before(studies: QuerySet[Study], token: str) -> Q:
    """The keyset condition of the rows after the study ``token`` names, in (date, time, id) descending order."""
    if not (token.isascii() and token.isdigit() and len(token) <= 19 and int(token) <= MAX_ID):
        raise BadToken(token)
    anchor = studies.filter(pk=int(token)).values("study_date", "study_time").first()
    if anchor is None:
        raise BadToken(token)
    date, time, pk = anchor["study_date"], anchor["study_time"], int(token)
    return (
        Q(study_date__lt=date)
        | Q(study_date=date, study_time__lt=time)
        | Q(study_date=date, study_time=time, pk__lt=pk)
    )


def my_studies(user: Any, before: str = "") -> StudyPage:
    """One page of the studies ``user`` may see, newest first (``before``: the token of the previous page's end)."""
    studies = visible_studies(user)
    if before:
        studies = studies.filter(_before(studies, before))
    found = list(
        studies.select_related("patient")
        .annotate(report_state=released_state())
        .order_by("-study_date", "-study_time", "-pk")[: PAGE_SIZE + 1]
    )
    rows = [
        StudyRow(
            study_instance_uid=s.study_instance_uid,
            patient_name=_display_name(s.patient.patient_name),
            patient_id=s.patient.patient_id,
            study_date=_display_date(s.study_date),
            modalities=", ".join(image_modalities(s.modalities_in_study.split("\\"))),
            description=s.study_description,
            report_state=s.report_state or "",  # type: ignore[attr-defined]
            token=str(s.pk),
        )
        for s in found[:PAGE_SIZE]
    ]
    more = rows[-1].token if len(found) > PAGE_SIZE else ""
    return StudyPage(rows, more)


@dataclass
class Operations:
    """The numbers of the operations page."""

    since: datetime
    studies_arrived: int
    instances_arrived: int  # the images of those studies (Instance has no index on arrival time)
    backlog: list[tuple[str, int]]  # (status label, rows), in the state machine's order
    stat_unread: int
    claims_held: int
    claims_expired: int
    moves_in_flight: list[tuple[str, int]]  # (state, moves)
    restores_in_flight: list[tuple[str, int]]  # (state, restores)
    budgets_alerting: list[Budget] = field(default_factory=list)
    last_verification: AuditEvent | None = None


def _by(rows: QuerySet[Any], name: str, order: Sequence[str]) -> list[tuple[str, int]]:
    counts = {row[name]: row["n"] for row in rows.values(name).annotate(n=Count("pk")).order_by()}
    return [(value, counts[value]) for value in order if counts.get(value)]


def operations(now: datetime | None = None) -> Operations:
    """Today's arrivals, backlog, claims, moves, restores, budget alerts and the last chain verification."""
    now = now or timezone.now()
    since = now - timedelta(hours=24)
    claims = WorklistItem.objects.filter(claimed_by__isnull=False).aggregate(
        held=Count("pk"), expired=Count("pk", filter=Q(claim_touched_at__lt=now - idle_limit()))
    )
    backlog = _by(WorklistItem.objects.filter(status__in=BACKLOG), "status", [str(s) for s in BACKLOG])
    arrived = Study.objects.filter(created_at__gte=since, trashed_at__isnull=True).aggregate(
        studies=Count("pk"), instances=Sum("number_of_instances")
    )
    labels = dict(Status.choices)
    return Operations(
        since=since,
        studies_arrived=arrived["studies"],
        instances_arrived=arrived["instances"] or 0,
        backlog=[(str(labels[value]), n) for value, n in backlog],
        stat_unread=WorklistItem.objects.filter(priority=Priority.STAT, status__in=UNREAD).count(),
        claims_held=claims["held"],
        claims_expired=claims["expired"],
        moves_in_flight=_by(TierMove.objects.filter(state__in=ACTIVE_MOVE_STATES), "state", ACTIVE_MOVE_STATES),
        restores_in_flight=_by(Restore.objects.filter(state__in=ACTIVE_RESTORE_STATES), "state", ACTIVE_RESTORE_STATES),
        budgets_alerting=list(Budget.objects.filter(enabled=True, alerted_at__isnull=False).order_by("name")[:20]),
        last_verification=AuditEvent.objects.filter(action="audit-verify").order_by("-pk").first(),
    )
