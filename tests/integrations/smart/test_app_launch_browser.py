"""SMART App Launch end to end in Chromium: the EHR (a real oidc-provider) launches, the clinician signs in there,
consents, and lands in our viewer on the patient's study, seeing nothing else; the authorization code is in no
history entry, no Referer and no log record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from archive.dicom.synthetic import StudySpec, make_series
from integrations.models import EhrIntegration
from tests.conftest import stow
from tests.integrations.smart.conftest import AUDIENCE, CLIENTS, PACS_SECRET, PATIENTS, SYSTEM
from tests.integrations.smart.ehr import LOGIN, PASSWORD, EhrServer, start_ehr
from tests.integrations.test_ehr_launch_browser import FETCH, FIRST_FULL, history_urls

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def browser_ehr(live_server: Any) -> Iterator[EhrServer]:
    """An EHR whose registration of this archive names the live server's callback."""
    clients = [
        {**c, "redirect_uris": [f"{live_server.url}/smart/callback"]} if c["client_id"] == "pacs" else c
        for c in CLIENTS
    ]
    server = start_ehr(AUDIENCE, clients, PATIENTS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registered(browser_ehr: EhrServer, general_site: Any) -> EhrIntegration:
    integration = EhrIntegration.objects.create(
        name="SMART EHR (browser)",
        client_id="smart-ehr-browser",
        smart_fhir_base=browser_ehr.fhir,
        smart_client_id="pacs",
        smart_client_secret=PACS_SECRET,
        smart_patient_system=SYSTEM,
    )
    integration.sites.add(general_site)
    return integration


def test_a_clinician_launches_the_viewer_from_the_ehr_with_smart_and_sees_that_patient_only(
    page: Any,
    live_server: Any,
    browser_ehr: EhrServer,
    registered: EhrIntegration,
    site_a_study: dict[str, Any],
    owner_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    other = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B2", accession="ACC-B2")
    assert stow(owner_client, make_series(other, "CT", count=1)).status_code == 200
    seen: list[tuple[str, str]] = []
    page.on("request", lambda r: seen.append((r.url, r.headers.get("referer", ""))))

    launch = browser_ehr.launch("pa")
    page.goto(f"{live_server.url}/smart/launch?" + urlencode({"iss": browser_ehr.fhir, "launch": launch}))
    page.fill("#idp-login", LOGIN)
    page.fill("#idp-password", PASSWORD)
    page.click("#idp-submit")
    page.click("#idp-allow")
    page.wait_for_url(f"**/viewer/studies/{site_a_study['study']}")
    page.wait_for_function(FIRST_FULL, timeout=15000)

    callbacks = [u for u, _ in seen if "/smart/callback?" in u]
    assert len(callbacks) == 1 and "code=" in callbacks[0]
    code = callbacks[0].split("code=", 1)[1].split("&", 1)[0]
    assert not [u for u, referer in seen if code in referer]
    assert not [u for u in history_urls(page) if code in u or "/smart/callback" in u]
    assert not [r for r in caplog.records if code in r.getMessage() + str(r.args)]

    status, text = page.evaluate(FETCH, [f"/dicom-web/studies/{other.study_uid}/series"])
    assert (status, text) in ((404, text), (200, "[]"), (204, ""))  # as the server-to-server launch's test
    status, _ = page.evaluate(FETCH, ["/dicom-web/studies?PatientID=PAT-B2"])
    assert status == 403
    status, _ = page.evaluate(FETCH, [f"/dicom-web/studies/{site_a_study['study']}/series"])
    assert status == 200
    assert page.problems == []  # type: ignore[attr-defined]
