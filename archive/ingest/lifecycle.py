"""Lifecycle rules: which instances should now be on which tier, decided by the database, not by a Python loop.

Each enabled :class:`~archive.models.LifecycleRule` is a filter (age since
receipt, site, modality, body part, study description) and a target tier.
When several rules match an instance, the first by priority decides, so rule
*k* selects what it matches and no earlier rule matches. Each rule becomes
one ``INSERT … SELECT`` of ledger rows (:func:`archive.ingest.mover.plan_moves`)
over instances not already on its target and not already moving: evaluating
the rules over the whole index is a handful of SQL statements whatever its
size. Age counts from receipt (``Study.created_at``): reads do not record
access yet, so "since last access" is not offered. An object restored from an
archive tier (:mod:`archive.ingest.restore`) in the last
``PACS_RESTORE_HOLD_DAYS`` days is left where it is, so a study someone just
asked for is not sent back to the archive by the next evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from archive.ingest.mover import plan_moves
from archive.models import Instance, LifecycleRule, Restore, RestoreState


@dataclass
class RulePlan:
    rule: LifecycleRule
    batch: str
    planned: int


def rule_filter(rule: LifecycleRule, now: datetime) -> Q:
    """The instances ``rule`` matches, as one condition on the instance table and its joins."""
    old_enough = Q(series__study__created_at__lte=now - timedelta(days=rule.after_days))
    return old_enough & Q(series__study__trashed_at__isnull=True) & rule_scope(rule)


def rule_scope(rule: LifecycleRule, series: str = "series__") -> Q:
    """The instances ``rule`` matches once they are old enough (its filters without the age).

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
    return q


def apply_rules(now: datetime | None = None, actor: str = "lifecycle") -> list[RulePlan]:
    """Plan the moves every enabled rule asks for now; the mover carries them out."""
    now = now or timezone.now()
    earlier = Q(pk__in=[])  # matches nothing
    recently_restored = Q(
        pk__in=Restore.objects.filter(
            state=RestoreState.DONE, done_at__gte=now - timedelta(days=settings.PACS_RESTORE_HOLD_DAYS)
        ).values("instance_id")
    )
    plans = []
    for rule in LifecycleRule.objects.filter(enabled=True).order_by("priority", "id"):
        match = rule_filter(rule, now)
        instances = Instance.objects.filter(match).exclude(earlier).exclude(recently_restored)
        batch, planned = plan_moves(instances, rule.target_tier, actor=actor)
        plans.append(RulePlan(rule, batch, planned))
        earlier |= match
    return plans
