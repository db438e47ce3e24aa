"""The EHR launch end to end in Chromium: a test "EHR" server asks, the browser opens, the viewer shows.

The EHR is this test acting as the EHR's server: it calls ``POST
/api/ehr/launch`` over HTTP (requests) with its client secret or with an RS256
client assertion signed by a key generated here, and hands the launch URL to
the browser. The browser must land in the viewer with the first image drawn,
see nothing else (a search for another patient and another patient's study
from the same page are refused), keep no token in any history entry (read
through the DevTools protocol), and the server's logs must not contain it.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests

from archive.dicom.synthetic import StudySpec, make_series
from tests.conftest import stow
from tests.integrations.conftest import LAUNCH_PATH, Ehr, assertion_body, launch_body, token_of

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FIRST_FULL = "() => performance.getEntriesByName('viewer:first-full').length === 1"
FETCH = """async ([url]) => {
  const r = await fetch(url, { headers: { Accept: 'application/dicom+json' } });
  return [r.status, await r.text()];
}"""


@pytest.fixture
def other_patient(owner_client: Any) -> str:
    spec = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B2", accession="ACC-B2")
    assert stow(owner_client, make_series(spec, "CT", count=1)).status_code == 200
    return spec.study_uid


def history_urls(page: Any) -> list[str]:
    cdp = page.context.new_cdp_session(page)
    try:
        return [entry["url"] for entry in cdp.send("Page.getNavigationHistory")["entries"]]
    finally:
        cdp.detach()


def ehr_asks(live_server: Any, ehr: Ehr, body: dict[str, Any], signed: bool) -> str:
    """The EHR's server calls us over HTTP and gets a launch URL."""
    url = live_server.url + LAUNCH_PATH
    if signed:
        response = requests.post(url, json=assertion_body(ehr, url, body), timeout=10)
    else:
        response = requests.post(url, json=body, auth=(ehr.client_id, ehr.secret), timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["launch_url"])


@pytest.mark.parametrize("signed", [False, True], ids=["client secret", "signed assertion"])
def test_a_clinician_clicks_in_the_ehr_and_sees_that_study_and_nothing_else(
    page: Any,
    live_server: Any,
    request: pytest.FixtureRequest,
    site_a_study: dict[str, Any],
    other_patient: str,
    caplog: pytest.LogCaptureFixture,
    signed: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    ehr: Ehr = request.getfixturevalue("jwt_ehr" if signed else "ehr")
    launch_url = ehr_asks(live_server, ehr, launch_body([site_a_study["study"]]), signed)
    token = token_of(launch_url)
    seen: list[tuple[str, str, str]] = []
    page.on("request", lambda r: seen.append((r.url, r.headers.get("referer", ""), r.post_data or "")))

    page.goto(launch_url)
    page.wait_for_url(f"**/viewer/studies/{site_a_study['study']}")
    page.wait_for_function(FIRST_FULL, timeout=15000)
    assert page.url == f"{live_server.url}/viewer/studies/{site_a_study['study']}"

    # The token crossed the wire once, in one POST body; never in a URL or a Referer.
    assert [u for u, _, body in seen if token in body] == [f"{live_server.url}/ehr/launch/{ehr.client_id}"]
    assert not [u for u, referer, _ in seen if token in u or token in referer]
    assert not [u for u in history_urls(page) if token in u or "/ehr/launch" in u]
    assert not [r for r in caplog.records if token in r.getMessage()]

    # The same browser sees nothing else: no search, no other patient's study.
    status, _ = page.evaluate(FETCH, ["/dicom-web/studies?PatientID=PAT-B2"])
    assert status == 403
    status, text = page.evaluate(FETCH, [f"/dicom-web/studies/{other_patient}/series"])
    assert (status, text) in ((404, text), (200, "[]"), (204, ""))
    status, _ = page.evaluate(FETCH, [f"/dicom-web/studies/{site_a_study['study']}/series"])
    assert status == 200
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_launch_link_opened_twice_shows_what_happened_and_opens_nothing(
    page: Any, live_server: Any, ehr: Ehr, site_a_study: dict[str, Any]
) -> None:
    launch_url = ehr_asks(live_server, ehr, launch_body([site_a_study["study"]]), signed=False)
    page.goto(launch_url)
    page.wait_for_url("**/viewer/studies/**")
    second = page.context.browser.new_context()
    try:
        other = second.new_page()
        other.goto(launch_url)
        other.wait_for_url("**/ehr/launch/problem/used")
        assert other.locator("#ehr-problem").inner_text() == "This launch link was already used"
        assert token_of(launch_url) not in " ".join(history_urls(other))
        status, _ = other.evaluate(FETCH, [f"/dicom-web/studies/{site_a_study['study']}/series"])
        assert status == 401
    finally:
        second.close()


def test_a_tampered_link_shows_its_page_and_the_images_wait_page_refreshes_itself(
    page: Any, live_server: Any, ehr: Ehr, general_site: Any
) -> None:
    launch_url = ehr_asks(live_server, ehr, launch_body(accessions=["ACC-LATE"]), signed=False)
    page.goto(launch_url[:-3] + "xyz")
    page.wait_for_url("**/ehr/launch/problem/tampered")
    assert "altered" in page.content()
    page.goto(launch_url)
    page.wait_for_url("**/ehr/waiting")
    assert page.locator("#ehr-waiting").inner_text() == "Images not yet available"
    assert page.locator('meta[http-equiv="refresh"]').get_attribute("content") == "10"
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_browser_that_refuses_cookies_gets_a_page_saying_so_and_the_link_stays_unused(
    page: Any, live_server: Any, ehr: Ehr, site_a_study: dict[str, Any]
) -> None:
    from integrations.models import EhrLaunch

    launch_url = ehr_asks(live_server, ehr, launch_body([site_a_study["study"]]), signed=False)

    def without_cookies(route: Any) -> None:  # the launch page's CSRF cookie is never stored
        if route.request.method != "GET":
            route.fallback()
            return
        response = route.fetch()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "set-cookie"}
        page.context.clear_cookies()  # route.fetch() shares the context's cookie jar
        route.fulfill(response=response, headers=headers)

    page.route("**/ehr/launch/**", without_cookies)
    page.goto(launch_url)
    page.wait_for_url("**/ehr/launch/problem/failed")
    assert "cookies may be blocked" in page.content()
    assert EhrLaunch.objects.get().consumed_at is None


def test_the_api_docs_page_renders_the_launch_under_the_strict_csp(page: Any, live_server: Any, reader: Any) -> None:
    from django.conf import settings as django_settings
    from django.test import Client

    client = Client()
    client.force_login(reader)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    page.context.add_cookies(
        [
            {
                "name": cookie.key,
                "value": cookie.value,
                "url": live_server.url,
                "httpOnly": True,
                "sameSite": "Lax",
                "secure": bool(django_settings.SESSION_COOKIE_SECURE),
            }
        ]
    )
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector("text=Get a one-time launch URL")
    assert "/ehr/launch" in page.inner_text("#swagger-ui").replace("\u200b", "")
    assert page.problems == []  # type: ignore[attr-defined]
