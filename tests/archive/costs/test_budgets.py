"""Budgets: an alert when the projection crosses the limit, once per crossing, in the trail and by e-mail."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from archive.costs.budgets import check_budgets, projected_cost
from archive.costs.usage import cost_report
from archive.models import Budget, LifecycleRule, Site
from audit.models import AuditEvent
from audit.trail import verify_chain
from tests.archive.costs.conftest import NOW, make_study

pytestmark = pytest.mark.django_db


def test_a_budget_alerts_once_per_crossing_in_the_trail_and_by_mail(
    known_archive: tuple[Site, Site], django_capture_on_commit_callbacks: Any
) -> None:
    site_a = known_archive[0]
    budget = Budget.objects.create(
        name="General storage", site=site_a, monthly_limit=Decimal("0.01"), horizon_months=0, notify="cfo@example.org"
    )
    # Site A now: 1.5 GB on hot at 0.02 and 0.5 GB stored on cold at 0.004 = 0.032 a month.
    assert projected_cost(cost_report(now=NOW), budget) == Decimal("0.03")

    for _ in range(3):  # three page views: one alert
        with django_capture_on_commit_callbacks(execute=True):
            [status] = check_budgets(cost_report(now=NOW))
        assert status.over
    alerts = AuditEvent.objects.filter(action="budget-alert")
    assert alerts.count() == 1
    assert alerts.get().detail == {
        "budget": "General storage",
        "scope": "site a",
        "monthly_limit": "0.01",
        "projected": "0.03",
        "horizon_months": 0,
    }
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["cfo@example.org"]
    assert mail.outbox[0].subject == "Storage budget 'General storage' will be exceeded"
    assert "site a now is 0.03" in mail.outbox[0].body
    budget.refresh_from_db()
    assert budget.alerted_cost == Decimal("0.03")

    Budget.objects.filter(pk=budget.pk).update(monthly_limit=Decimal("1.00"))  # back under: re-armed
    [status] = check_budgets(cost_report(now=NOW))
    assert not status.over
    assert AuditEvent.objects.filter(action="budget-clear").count() == 1
    assert Budget.objects.get(pk=budget.pk).alerted_at is None

    Budget.objects.filter(pk=budget.pk).update(monthly_limit=Decimal("0.02"))  # a second crossing
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            check_budgets(cost_report(now=NOW))
    assert AuditEvent.objects.filter(action="budget-alert").count() == 2
    assert len(mail.outbox) == 2
    assert verify_chain().ok


def test_a_budget_without_addresses_alerts_without_mail(
    known_archive: tuple[Site, Site], django_capture_on_commit_callbacks: Any
) -> None:
    Budget.objects.create(name="All", monthly_limit=Decimal("0.01"), horizon_months=0)
    with django_capture_on_commit_callbacks(execute=True):
        [status] = check_budgets(cost_report(now=NOW))
    assert status.over and status.alerted_now
    assert mail.outbox == []
    assert AuditEvent.objects.filter(action="budget-alert").count() == 1


def test_a_budget_looks_ahead_with_the_ingest_rate(known_archive: tuple[Site, Site]) -> None:
    # The research tag is site B: 1 GB of CT on hot, received in the window: 1/90 GB a day more.
    tagged = Budget.objects.create(name="Research", cost_tag="research", monthly_limit=Decimal("0.20"))
    report = cost_report(now=NOW)
    assert projected_cost(report, tagged) == Decimal(str(round((1 + 365 / 90) * 0.02, 2)))
    assert not check_budgets(report)[0].over
    tagged.horizon_months = 60
    tagged.save()
    # 60 months: 1 + 1825/90 GB on hot at 0.02 = 0.43
    [status] = check_budgets(cost_report(now=NOW))
    assert status.projected == Decimal("0.43") and status.over


def test_a_budget_is_for_a_site_or_a_tag_and_mails_real_addresses(sites: tuple[Site, Site]) -> None:
    with pytest.raises(ValidationError):
        Budget(name="x", site=sites[0], cost_tag="research", monthly_limit=1).full_clean()
    with pytest.raises(ValidationError) as caught:
        Budget(name="x", monthly_limit=1, notify="cfo@example.org\nnot an address").full_clean()
    assert "notify" in caught.value.message_dict


def test_a_site_of_a_tag_counts_only_its_own_studies(sites: tuple[Site, Site]) -> None:
    make_study(sites[0], 3)
    make_study(sites[1], 3, instances=4)
    report = cost_report(now=NOW)
    assert report.sites_of(cost_tag="research") == {sites[1].pk}
    assert report.ingest_of({sites[1].pk}).bytes == report.ingest.bytes * 2 // 3


def test_a_budget_for_now_counts_where_the_data_is_not_where_the_rules_will_put_it(
    known_archive: tuple[Site, Site],
) -> None:
    # A rule due on site B's CT (5 days old) that the mover has not carried out yet.
    LifecycleRule.objects.create(name="all to cold", after_days=1, target_tier="cold")
    budget = Budget.objects.create(name="B", site=known_archive[1], monthly_limit=Decimal("0.01"), horizon_months=0)
    report = cost_report(now=NOW)
    assert projected_cost(report, budget) == Decimal("0.02")  # 1 GB still on hot at 0.02
    assert report.monthly_now_of(None) == pytest.approx(report.monthly_now, rel=1e-12)
