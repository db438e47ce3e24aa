"""The storage cost page in real Chromium: it renders its SVG charts with no CSP violation and no script run.

The administrator is signed in through a session cookie that already passed
MFA. The page is watched for console CSP reports, script errors and dialogs
(a hostile site name that ran would open one).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from archive.models import Budget, LifecycleRule, Site
from tests.archive.costs.conftest import EVIL_SITE
from tests.mfa_support import force_verified_login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_cost_page_draws_its_charts_under_the_strict_csp(
    chromium: Any, live_server: Any, admin_user: User, known_archive: tuple[Site, Site]
) -> None:
    LifecycleRule.objects.create(name="CT to cold", after_days=30, modality="CT", target_tier="cold")
    Budget.objects.create(name=EVIL_SITE, monthly_limit=Decimal("0.00"))
    client = Client()
    force_verified_login(client, admin_user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    context = chromium.new_context(base_url=live_server.url)
    context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": cookie.value,
                "url": live_server.url,
                "secure": bool(django_settings.SESSION_COOKIE_SECURE),
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))
    page.on("console", lambda m: "Content Security Policy" in m.text and problems.append(m.text))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
    try:
        response = page.goto("/admin/archive/budget/costs/")
        assert response is not None and response.status == 200
        assert "style-src 'self'" in response.headers["content-security-policy"]
        assert page.locator("#cost-chart polyline").count() == 2
        assert page.locator("#tier-chart rect.bar").count() == 2
        # The stylesheet applied: the projection line has its stroke colour from costs.css.
        stroke = page.eval_on_selector("#cost-chart polyline.line-rules", "e => getComputedStyle(e).stroke")
        assert stroke == "rgb(42, 122, 176)"
        labels = page.locator("#site-chart text.label").all_text_contents()
        assert EVIL_SITE[:21] + "…" in labels  # the label, shortened, as text
        assert page.locator("#site-table td", has_text=EVIL_SITE).count() == 1
        assert page.locator("p.budget-over").count() == 1
        assert EVIL_SITE in page.locator("p.budget-over").inner_text()
        assert page.locator("img[src=x]").count() == 0
    finally:
        context.close()
    assert problems == []
