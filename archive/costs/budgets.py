"""Budgets: compare each budget's projected monthly cost with its limit, and alert once per crossing.

:func:`check_budgets` is called by the cost page and ``manage.py tiers
status`` (and can be run from cron through the latter). A budget whose
projection ``horizon_months`` ahead is over its limit and that has not
alerted yet claims the alert with one conditional ``UPDATE`` (so two page
views at once alert once), then writes ``budget-alert`` to the audit trail in
the same transaction and, after commit, e-mails the budget's addresses
through Django's e-mail backend. When the projection falls back under the
limit the budget is re-armed (``budget-clear`` in the trail).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from archive.costs.projection import days
from archive.costs.usage import CostReport
from archive.models import Budget
from audit.trail import record

log = logging.getLogger(__name__)


@dataclass
class BudgetStatus:
    budget: Budget
    projected: Decimal
    over: bool
    alerted_now: bool  # this check raised the alert

    @property
    def share(self) -> float:
        """The projection as a share of the limit (for the bar in the page)."""
        limit = float(self.budget.monthly_limit)
        return float(self.projected) / limit if limit else (1.0 if self.projected else 0.0)

    @property
    def bar_width(self) -> float:
        """The filled part of the page's 120-pixel bar (full at or over the limit)."""
        return round(120 * min(1.0, self.share), 1)


def cents(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def projected_cost(report: CostReport, budget: Budget) -> Decimal:
    """The monthly storage cost of the budget's scope, ``horizon_months`` from the report's time (0: measured now)."""
    sites = report.sites_of(budget.site_id, budget.cost_tag)
    if budget.horizon_months == 0:
        return cents(report.monthly_now_of(sites))  # measured: where the data is today
    return cents(report.model(sites).monthly_storage(days(budget.horizon_months)))


def check_budgets(report: CostReport, actor: str = "cost-report") -> list[BudgetStatus]:
    """Each enabled budget against its projection; alert (audit, e-mail) those that just crossed their limit."""
    statuses = []
    for budget in Budget.objects.filter(enabled=True).select_related("site"):
        projected = projected_cost(report, budget)
        over = projected > budget.monthly_limit
        alerted = False
        if over and budget.alerted_at is None:
            alerted = alert(budget, projected, actor)
        elif not over and budget.alerted_at is not None:
            rearm(budget, projected, actor)
        statuses.append(BudgetStatus(budget, projected, over, alerted))
    return statuses


def alert(budget: Budget, projected: Decimal, actor: str) -> bool:
    """Raise the budget's alert unless another process just did; True if this call raised it."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Budget.objects.filter(pk=budget.pk, alerted_at__isnull=True).update(
            alerted_at=now, alerted_cost=projected
        )
        if not claimed:
            return False
        record(
            "budget-alert",
            actor=actor,
            outcome="failure",
            detail={
                "budget": budget.name,
                "scope": budget.scope,
                "monthly_limit": str(budget.monthly_limit),
                "projected": str(projected),
                "horizon_months": budget.horizon_months,
            },
        )
        recipients = budget.recipients()
        if recipients:
            transaction.on_commit(lambda: mail(budget, projected, recipients))
    budget.alerted_at, budget.alerted_cost = now, projected
    return True


def rearm(budget: Budget, projected: Decimal, actor: str) -> None:
    with transaction.atomic():
        if Budget.objects.filter(pk=budget.pk, alerted_at__isnull=False).update(alerted_at=None, alerted_cost=None):
            record(
                "budget-clear",
                actor=actor,
                detail={"budget": budget.name, "scope": budget.scope, "projected": str(projected)},
            )
    budget.alerted_at = budget.alerted_cost = None


def mail(budget: Budget, projected: Decimal, recipients: list[str]) -> None:
    when = "now" if budget.horizon_months == 0 else f"in {budget.horizon_months} months"
    subject = f"Storage budget {' '.join(budget.name.split())!r} will be exceeded"  # one line, whatever was typed
    body = (
        f"The projected monthly storage cost of {budget.scope} {when} is {projected}, "
        f"over the budget of {budget.monthly_limit} a month.\n\n"
        "The storage cost page in the admin shows where the data is and what the lifecycle rules will move.\n"
    )
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
    except OSError as exc:  # the alert stands in the trail and the page; a mail server down is logged
        log.warning("budget alert e-mail for %s not sent: %s", budget.pk, exc)
