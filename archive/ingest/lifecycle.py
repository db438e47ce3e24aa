"""Lifecycle rules: which instances should now be on which tier, decided by the database, not by a Python loop.

Each enabled :class:`~archive.models.LifecycleRule` is a filter (days, site,
modality, body part, study description, patient age) and a target tier.
When several rules match an instance, the first by priority decides, so rule
*k* selects what it matches and no earlier rule matches. Each rule becomes
one ``INSERT … SELECT`` of ledger rows (:func:`archive.ingest.mover.plan_moves`)
over instances not already on its target and not already moving: evaluating
the rules over the whole index is a handful of SQL statements whatever its
size (``bench/tiers.py --rule-scale`` measures a million instances).

The days of a rule count (:class:`~archive.models.RuleBasis`):

- from receipt (``Study.created_at``);
- from the last access (``Study.last_accessed_at``, which the read paths keep
  through :mod:`archive.ingest.lastaccess`), or from receipt for a study never
  read: "move what nobody has opened for N days";
- backwards, for a rule that *promotes*: studies read within the last N days
  go back to the rule's (faster) tier. Only ONLINE instances are moved by
  it: a NEARLINE instance (on a tier that needs a restore) is brought back
  by the restore its read already started (:mod:`archive.ingest.restore`),
  and an instance with a restore in flight is left to it, so the two never
  plan two moves of one object (the ledger allows one active move anyway).

The patient's age is counted at the study date, in whole years, by the
database: from (0010,0030) Patient's Birth Date and (0008,0020) Study Date
when both are plain ``YYYYMMDD`` dates and the birth is not after the study
(``(study − birth) // 10000`` on the dates as numbers is the age in completed
years), else from (0010,1010)
Patient's Age (``045Y``, ``018M``, ``010W``, ``003D``) kept in the study's
attributes. A study whose age is not known matches no rule with an age bound.

An object restored from an archive tier (:mod:`archive.ingest.restore`) in the
last ``PACS_RESTORE_HOLD_DAYS`` days is left where it is by rules that
move data away, so a study someone just asked for is not sent back to the
archive by the next evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Func, IntegerField, Q, QuerySet
from django.utils import timezone

from archive.ingest.mover import plan_moves
from archive.models import (
    ACTIVE_RESTORE_STATES,
    Availability,
    Instance,
    LifecycleRule,
    Restore,
    RestoreState,
    RuleBasis,
    Study,
)


@dataclass
class RulePlan:
    rule: LifecycleRule
    batch: str
    planned: int


class AgeAtStudy(Func):
    """The patient's age in whole years at the study date, per study row (NULL when unknown).

    Arguments, resolved on :class:`~archive.models.Study`: the study date, the
    patient's birth date and the study's attributes (DICOM JSON).
    """

    output_field = IntegerField()

    def __init__(self) -> None:
        super().__init__(F("study_date"), F("patient__patient_birth_date"), F("attributes"))

    def _sql(self, compiler: Any, connection: Any, date: str, age: str, text: str, json_age: str) -> tuple[str, list]:
        (study, p1), (birth, p2), (attributes, p3) = (compiler.compile(e) for e in self.get_source_expressions())
        patient_age = json_age.format(attributes)
        sql = (
            f"CASE WHEN {date.format(study)} AND {date.format(birth)}"
            f" AND CAST({study} AS {text}) >= CAST({birth} AS {text})"  # born after the study: a wrong date
            f" THEN (CAST({study} AS {text}) - CAST({birth} AS {text})) / 10000"
            f" WHEN {age.format(patient_age)} THEN CAST(SUBSTR({patient_age}, 1, 3) AS {text}) /"
            f" (CASE SUBSTR({patient_age}, 4, 1) WHEN 'Y' THEN 1 WHEN 'M' THEN 12 WHEN 'W' THEN 52 ELSE 365 END)"
            " END"
        )
        # Each column appears several times: its parameters (none for plain columns) as often.
        params = [*p1, *p2, *p1, *p2, *p1, *p2, *p3, *p3, *p3]
        return sql, params

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:  # type: ignore[override]
        return self._sql(
            compiler,
            connection,
            date="({} GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]')",
            age="({} GLOB '[0-9][0-9][0-9][YMWD]')",
            text="INTEGER",
            json_age="json_extract({}, '$.\"00101010\".Value[0]')",
        )

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        return self._sql(
            compiler,
            connection,
            date="({} ~ '^[0-9]{{8}}$')",
            age="(COALESCE({}, '') ~ '^[0-9]{{3}}[YMWD]$')",
            text="INTEGER",
            json_age="(({}) -> '00101010' -> 'Value' ->> 0)",
        )

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:  # type: ignore[override]
        raise NotImplementedError(f"patient age rules need SQLite or PostgreSQL, not {connection.vendor}")


def rule_filter(rule: LifecycleRule, now: datetime) -> Q:
    """The instances ``rule`` matches, as one condition on the instance table and its joins."""
    return rule_days(rule, now) & Q(series__study__trashed_at__isnull=True) & rule_scope(rule)


def rule_days(rule: LifecycleRule, now: datetime, series: str = "series__") -> Q:
    """The condition on the study's dates: old enough since receipt or last access, or read recently."""
    cutoff = now - timedelta(days=rule.after_days)
    study = f"{series}study__"
    if rule.basis == RuleBasis.ACCESSED_WITHIN:
        return Q(**{f"{study}last_accessed_at__gte": cutoff})
    received = Q(**{f"{study}created_at__lte": cutoff})
    if rule.basis == RuleBasis.LAST_ACCESS:
        # Since the last access, or since receipt when never read: both columns are indexed.
        return Q(**{f"{study}last_accessed_at__lte": cutoff}) | (
            Q(**{f"{study}last_accessed_at__isnull": True}) & received
        )
    return received


