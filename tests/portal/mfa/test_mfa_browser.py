"""Password sign-in with TOTP in real Chromium: enrolment, challenge, sign-out, backup code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from audit.models import AuditEvent
from portal.accounts.roles import Role
from tests.mfa_support import PASSWORD, code_from_secret, user_with_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(chromium: Any, live_server: Any) -> Iterator[Any]:
    context = chromium.new_context(base_url=live_server.url)
    context.set_default_timeout(15000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def radiologist(transactional_db: Any) -> User:
    return user_with_role("dr-who", Role.RADIOLOGIST.value)


def sign_in(page: Any, username: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def sign_out(page: Any) -> None:
    page.click("#sign-out")
    page.wait_for_url("**/accounts/login/")


def test_it_enrols_challenges_and_signs_out_a_radiologist_in_a_real_browser(page: Any, radiologist: User) -> None:
    sign_in(page, "dr-who")
    assert "/mfa/enrol/" in page.url
    qr = page.locator("img.qr")
    assert qr.evaluate("img => img.complete && img.naturalWidth > 100")
    secret = page.inner_text("#totp-secret")

    page.fill("#code", code_from_secret(secret))
    page.click("button:has-text('Confirm')")
    page.wait_for_url("**/mfa/backup-codes/**")
    codes = page.locator("#backup-codes li").all_inner_texts()
    assert len(codes) == 10
    page.click("#continue")
    page.wait_for_url(lambda url: url.endswith("/"))
    assert page.inner_text("#wl-user") == "dr-who"  # a radiologist's home is the worklist

    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["sessionid"]["secure"] and cookies["sessionid"]["httpOnly"]

    sign_out(page)
    sign_in(page, "dr-who")
    assert "/mfa/verify/" in page.url
    page.goto("/mfa/")
    assert "/mfa/verify/" in page.url
    page.fill("#code", code_from_secret(secret, steps_ahead=1))
    page.click("button:has-text('Verify')")
    page.wait_for_url("**/mfa/")
    assert page.inner_text("#backup-codes-left") == "10"
    assert page.request.get("/dicom-web/studies").status != 403

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"mfa_enrol", "mfa_verify"} <= actions


def test_it_lets_a_radiologist_in_with_a_backup_code_once(page: Any, radiologist: User) -> None:
    sign_in(page, "dr-who")
    secret = page.inner_text("#totp-secret")
    page.fill("#code", code_from_secret(secret))
    page.click("button:has-text('Confirm')")
    page.wait_for_url("**/mfa/backup-codes/**")
    code = page.locator("#backup-codes li").first.inner_text()
    page.goto("/")
    sign_out(page)

    sign_in(page, "dr-who")
    page.fill("#code", code)
    page.click("button:has-text('Verify')")
    page.wait_for_url(lambda url: url.endswith("/"))
    assert page.inner_text("#wl-user") == "dr-who"  # a radiologist's home is the worklist
    page.goto("/mfa/")
    assert page.inner_text("#backup-codes-left") == "9"
    sign_out(page)

    sign_in(page, "dr-who")
    page.fill("#code", code)
    page.click("button:has-text('Verify')")
    assert "/mfa/verify/" in page.url
    assert "not valid" in page.inner_text("[role=alert]")
    assert AuditEvent.objects.filter(action="mfa_backup_code_used").count() == 1
    assert AuditEvent.objects.filter(action="mfa_failed").count() == 1
