"""The report in real Chromium against a live server: a draft autosaved from the panel beside the viewer, a
conflict shown with both texts, signing final through the MFA re-prompt, and an addendum.

The reader's session passed MFA an hour ago, so signing final asks for a new code. Every page is watched
for script errors and CSP violations (no inline script or style anywhere).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from archive.dicom.synthetic import StudySpec, make_series
from portal.reports.models import Report, ReportVersion
from portal.worklist import claims
from portal.worklist.models import WorklistItem
from tests.conftest import stow
from tests.mfa_support import code_from_hex_key
from tests.portal.reports.conftest import signed_in
from tests.portal.reports.helpers import save

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"


@pytest.fixture
def page(chromium: Any, live_server: Any, radiologist: User) -> Iterator[Any]:
    cookie = signed_in(radiologist, mfa_age=3600).cookies[django_settings.SESSION_COOKIE_NAME]
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 900})
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
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.on("console", lambda m: "Content Security Policy" in m.text and problems.append(m.text))
    yield tab
    tab.goto("about:blank")
    time.sleep(0.5)
    context.close()
    assert not problems


def test_a_draft_from_the_viewer_panel_a_conflict_signing_final_with_the_mfa_re_prompt_and_an_addendum(
    page: Any, upload_client: Client, radiologist: User, admin_user: User
) -> None:
    spec = StudySpec(patient_name="BROWSER^BEA", patient_id="RB-1")
    assert stow(upload_client, make_series(spec, "CT", count=2, size=16)).status_code == 200
    uid = spec.study_uid
    claims.claim(WorklistItem.objects.get(study_instance_uid=uid), radiologist)

    page.goto(f"/viewer/studies/{uid}")
    findings = page.locator("#report-panel #rp-findings")
    findings.fill("Lungs clear. " + HOSTILE)
    page.wait_for_function("() => document.querySelector('#report-saved').textContent === 'Draft saved'")
    report = Report.objects.get(study_instance_uid=uid)
    assert report.version == 2 and report.findings == "Lungs clear. " + HOSTILE

    # Another editor (an administrator) saves in between: the next autosave gets 409 and shows both texts.
    admin = signed_in(admin_user)
    assert save(admin, uid, 2, findings="Administrator's findings.").status_code == 200
    findings.fill("Lungs clear, my second thought.")
    conflict = page.locator("#report-panel #report-conflict")
    conflict.wait_for(state="visible")
    assert "Administrator's findings." in conflict.locator("td.theirs").all_inner_texts()
    assert "Lungs clear, my second thought." in conflict.locator("td.yours").all_inner_texts()
    assert Report.objects.get(study_instance_uid=uid).findings == "Administrator's findings."

    # Continue on the report page from the saved text, then sign final: the stale second factor is asked again.
    page.goto(f"/reports/studies/{uid}/")
    assert page.locator("#rp-findings").input_value() == "Administrator's findings."
    page.locator("#rp-impression").fill("Normal chest. " + HOSTILE)
    page.locator("button.sign-final").click()
    page.wait_for_url("**/mfa/verify/**")
    assert "recent second factor" in page.content()
    device = TOTPDevice.objects.get(user=radiologist)
    page.locator("#code").fill(code_from_hex_key(device.key))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"**/reports/studies/{uid}/")
    assert Report.objects.get(study_instance_uid=uid).status == "draft"
    page.locator("button.sign-final").click()
    page.wait_for_selector("#report-addendum")
    assert page.locator("#report-status").inner_text() == "Final"
    assert page.locator("#report-editor").count() == 0  # a final report is no longer editable
    final = ReportVersion.objects.get()
    assert final.status == "final" and final.impression == "Normal chest. " + HOSTILE

    page.locator("#rp-addendum").fill("Addendum: nodule is 4 mm.")
    page.locator("button.amend").click()
    page.wait_for_selector("li.rp-version.status-amended")
    assert page.locator("#report-status").inner_text() == "Amended"
    assert "(amends version 1)" in page.locator(".rp-history").inner_text()
    assert page.evaluate("() => window.pwned") is None  # the hostile text never ran

    page.goto(f"/reports/studies/{uid}/print")
    assert HOSTILE in page.locator(".rp-print").inner_text()
    assert "Addendum: nodule is 4 mm." in page.locator(".rp-addendum").inner_text()
    assert page.evaluate("() => window.pwned") is None
