"""The worklist in real Chromium against a live server: filtering, sorting, saving, claiming, live arrivals.

Each reader is signed in through a session cookie that already passed MFA.
Every page is watched for script errors and CSP violations (the page has no
inline script or style, and htmx runs without eval).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.dimse.listener import DicomListener
from archive.models import DicomDevice, Site
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Priority
from tests.conftest import stow
from tests.portal.worklist.conftest import signed_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROWS = "#worklist tbody tr.wl-row"


@pytest.fixture
def open_as(chromium: Any, live_server: Any) -> Iterator[Callable[[User], Any]]:
    """Opens the worklist in its own browser context for a user; every page is checked for problems at the end."""
    contexts: list[Any] = []
    pages: list[Any] = []

    def open_page(user: User) -> Any:
        cookie = signed_in(user).cookies[django_settings.SESSION_COOKIE_NAME]
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
        page.problems = []
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        page.on(
            "response",
            lambda r: (
                "/worklist/" in r.url and r.status >= 400 and r.status != 409 and page.problems.append(f"{r.status}")
            ),
        )
        page.on(
            "console",
            lambda m: "Content Security Policy" in m.text and page.problems.append(m.text),
        )
        page.goto("/")
        page.wait_for_selector("#worklist")
        page.wait_for_function("() => window.htmx !== undefined")
        contexts.append(context)
        pages.append(page)
        return page

    yield open_page
    problems = [p for page in pages for p in page.problems]
    for page in pages:
        page.goto("about:blank")  # stop polling and loading before the database is emptied
    time.sleep(0.5)  # requests already in the live server finish
    for context in contexts:
        context.close()
    assert not problems


def store(client: Client, count: int = 2, modality: str = "CT", **spec: Any) -> StudySpec:
    study = StudySpec(**spec)
    response = stow(client, make_series(study, modality, count=count, size=16))
    assert response.status_code == 200, response.content
    return study


def patient_ids(page: Any) -> list[str]:
    return page.locator(f"{ROWS} td.col-patient_id").all_inner_texts()


def wait_ids(page: Any, expected: list[str], timeout: float = 5000) -> None:
    page.wait_for_function(
        "(want) => JSON.stringify([...document.querySelectorAll('#worklist tbody tr.wl-row td.col-patient_id')]"
        ".map(td => td.textContent)) === JSON.stringify(want)",
        arg=expected,
        timeout=timeout,
    )


@pytest.fixture
def studies(upload_client: Client) -> dict[str, StudySpec]:
    made = {
        "ct": store(upload_client, patient_name="ALPHA^ANN", patient_id="B-CT", description="CT CHEST"),
        "mr": store(upload_client, modality="MR", patient_name="BRAVO^BEN", patient_id="B-MR", description="MR BRAIN"),
        "hostile": store(upload_client, patient_name="<img src=x onerror=alert(1)>^EVIL", patient_id="B-XSS"),
    }
    WorklistItem.objects.filter(patient_id="B-MR").update(priority=Priority.STAT)
    return made


def test_filtering_sorting_and_a_saved_worklist_in_a_real_browser(
    open_as: Callable[[User], Any], radiologist: User, studies: dict[str, StudySpec]
) -> None:
    team = Group.objects.create(name="night team")
    radiologist.groups.add(team)
    page = open_as(radiologist)
    assert patient_ids(page) == ["B-MR", "B-CT", "B-XSS"]  # STAT first, then by arrival
    assert page.locator(f"{ROWS}.stat td.col-patient_id").all_inner_texts() == ["B-MR"]

    page.fill("#f-q", "bravo")
    wait_ids(page, ["B-MR"])
    page.fill("#f-q", "")
    wait_ids(page, ["B-MR", "B-CT", "B-XSS"])
    page.fill("#f-modality", "CT")
    page.press("#f-modality", "Tab")
    wait_ids(page, ["B-CT", "B-XSS"])

    page.click("button.sort[data-sort=patient_id]")
    wait_ids(page, ["B-CT", "B-XSS"])
    page.click("button.sort[data-sort=patient_id]")
    wait_ids(page, ["B-XSS", "B-CT"])
    assert page.get_attribute("button.sort[data-sort=patient_id]", "aria-sort") == "descending"

    page.fill("#f-saved-name", "CT tonight")
    page.select_option("#f-share-with", label="Share with night team")
    page.click("#save-worklist")
    page.wait_for_url("**/worklist/?saved=*")
    page.wait_for_selector("#worklist")
    assert page.locator(".wl-saved a.current").inner_text() == "CT tonight (shared with night team)"
    assert page.input_value("#f-modality") == "CT"
    assert patient_ids(page) == ["B-XSS", "B-CT"]


def test_hostile_patient_names_stay_text(
    open_as: Callable[[User], Any], radiologist: User, studies: dict[str, StudySpec]
) -> None:
    page = open_as(radiologist)
    row = page.locator(f"#item-{WorklistItem.objects.get(patient_id='B-XSS').pk}")
    assert row.locator("td.col-patient").inner_text() == "<img src"  # the first component group of a name with "="
    assert page.locator("#worklist img").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("() => document.title") == "Worklist · Cloud PACS"


def test_a_claim_locks_the_study_for_everyone_live(
    open_as: Callable[[User], Any], radiologist: User, second_radiologist: User, studies: dict[str, StudySpec]
) -> None:
    first, second = open_as(radiologist), open_as(second_radiologist)
    item = WorklistItem.objects.get(patient_id="B-CT")
    row = f"#item-{item.pk}"
    first.click(f"{row} button.claim")
    first.wait_for_selector(f"{row} button.release")
    assert first.locator(f"{row} td.col-status").inner_text() == "In progress"
    started = time.monotonic()
    second.wait_for_selector(f"{row} .holder", timeout=3000)  # without a reload
    assert time.monotonic() - started < 2.5
    assert second.locator(f"{row} .holder").inner_text() == "Claimed by rad-one"
    assert second.locator(f"{row} button.claim").count() == 0
    # A second claim by URL is refused with the holder's name.
    refused = second.request.post(f"/worklist/items/{item.pk}/claim", headers={"X-CSRFToken": csrf(second)})
    assert refused.status == 409 and "claimed by rad-one" in refused.text()

    first.click(f"{row} button.release")
    second.wait_for_selector(f"{row} button.claim", timeout=3000)


def csrf(page: Any) -> str:
    return page.evaluate("() => JSON.parse(document.querySelector('.wl').getAttribute('hx-headers'))['X-CSRFToken']")


def test_the_keyboard_moves_between_rows_claims_and_opens(
    open_as: Callable[[User], Any], radiologist: User, studies: dict[str, StudySpec]
) -> None:
    page = open_as(radiologist)
    first, second = (WorklistItem.objects.get(patient_id=p) for p in ("B-MR", "B-CT"))
    page.focus(f"#item-{first.pk}")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("() => document.activeElement.id") == f"item-{second.pk}"
    page.keyboard.press("c")
    page.wait_for_selector(f"#item-{second.pk} button.release")
    assert WorklistItem.objects.get(pk=second.pk).claimed_by == radiologist
    page.focus(f"#item-{second.pk}")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/viewer/studies/{first.study_instance_uid}")


def test_paging_forward_and_back_with_the_pager_buttons(
    open_as: Callable[[User], Any], radiologist: User, studies: dict[str, StudySpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.worklist import listing

    monkeypatch.setattr(listing, "PAGE_SIZE", 1)  # the live server runs in this process
    page = open_as(radiologist)
    wait_ids(page, ["B-MR"])
    assert page.locator(".wl-pager .page-previous").count() == 0
    page.click(".wl-pager .page-next")
    wait_ids(page, ["B-CT"])
    page.click(".wl-pager .page-next")
    wait_ids(page, ["B-XSS"])
    assert page.locator(".wl-pager .page-next").count() == 0
    page.click(".wl-pager .page-previous")
    wait_ids(page, ["B-CT"])
    page.click(".wl-pager .page-previous")
    wait_ids(page, ["B-MR"])
    assert page.locator(".wl-pager .page-previous").count() == 0
    page.click(".wl-pager .page-next")
    wait_ids(page, ["B-CT"])
    page.click("#f-mine")  # a changed filter starts again from the first page
    page.click("#f-mine")
    wait_ids(page, ["B-MR"])


def test_opening_a_row_opens_the_viewer(
    open_as: Callable[[User], Any], radiologist: User, studies: dict[str, StudySpec]
) -> None:
    page = open_as(radiologist)
    item = WorklistItem.objects.get(patient_id="B-CT")
    page.click(f"#item-{item.pk} td.col-description")
    page.wait_for_url(f"**/viewer/studies/{item.study_instance_uid}")


@pytest.mark.parametrize("via", ["STOW-RS", "C-STORE"])
def test_a_new_study_appears_in_an_open_worklist_within_two_seconds(
    open_as: Callable[[User], Any],
    radiologist: User,
    upload_client: Client,
    general_site: Site,
    tmp_path: Path,
    via: str,
) -> None:
    page = open_as(radiologist)
    assert patient_ids(page) == []
    spec = StudySpec(patient_name="NEW^ARRIVAL", patient_id=f"LIVE-{via}")
    parts = make_series(spec, "CT", count=2, size=16)
    if via == "STOW-RS":
        assert stow(upload_client, parts).status_code == 200
        stored = time.monotonic()
    else:
        DicomDevice.objects.create(ae_title="CT1", host="127.0.0.1", site=general_site, may_store=True)
        paths = []
        for n, raw in enumerate(parts):
            (tmp_path / f"{n}.dcm").write_bytes(raw)
            paths.append(str(tmp_path / f"{n}.dcm"))
        listener = DicomListener("PACS", host="127.0.0.1", port=0)
        listener.start()
        try:
            done = subprocess.run(
                ["/usr/bin/storescu", "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(listener.port), *paths],
                capture_output=True,
                text=True,
                timeout=60,
            )
            stored = time.monotonic()
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            listener.stop()
    wait_ids(page, [f"LIVE-{via}"], timeout=2000)
    latency = time.monotonic() - stored
    print(f"\narrival to visible over {via}: {latency * 1000:.0f} ms")
    assert latency < 2.0
    assert page.locator(f"{ROWS} td.col-patient").inner_text() == "NEW, ARRIVAL"
