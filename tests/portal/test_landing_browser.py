"""The referring clinician's "My studies" and the operations page in real Chromium, watched for CSP violations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User

from portal.accounts.roles import Role
from portal.models import UserProfile
from portal.reports.models import ReportStatus
from tests.conftest import role_user
from tests.portal.test_landing import HOSTILE, make_study, sign_report
from tests.portal.worklist.conftest import signed_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def open_as(chromium: Any, live_server: Any) -> Iterator[Callable[[User], Any]]:
    """A function opening a Chromium page signed in as a user; fails the test on any script error or CSP report."""
    problems: list[str] = []
    contexts: list[Any] = []

    def open_page(user: User) -> Any:
        cookie = signed_in(user).cookies[django_settings.SESSION_COOKIE_NAME]
        context = chromium.new_context(base_url=live_server.url)
        context.set_default_timeout(10000)
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
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: "Content Security Policy" in m.text and problems.append(m.text))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not problems


def test_a_clinician_lands_on_my_studies_with_no_csp_violation(open_as: Callable[[User], Any]) -> None:
    clinician = role_user("clinician-b", Role.REFERRING_CLINICIAN)
    UserProfile.objects.update_or_create(user=clinician, defaults={"dicom_person_name": "WELBY^MARCUS"})
    final = make_study("B-FINAL", date="20260105", referring="WELBY^MARCUS")
    sign_report(final, ReportStatus.FINAL)
    prelim = make_study("B-PRELIM", name=HOSTILE, date="20260104", referring="WELBY^MARCUS")
    sign_report(prelim, ReportStatus.PRELIMINARY)
    make_study("B-OTHER", date="20260106", referring="KILDARE^JAMES")

    page = open_as(clinician)
    page.goto("/")
    page.wait_for_selector("#my-studies")
    assert page.locator("#my-studies td.col-patient_id").all_inner_texts() == ["B-FINAL", "B-PRELIM"]
    assert page.locator("#my-studies td.col-report").all_inner_texts() == ["Final", "Not reported yet"]
    assert page.locator("#my-studies img").count() == 0  # the hostile name is text
    assert page.evaluate("getComputedStyle(document.querySelector('main.account')).maxWidth") == "1152px"
    page.click("#my-studies a.print-report")
    page.wait_for_load_state()
    assert page.url.endswith(f"/reports/studies/{final.study_instance_uid}/print")
    page.goto("/?home")
    page.wait_for_selector("#link-studies")
    page.click("#link-studies")
    page.wait_for_selector("#my-studies")


def test_an_administrator_lands_on_the_operations_page_with_no_csp_violation(
    open_as: Callable[[User], Any], admin_user: User
) -> None:
    page = open_as(admin_user)
    page.goto("/")
    page.wait_for_selector("#ops-worklist")
    assert page.inner_text("#last-verification") == "No verification of the chain is recorded."
    page.click("#link-admin")
    page.wait_for_selector("#content")
