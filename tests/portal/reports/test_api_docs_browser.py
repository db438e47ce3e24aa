"""The API's documentation page in real Chromium: it lists the worklist and report endpoints under the strict CSP
(its script is a file of its own, no inline script or style), for a signed-in reader."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User

from tests.portal.reports.conftest import signed_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_docs_page_lists_the_worklist_and_report_endpoints_under_the_strict_csp(
    chromium: Any, live_server: Any, radiologist: User
) -> None:
    cookie = signed_in(radiologist).cookies[django_settings.SESSION_COOKIE_NAME]
    context = chromium.new_context(base_url=live_server.url)
    context.set_default_timeout(15000)
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
    page.on("console", lambda m: "Content Security Policy" in m.text and problems.append(m.text))
    try:
        response = page.goto("/api/docs/")
        assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_selector("text=Sign the report preliminary or final")
        shown = page.inner_text("#swagger-ui").replace("\u200b", "")
        for path in (
            "/api/worklist/items/",
            "/api/worklist/items/{study_uid}/claim",
            "/api/studies/{study_uid}/report/sign",
            "/api/studies/{study_uid}/report/addendum",
            "/api/report-templates/",
        ):
            assert path in shown
        page.goto("about:blank")
        time.sleep(0.3)
    finally:
        context.close()
    assert problems == []