def rule_scope(rule: LifecycleRule, series: str = "series__") -> Q:
    """The instances ``rule`` matches once their dates do (its filters without the days).

    ``series`` is the path from the filtered model to the series: ``""`` filters series rows.
    """
    q = Q()
    if rule.site_id is not None:
        q &= Q(**{f"{series}study__site_id": rule.site_id})
    if rule.modality:
        q &= Q(**{f"{series}modality__iexact": rule.modality})
    if rule.body_part:
        q &= Q(**{f"{series}body_part_examined__iexact": rule.body_part})
    if rule.description_pattern:
        q &= Q(**{f"{series}study__study_description__icontains": rule.description_pattern})
    if rule.min_patient_age is not None or rule.max_patient_age is not None:
        q &= Q(**{f"{series}study__in": studies_by_age(rule.min_patient_age, rule.max_patient_age).values("pk")})
    return q


def studies_by_age(low: int | None, high: int | None) -> Any:
    """The studies whose patient was ``low`` to ``high`` years old (inclusive) at the study date."""
    studies = Study.objects.annotate(patient_age=AgeAtStudy())
    if low is not None:
        studies = studies.filter(patient_age__gte=low)
    if high is not None:
        studies = studies.filter(patient_age__lte=high)
    return studies


def apply_rules(now: datetime | None = None, actor: str = "lifecycle") -> list[RulePlan]:
    """Plan the moves every enabled rule asks for now; the mover carries them out."""
    plans = []
    for rule, instances in rule_selections(now or timezone.now()):
        batch, planned = plan_moves(instances, rule.target_tier, actor=actor)
        plans.append(RulePlan(rule, batch, planned))
    return plans


def rule_selections(now: datetime) -> Iterator[tuple[LifecycleRule, QuerySet[Instance]]]:
    """Each enabled rule, by priority, with the instances it selects now (one query each, not yet run)."""
    earlier = Q(pk__in=[])  # matches nothing
    recently_restored = Q(
        pk__in=Restore.objects.filter(
            state=RestoreState.DONE, done_at__gte=now - timedelta(days=settings.PACS_RESTORE_HOLD_DAYS)
        ).values("instance_id")
    )
    restoring = Q(pk__in=Restore.objects.filter(state__in=ACTIVE_RESTORE_STATES).values("instance_id"))
    for rule in LifecycleRule.objects.filter(enabled=True).order_by("priority", "id"):
        match = rule_filter(rule, now)
        instances = Instance.objects.filter(match).exclude(earlier)
        if rule.basis == RuleBasis.ACCESSED_WITHIN:
            # Promotion: ONLINE objects through the mover; NEARLINE ones come back by their restore.
            instances = instances.filter(availability=Availability.ONLINE).exclude(restoring)
        else:
            instances = instances.exclude(recently_restored)
        yield rule, instances
        earlier |= match
