"""The technologist's QC list in real Chromium: landing on it, QC passed, QC failed with a reason.

The page is watched for script errors and CSP violations (no inline script or
style; htmx runs without eval).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Status
from tests.conftest import role_user, stow
from tests.portal.worklist.conftest import signed_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tech_page(chromium: Any, live_server: Any, general_site: Any) -> Iterator[Any]:
    user: User = role_user("tech-b", Role.TECHNOLOGIST, general_site)
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
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: "Content Security Policy" in m.text and problems.append(m.text))
    page.on(
        "response",
        lambda r: "/worklist/" in r.url and r.status >= 400 and r.status != 400 and problems.append(f"{r.status}"),
    )
    yield page
    page.goto("about:blank")
    context.close()
    assert not problems


def test_a_technologist_lands_on_the_qc_list_and_judges_two_studies(
    tech_page: Any, upload_client: Client, settings: Any
) -> None:
    settings.PACS_WORKLIST_AUTO_READY = False
    for pid, name in (("QC-OLD", "OLD^ONE"), ("QC-NEW", "<img src=x onerror=alert(1)>^EVIL")):
        study = StudySpec(patient_id=pid, patient_name=name)
        assert stow(upload_client, make_series(study, "CT", count=1, size=16)).status_code == 200
    page = tech_page
    page.goto("/")
    page.wait_for_selector("#qc-list")
    page.wait_for_function("() => window.htmx !== undefined")
    assert page.locator("#qc-list td.col-patient_id").all_inner_texts() == ["QC-NEW", "QC-OLD"]
    assert page.locator("#qc-list img").count() == 0  # the hostile name is text

    old, new = (WorklistItem.objects.get(patient_id=p) for p in ("QC-OLD", "QC-NEW"))
    page.click(f"#qc-{old.pk} button.qc-passed")
    page.wait_for_selector(f"#qc-{old.pk} .qc-done")
    assert WorklistItem.objects.get(pk=old.pk).status == Status.READY

    page.click(f"#qc-{new.pk} button.qc-failed")  # the browser asks for the required reason first
    assert WorklistItem.objects.get(pk=new.pk).status == Status.ARRIVED
    page.fill(f"#qc-{new.pk} input.qc-reason", "wrong protocol")
    page.click(f"#qc-{new.pk} button.qc-failed")
    page.wait_for_selector(f"#qc-{new.pk}.status-qc_failed")
    assert page.locator(f"#qc-{new.pk} td.col-status").inner_text() == "QC failed"
    event = AuditEvent.objects.filter(action="worklist_status", outcome="success").latest("pk")
    assert event.detail["reason"] == "wrong protocol"

    page.reload()
    page.wait_for_selector("#qc-list")
    assert page.locator("#qc-list td.col-patient_id").all_inner_texts() == ["QC-NEW"]


def test_a_technologist_corrects_a_patient_id_from_the_qc_list(
    tech_page: Any, upload_client: Client, settings: Any
) -> None:
    settings.PACS_WORKLIST_AUTO_READY = False
    study = StudySpec(patient_id="QC-WRONG", patient_name="WRONG^WANDA")
    assert stow(upload_client, make_series(study, "CT", count=2, size=16)).status_code == 200
    item = WorklistItem.objects.get(patient_id="QC-WRONG")
    page = tech_page
    page.goto("/")
    page.click(f"#qc-{item.pk} a.qc-correct")
    page.wait_for_selector("#correction-form")
    assert page.input_value("#id_PatientID") == "QC-WRONG"
    page.fill("#id_PatientID", "Q" * 65)
    page.fill("#id_reason", "wrong patient")
    page.click("#correction-save")
    page.wait_for_selector(".field-PatientID .field-error")
    assert page.inner_text(".field-PatientID .field-error") == "at most 64 characters"
    page.fill("#id_PatientID", "QC-RIGHT")
    page.fill("#id_PatientName", "<img src=x onerror=alert(1)>^ROSE")
    page.fill("#id_reason", "wrong patient")
    page.click("#correction-save")
    page.wait_for_selector("#correction-done")
    assert page.input_value("#id_PatientID") == "QC-RIGHT"
    assert page.locator("img").count() == 0
    page.click("#back-to-qc")
    page.wait_for_selector("#qc-list")
    assert page.locator(f"#qc-{item.pk} td.col-patient_id").inner_text() == "QC-RIGHT"
