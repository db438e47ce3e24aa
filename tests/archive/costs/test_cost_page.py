"""The storage cost page in the admin: who may open it, what it shows, how it escapes, what it costs to render."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from archive.ingest.lifecycle import apply_rules
from archive.ingest.mover import Mover
from archive.models import Budget, LifecycleRule, Site, Study
from audit.models import AuditEvent
from portal.accounts.groups import sync_staff_flag
from portal.accounts.roles import Role
from tests.archive.costs.conftest import EVIL_SITE, NOW, make_study, price_tiers
from tests.conftest import role_user
from tests.mfa_support import force_verified_login

pytestmark = pytest.mark.django_db

URL = "/admin/archive/budget/costs/"


@pytest.fixture
def admin_browser(admin_user: User, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    client = Client()
    force_verified_login(client, admin_user)
    return client


def test_the_page_shows_usage_projection_five_years_and_budgets(
    admin_browser: Client, known_archive: tuple[Site, Site]
) -> None:
    Budget.objects.create(name="Everything", monthly_limit=Decimal("0.01"), horizon_months=12)
    response = admin_browser.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(r'<tr id="cost-with-rules"><th>[^<]*</th><td>([^<]*)</td>', html)
    assert row is not None and row.group(1) == "0.05"  # 2.5 GB on hot at 0.02 + 0.5 GB stored on cold at 0.004
    assert re.search(r'<tr id="cost-hot-only"><th>[^<]*</th><td>0.07</td>', html)
    assert "0.06 studies/day × 0.500 GB a study × 365 / 1024 ≈ <strong>0.010 TB/year</strong>" in html
    assert html.count("<polyline") == 2  # with the rules, everything on hot
    assert len(re.findall(r"<tr><th>[1-5]</th>", html)) == 5  # the five-year table
    assert 'class="errornote budget-over"' in html
    assert AuditEvent.objects.filter(action="budget-alert").count() == 1
    assert AuditEvent.objects.filter(action="cost-view", outcome="success").count() == 1
    assert "style=" not in html.split('id="costs"')[1]  # the CSP allows no inline style
    assert "<script" not in html.split('id="costs"')[1]


def test_a_hostile_site_name_is_shown_as_text(admin_browser: Client, known_archive: tuple[Site, Site]) -> None:
    html = admin_browser.get(URL).content.decode()
    assert EVIL_SITE not in html
    assert "&lt;script&gt;alert(&quot;site&quot;)&lt;/script&gt;" in html


def test_the_budget_list_links_to_the_page(admin_browser: Client) -> None:
    html = admin_browser.get("/admin/archive/budget/").content.decode()
    assert f'href="{URL}" id="storage-costs-link"' in html


def test_people_without_the_permission_do_not_get_the_page(db: None, general_site: Site) -> None:
    auditor = role_user("auditor1", Role.AUDITOR)  # staff, but budgets are not theirs
    assert sync_staff_flag(auditor)
    client = Client()
    force_verified_login(client, auditor)
    assert client.get(URL).status_code == 403
    assert AuditEvent.objects.filter(action="cost-view", outcome="failure").count() == 1
    reader = role_user("reader1", Role.RADIOLOGIST, general_site)
    client = Client()
    force_verified_login(client, reader)
    response = client.get(URL)
    assert response.status_code == 302 and "/login" in response["Location"]
    assert Client().get(URL).status_code == 302


def test_the_page_takes_the_same_queries_whatever_the_archive_size(
    admin_browser: Client, known_archive: tuple[Site, Site]
) -> None:
    LifecycleRule.objects.create(name="CT to cold", after_days=30, modality="CT", target_tier="cold")
    Budget.objects.create(name="A", site=known_archive[0], monthly_limit=Decimal("100"))
    admin_browser.get(URL)  # sessions and permissions cached as on any later view
    with CaptureQueriesContext(connection) as small:
        assert admin_browser.get(URL).status_code == 200
    for age in range(1, 60):
        make_study(known_archive[age % 2], age, modality=["CT", "MR", "US"][age % 3], instances=7)
    with CaptureQueriesContext(connection) as large:
        assert admin_browser.get(URL).status_code == 200
    assert len(small) == len(large)


def test_ct_older_than_90_days_to_cold_makes_the_cost_page_drop(
    admin_user: User, ct_study: dict[str, Any], settings: Any
) -> None:
    """The issue's finish line: a rule, the mover, and a lower cost now and in the projection."""
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    price_tiers(hot="1000", cold="100")  # prices high enough to show on a small study
    Study.objects.update(created_at=timezone.now() - timedelta(days=120))
    client = Client()
    force_verified_login(client, admin_user)

    def costs() -> tuple[float, float]:
        html = client.get(URL).content.decode()
        cells = re.search(r'<tr id="cost-with-rules"><th>[^<]*</th><td>([^<]*)</td><td>([^<]*)</td>', html)
        assert cells is not None
        return float(cells.group(1).replace(",", "")), float(cells.group(2).replace(",", ""))

    now_before, in_12_before = costs()
    LifecycleRule.objects.create(name="CT older than 90 days", after_days=90, modality="CT", target_tier="cold")
    now_planned, in_12_planned = costs()
    assert now_planned == now_before  # nothing moved yet: the cost now is what is stored now
    assert in_12_planned < in_12_before  # the projection already follows the rule
    [plan] = apply_rules()
    report = Mover(plan.batch).run()
    assert report.moved == plan.planned > 0
    now_after, in_12_after = costs()
    assert now_after < now_before / 5  # a tenth of the price, and compressed
    assert in_12_after == pytest.approx(now_after)  # no ingest in the window: nothing more to come


def test_an_administrator_by_role_opens_the_page(db: None) -> None:
    call_command("setup_roles", verbosity=0)  # as make run does: the administrator role holds every permission
    boss = role_user("boss", Role.ADMINISTRATOR)
    assert sync_staff_flag(boss) and not boss.is_superuser
    client = Client()
    force_verified_login(client, boss)
    assert client.get(URL).status_code == 200
