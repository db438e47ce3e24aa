"""Reading in real Chromium against a live server: the viewer keeps the claim alive, and the keyboard types
the report, signs it (Ctrl+Enter, through the MFA re-prompt) and moves to the next and previous study.

The reader's session passed MFA at a time it does not record, so signing final asks for a code again.
Every page is watched for script errors and CSP violations.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.reports.models import Report, ReportVersion
from portal.worklist import claims
from portal.worklist.models import WorklistItem
from tests.mfa_support import code_from_hex_key
from tests.portal.worklist.conftest import signed_in
from tests.portal.worklist.test_worklist_browser import store

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def reader_page(chromium: Any, live_server: Any, radiologist: User) -> Iterator[Any]:
    cookie = signed_in(radiologist).cookies[django_settings.SESSION_COOKIE_NAME]
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 900})
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
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: "Content Security Policy" in m.text and problems.append(m.text))
    yield page
    page.goto("about:blank")
    time.sleep(0.5)
    context.close()
    assert not problems


def test_the_open_viewer_keeps_the_claim_alive_while_its_reader_works_and_a_closed_or_abandoned_one_lets_it_expire(
    reader_page: Any, upload_client: Client, radiologist: User, settings: Any
) -> None:
    settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS = 6  # a beat every second
    spec = store(upload_client, patient_name="BEAT^BEN", patient_id="HB-1")
    item = claims.claim(WorklistItem.objects.get(study_instance_uid=spec.study_uid), radiologist)
    page = reader_page
    beats: list[Any] = []
    page.on("response", lambda r: r.url.endswith("/heartbeat") and beats.append(r))
    page.goto(f"/viewer/studies/{spec.study_uid}")
    assert page.locator("#viewer").get_attribute("data-heartbeat-every") == "1"
    stale = timezone.now() - timedelta(seconds=2)  # still live: a beat refreshes it
    WorklistItem.objects.filter(pk=item.pk).update(claim_touched_at=stale)
    for _ in range(50):  # a beat comes every second or so (one in flight may have landed before the update)
        item.refresh_from_db()
        if item.claim_touched_at > stale:
            break
        page.wait_for_timeout(100)
    assert item.claim_touched_at > stale
    response = beats[-1]
    assert response.url.endswith(f"/worklist/studies/{spec.study_uid}/heartbeat")
    assert response.request.method == "POST" and response.status == 200
    assert response.request.headers["x-csrftoken"]
    for n in range(8):  # longer than the idle limit, the viewer open and its reader at work
        page.mouse.move(200 + 10 * n, 200)
        page.wait_for_timeout(1000)
    assert claims.expire_claims() == 0
    item.refresh_from_db()
    assert item.status == "in_progress" and timezone.now() - item.claim_touched_at < timedelta(seconds=4)

    page.goto("about:blank")  # the viewer is closed: the beats stop and the idle claim expires
    time.sleep(6.5)
    assert claims.expire_claims() == 1
    assert WorklistItem.objects.get(pk=item.pk).status == "ready"

    # The reader claims it again, opens the viewer and leaves the desk with it open: the beats stop once the
    # page was left untouched for the idle limit, and the claim expires one idle limit after the last beat.
    item = claims.claim(WorklistItem.objects.get(pk=item.pk), radiologist)
    page.goto(f"/viewer/studies/{spec.study_uid}")
    page.wait_for_timeout(4000)
    assert claims.expire_claims() == 0  # still beating: the page was opened 4 s ago
    page.wait_for_timeout(9000)
    assert claims.expire_claims() == 1
    assert WorklistItem.objects.get(pk=item.pk).status == "ready"


def test_the_keyboard_types_the_report_signs_it_through_the_mfa_re_prompt_and_moves_between_studies(
    reader_page: Any, upload_client: Client, radiologist: User
) -> None:
    specs = [store(upload_client, patient_name=f"KEY^{n}", patient_id=f"KB-{n}") for n in "ABC"]
    first, second, third = (s.study_uid for s in specs)
    claims.claim(WorklistItem.objects.get(study_instance_uid=first), radiologist)
    page = reader_page
    page.goto(f"/viewer/studies/{first}")
    findings = page.locator("#report-panel #rp-findings")
    findings.click()
    typed = "Lungs are well aerated, no pleural effusion. [1] ok"
    page.keyboard.type(typed)  # letters that are viewer shortcuts elsewhere stay in the report
    assert findings.input_value() == typed

    page.keyboard.press("Control+Enter")  # sign final: the stale second factor is asked again
    page.wait_for_url("**/mfa/verify/**")
    assert "fresh=1" in page.url
    page.locator("#code").fill(code_from_hex_key(TOTPDevice.objects.get(user=radiologist).key))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"**/reports/studies/{first}/")
    assert Report.objects.get(study_instance_uid=first).findings == typed  # saved on the way, not yet signed
    page.locator("#rp-impression").click()
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#report-addendum")
    assert page.locator("#report-status").inner_text() == "Final"
    assert ReportVersion.objects.get(report__study_instance_uid=first).status == "final"

    page.goto(f"/viewer/studies/{first}")
    page.wait_for_selector("#vw-next-study")
    page.locator("body").press("]")  # the signed study left the list to read: its next is the top of the list
    page.wait_for_url(f"**/viewer/studies/{second}")
    page.locator("body").press("]")
    page.wait_for_url(f"**/viewer/studies/{third}")
    page.locator("body").press("[")
    page.wait_for_url(f"**/viewer/studies/{second}")
    page.locator("body").press("[")  # nothing before it on the list: back to the worklist
    page.wait_for_url("**/worklist/")
