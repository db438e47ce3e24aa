"""The viewer in real Chromium against a live server: it speaks only DICOMweb.

Each test stores synthetic studies through STOW-RS, signs a user in (session
cookie), opens a page and checks what a person would see: a non-blank image
read back from the canvas, slices that change when scrolling, window/level
that changes pixels, a length in millimetres, a clip that plays, a hostile
patient name shown as text, and the search page leading to the viewer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from archive import access
from archive.dicom.synthetic import StudySpec, make_instance, make_series
from tests.conftest import stow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Sum, non-black count and distinct grey levels of the first viewport's canvas.
CANVAS_DIGEST = """(n) => {
  const c = document.querySelector(`.vw-viewport[data-viewport="${n}"] canvas`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let sum = 0, lit = 0; const levels = new Set();
  for (let i = 0; i < d.length; i += 4) { sum += d[i]; if (d[i] > 8) lit++; levels.add(d[i]); }
  return { sum, lit, levels: levels.size, total: d.length / 4 };
}"""
STATE = "(n) => { window.__viewer.updateStats(); return window.__viewerStats.viewports[n]; }"
FULL_AT = "([n, i]) => { const s = window.__viewer.updateStats().viewports[n]; return s && s.index === i && s.full; }"


@pytest.fixture(autouse=True)
def everyone_sees_everything(settings: Any) -> Iterator[None]:
    """Pin the simplest access policy; policy behaviour is tested where it lives."""
    settings.PACS_ACCESS_POLICY = "archive.access.AuthenticatedPolicy"
    access.policy.cache_clear()
    yield
    access.policy.cache_clear()


@pytest.fixture
def page(chromium: Any, live_server: Any, reader: User) -> Iterator[Any]:
    """A Chromium page signed in as ``reader`` through the session cookie."""
    client = Client()
    client.force_login(reader)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    context = chromium.new_context(viewport={"width": 1200, "height": 800})
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
    page.dialogs = []  # type: ignore[attr-defined]
    page.problems = []  # type: ignore[attr-defined]
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("console", lambda m: "Content Security Policy" in m.text and page.problems.append(m.text))
    yield page
    context.close()


# Set when the first lossless image is painted, on every page (a standard performance mark).
FIRST_FULL = "() => performance.getEntriesByName('viewer:first-full').length === 1"


def open_viewer(page: Any, live_server: Any, study: str, query: str = "") -> None:
    """Open a study with ``#bench``: the page then exposes ``window.__viewer`` and its counters."""
    page.goto(f"{live_server.url}/viewer/studies/{study}{query}#bench")
    page.wait_for_function("() => window.__viewerStats && window.__viewerStats.firstFull !== null", timeout=15000)


def digest(page: Any, n: int = 0) -> dict[str, int]:
    return page.evaluate(CANVAS_DIGEST, n)


@pytest.fixture
def ct(upload_client: Client) -> StudySpec:
    spec = StudySpec(patient_name="ROE^RICHARD", patient_id="VIEW-1", accession="VACC-1", description="CT THORAX")
    assert stow(upload_client, make_series(spec, "CT", count=6, size=96)).status_code == 200
    return spec


def test_it_opens_a_study_and_paints_a_lossless_non_blank_image(page: Any, live_server: Any, ct: StudySpec) -> None:
    open_viewer(page, live_server, ct.study_uid)
    pixels = digest(page)
    assert pixels["lit"] > pixels["total"] * 0.05
    assert pixels["levels"] >= 3
    assert page.evaluate("performance.getEntriesByName('viewer:first-image').length") == 1
    assert page.evaluate("performance.getEntriesByName('viewer:first-full').length") == 1
    assert page.locator(".vw-viewport[data-viewport='0'] .vw-fidelity").text_content() == "Lossless"
    overlay = page.locator(".vw-viewport[data-viewport='0']").inner_text()
    assert "ROE, RICHARD" in overlay and "ID: VIEW-1" in overlay and "Im: 1/6" in overlay
    page.wait_for_function("() => document.querySelector('.vw-set-progress').textContent === '6/6 loaded'")
    assert not page.problems


def test_scrolling_by_keyboard_and_wheel_changes_the_slice(page: Any, live_server: Any, ct: StudySpec) -> None:
    open_viewer(page, live_server, ct.study_uid)
    first = digest(page)
    page.locator(".vw-viewport[data-viewport='0']").click()
    page.keyboard.press("ArrowDown")
    page.wait_for_function(FULL_AT, arg=[0, 1])
    second = digest(page)
    assert second != first
    page.mouse.move(700, 400)
    page.mouse.wheel(0, 100)
    page.wait_for_function(FULL_AT, arg=[0, 2])
    page.keyboard.press("End")
    page.wait_for_function(FULL_AT, arg=[0, 5])
    assert "Im: 6/6" in page.locator(".vw-viewport[data-viewport='0'] .vw-ov-bl").inner_text()


def test_dragging_with_the_window_level_tool_changes_pixels_and_the_overlay(
    page: Any, live_server: Any, ct: StudySpec
) -> None:
    open_viewer(page, live_server, ct.study_uid)
    before = digest(page)
    assert "W: 400 L: 40" in page.locator(".vw-viewport[data-viewport='0'] .vw-ov-br").inner_text()
    box = page.locator(".vw-viewport[data-viewport='0']").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 80, steps=6)
    page.mouse.up()
    after = digest(page)
    assert after["sum"] != before["sum"]
    state = page.evaluate(STATE, 0)
    assert state["window"]["width"] > 400 and state["window"]["center"] > 40
    assert "W: 400 L: 40" not in page.locator(".vw-viewport[data-viewport='0'] .vw-ov-br").inner_text()


def test_a_ct_window_preset_is_applied_in_the_browser(page: Any, live_server: Any, ct: StudySpec) -> None:
    open_viewer(page, live_server, ct.study_uid)
    requests_before = page.evaluate("window.__viewer.client.requests")
    before = digest(page)
    page.select_option("#vw-preset", "lung")
    assert "W: 1500 L: -600" in page.locator(".vw-viewport[data-viewport='0'] .vw-ov-br").inner_text()
    assert digest(page) != before
    assert page.evaluate("window.__viewer.client.requests") == requests_before  # no round trip
    labels = page.eval_on_selector_all("#vw-preset option", "options => options.map((o) => o.textContent)")
    assert labels == [
        "Preset…",
        "1 Soft tissue",
        "2 Lung",
        "3 Bone",
        "4 Brain",
        "5 Abdomen",
        "6 Mediastinum",
        "7 Default",
        "Full range",
    ]  # the menu is built from presets.js, the one list the number keys use


@pytest.mark.parametrize(
    ("spacing", "start", "end", "expected"),
    [
        ([0.7, 0.7], (10, 20), (50, 20), "28.0 mm"),  # 40 columns x 0.7 mm
        ([0.5, 0.8], (10, 20), (50, 20), "32.0 mm"),  # along a row: column spacing (second value)
        ([0.5, 0.8], (20, 10), (20, 50), "20.0 mm"),  # along a column: row spacing (first value)
    ],
)
def test_a_length_measurement_reads_millimetres_from_pixel_spacing(
    page: Any,
    live_server: Any,
    upload_client: Client,
    spacing: list[float],
    start: tuple[int, int],
    end: tuple[int, int],
    expected: str,
) -> None:
    spec = StudySpec(patient_id="LEN-1")
    parts = make_series(spec, "CT", count=1, size=96, extra={"PixelSpacing": spacing})
    assert stow(upload_client, parts).status_code == 200
    open_viewer(page, live_server, spec.study_uid)
    page.keyboard.press("l")
    a = page.evaluate("([x, y]) => window.__viewer.viewports[0].toClient(x, y)", list(start))
    b = page.evaluate("([x, y]) => window.__viewer.viewports[0].toClient(x, y)", list(end))
    page.mouse.move(a["x"], a["y"])
    page.mouse.down()
    page.mouse.move(b["x"], b["y"], steps=5)
    page.mouse.up()
    assert page.locator("#measurements .vw-measure-value").all_text_contents() == [expected]


def test_a_roi_reports_the_mean_in_hounsfield_units(page: Any, live_server: Any, upload_client: Client) -> None:
    spec = StudySpec(patient_id="ROI-1")
    assert stow(upload_client, make_series(spec, "CT", count=1, size=128)).status_code == 200
    open_viewer(page, live_server, spec.study_uid)
    page.keyboard.press("o")
    # The synthetic CT has soft tissue (40 HU) between the lungs, around column 64, row 40.
    a = page.evaluate("() => window.__viewer.viewports[0].toClient(58, 40)")
    b = page.evaluate("() => window.__viewer.viewports[0].toClient(70, 48)")
    page.mouse.move(a["x"], a["y"])
    page.mouse.down()
    page.mouse.move(b["x"], b["y"], steps=4)
    page.mouse.up()
    text = page.locator("#measurements .vw-measure-value").text_content()
    assert text.startswith("mean 40.0 HU, SD 0.0 HU"), text


def test_a_multi_frame_ultrasound_clip_plays_as_cine(page: Any, live_server: Any, upload_client: Client) -> None:
    spec = StudySpec(patient_id="US-1", description="US ABDOMEN")
    assert stow(upload_client, [make_instance(spec, "US", frames=12, size=64)]).status_code == 200
    open_viewer(page, live_server, spec.study_uid)
    page.wait_for_function("() => window.__viewer.updateStats().viewports[0].loaded === 12")
    state = page.evaluate(STATE, 0)
    assert state["kind"] == "multiframe" and state["cine"] == 30  # (0018,0040) Cine Rate
    seen = {page.evaluate(STATE, 0)["index"]}
    for _ in range(20):
        page.wait_for_timeout(50)
        seen.add(page.evaluate(STATE, 0)["index"])
    assert len(seen) >= 3
    assert page.evaluate(STATE, 0)["cineShown"] > 0
    page.keyboard.press(" ")
    stopped = page.evaluate(STATE, 0)["index"]
    page.wait_for_timeout(200)
    assert page.evaluate(STATE, 0)["index"] == stopped


HOSTILE_NAME = "<script>alert(1)</script>^<b>bold</b>"
HOSTILE_DESCRIPTION = "<img src=x onerror=alert(2)>"


def test_a_patient_name_carrying_markup_is_shown_as_text(page: Any, live_server: Any, upload_client: Client) -> None:
    spec = StudySpec(patient_name=HOSTILE_NAME, patient_id="XSS-1", description=HOSTILE_DESCRIPTION)
    assert stow(upload_client, make_series(spec, "CT", count=1)).status_code == 200
    open_viewer(page, live_server, spec.study_uid)
    overlay = page.locator(".vw-viewport[data-viewport='0']")
    assert "<script>alert(1)</script>, <b>bold</b>" in overlay.inner_text()
    assert HOSTILE_DESCRIPTION in overlay.inner_text()
    assert overlay.locator("script, b, img").count() == 0
    page.goto(f"{live_server.url}/viewer/")
    page.wait_for_selector("#search-results tbody tr")
    row = page.locator(f"tr[data-study='{spec.study_uid}']")
    assert "<script>alert(1)</script>, <b>bold</b>" in row.inner_text()
    assert HOSTILE_DESCRIPTION in row.inner_text()
    assert page.locator("#search-results script, #search-results b, #search-results img").count() == 0
    page.wait_for_timeout(300)
    assert page.dialogs == []
    assert not page.problems


def test_the_search_page_finds_a_study_and_opens_the_viewer(page: Any, live_server: Any, upload_client: Client) -> None:
    wanted = StudySpec(patient_name="SMITH^ANNA", patient_id="SRCH-1", accession="A-77", study_date="20240301")
    other = StudySpec(patient_name="JONES^BOB", patient_id="SRCH-2", accession="A-78", study_date="20230301")
    for spec, modality in ((wanted, "MR"), (other, "CT")):
        assert stow(upload_client, make_series(spec, modality, count=2)).status_code == 200
    page.goto(f"{live_server.url}/viewer/")
    page.fill("#f-patient", "smith")
    page.click("#search-button")
    page.wait_for_function("() => document.getElementById('search-status').textContent === '1 study'")
    rows = page.locator("#search-results tbody tr")
    assert rows.count() == 1
    assert "SMITH, ANNA" in rows.first.inner_text()
    # The patient field also matches a Patient ID; dates and modality narrow the search.
    page.fill("#f-patient", "SRCH")
    page.select_option("#f-modality", "MR")
    page.click("#search-button")
    page.wait_for_function("() => document.getElementById('search-status').textContent === '1 study'")
    page.fill("#f-patient", "")
    page.select_option("#f-modality", "")
    page.fill("#f-from", "2023-01-01")
    page.fill("#f-to", "2023-12-31")
    page.click("#search-button")
    page.wait_for_function("() => document.getElementById('search-status').textContent === '1 study'")
    assert "JONES, BOB" in rows.first.inner_text()
    page.fill("#f-from", "")
    page.fill("#f-to", "")
    page.fill("#f-accession", "A-77")
    page.click("#search-button")
    page.wait_for_function("() => document.getElementById('search-status').textContent === '1 study'")
    rows.first.click()
    page.wait_for_url(f"**/viewer/studies/{wanted.study_uid}")
    page.wait_for_function(FIRST_FULL, timeout=15000)
    assert digest(page)["lit"] > 0
    assert not page.problems


def test_a_normal_viewer_page_keeps_no_benchmark_counters_and_no_global(
    page: Any, live_server: Any, ct: StudySpec
) -> None:
    # Count the page's interval timers (the counters used to be refreshed by one every 250 ms).
    page.add_init_script(
        "const every = window.setInterval; window.intervalsStarted = 0;"
        "window.setInterval = (...args) => { window.intervalsStarted++; return every(...args); };"
    )
    page.goto(f"{live_server.url}/viewer/studies/{ct.study_uid}")
    page.wait_for_function(FIRST_FULL, timeout=15000)
    assert digest(page)["lit"] > 0
    page.keyboard.press("ArrowDown")  # the viewer works as usual
    page.wait_for_function("() => document.querySelector('.vw-ov-bl').textContent.includes('Im: 2/6')")
    assert page.evaluate("() => ['__viewerStats', '__viewer'].filter((name) => name in window)") == []
    assert page.evaluate("window.intervalsStarted") == 0
    # Opened for the benchmark, the same page has both (a new load: a fragment alone would not reload).
    page.goto("about:blank")
    page.goto(f"{live_server.url}/viewer/studies/{ct.study_uid}#bench")
    page.wait_for_function("() => window.__viewerStats && window.__viewerStats.firstFull !== null", timeout=15000)
    assert page.evaluate("() => window.__viewer.updateStats() === window.__viewerStats")
    assert not page.problems


def test_the_memory_budget_evicts_the_farthest_slices(page: Any, live_server: Any, upload_client: Client) -> None:
    spec = StudySpec(patient_id="MEM-1")
    assert stow(upload_client, make_series(spec, "CT", count=24, size=64)).status_code == 200
    # 64x64x2 bytes = 8 KiB a slice; a 0.05 MiB budget holds six of them.
    open_viewer(page, live_server, spec.study_uid, "?budget=0.05")
    page.keyboard.press("End")
    page.wait_for_function(FULL_AT, arg=[0, 23])
    stats = page.evaluate("() => window.__viewer.updateStats()")
    assert stats["peakCacheBytes"] <= stats["budgetBytes"]
    assert stats["evictions"] > 0
    near = page.evaluate("() => [...Array(24).keys()].filter((i) => window.__viewer.viewports[0].loader.isLoaded(i))")
    assert 23 in near and 0 not in near


def test_layouts_hang_several_series_and_accept_a_dragged_series(
    page: Any, live_server: Any, upload_client: Client
) -> None:
    spec = StudySpec(patient_id="LAY-1")
    big = make_series(spec, "CT", count=4, size=64)
    small = make_series(spec, "CT", count=2, size=64)
    assert stow(upload_client, big + small).status_code == 200
    open_viewer(page, live_server, spec.study_uid)
    assert page.evaluate(STATE, 0)["total"] == 4  # hanging protocol: the biggest series first
    page.select_option("#vw-layout", "1x2")
    page.wait_for_function(FULL_AT, arg=[1, 0])
    assert page.evaluate(STATE, 1)["total"] == 2
    page.drag_and_drop(".vw-set >> nth=0", ".vw-viewport[data-viewport='1']")
    page.wait_for_function("() => window.__viewer.updateStats().viewports[1].total === 4")


def orthogonal_study(upload_client: Client, axial: int = 8, coronal: int = 5) -> StudySpec:
    """An axial and a coronal series (64x64, 0.7 mm pixels) sharing one frame of reference.

    Axial slice ``i`` (sorted head first) lies at z = -2.5 i mm; the coronal images
    run from z = 0 at their top row downwards, so axial slice ``i`` crosses them at
    row 2.5 i / 0.7 (image y = that + 0.5, pixel centres at +0.5).
    """
    spec = StudySpec(patient_id="REF-1")
    frame = "1.2.826.0.1.3680043.8.498.77"
    series = make_series(spec, "CT", count=axial, size=64, extra={"FrameOfReferenceUID": frame})
    coronal_uid = "1.2.826.0.1.3680043.8.498.78"
    for k in range(coronal):
        extra = {
            "FrameOfReferenceUID": frame,
            "ImageOrientationPatient": [1, 0, 0, 0, 0, -1],
            "ImagePositionPatient": [-22.4, -20.0 + 10.0 * k, 0.0],
            "ImageType": ["ORIGINAL", "PRIMARY", "REFORMATTED"],
        }
        series.append(
            make_instance(
                spec,
                "CT",
                series_uid=coronal_uid,
                series_number=2,
                series_description="CORONAL",
                instance_number=k + 1,
                size=64,
                extra=extra,
            )
        )
    assert stow(upload_client, series).status_code == 200
    return spec


REFERENCE_PIXEL = """([n, x, y]) => {
  const vp = window.__viewer.viewports[n];
  const p = vp.toClient(x, y), r = vp.root.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  const x0 = Math.round((p.x - r.left) * dpr), y0 = Math.round((p.y - r.top) * dpr);
  const d = vp.canvas.getContext('2d').getImageData(x0, y0, 1, 1).data;
  return [d[0], d[1], d[2]];
}"""


def test_an_axial_slice_is_shown_as_a_reference_line_on_the_coronal_series(
    page: Any, live_server: Any, upload_client: Client
) -> None:
    spec = orthogonal_study(upload_client)
    open_viewer(page, live_server, spec.study_uid)
    page.select_option("#vw-layout", "1x2")
    page.wait_for_function(FULL_AT, arg=[1, 0])
    assert page.evaluate(STATE, 0)["total"] == 8 and page.evaluate(STATE, 1)["total"] == 5
    for index in (0, 3, 7):
        page.locator(".vw-viewport[data-viewport='0']").click()
        page.keyboard.press("Home")
        for _ in range(index):
            page.keyboard.press("ArrowDown")
        page.wait_for_function(FULL_AT, arg=[0, index])
        line = page.evaluate("() => window.__viewer.viewports[1].referenceLine")
        expected_y = 2.5 * index / 0.7 + 0.5
        assert line is not None
        (a, b) = line
        assert a["y"] == pytest.approx(expected_y, abs=1e-6) and b["y"] == pytest.approx(expected_y, abs=1e-6)
        assert sorted([a["x"], b["x"]]) == pytest.approx([0.0, 64.0], abs=1e-6)
        # The line is drawn: on the grey image the coronal canvas turns green under it.
        r, g, bl = page.evaluate(REFERENCE_PIXEL, [1, 32.0, expected_y])
        assert g - r > 60 and g - bl > 30, (r, g, bl)
    # The coronal image casts no line on itself, and the active axial shows the coronal's line.
    assert page.evaluate("() => window.__viewer.viewports[0].referenceLine") is None
    page.locator(".vw-viewport[data-viewport='1']").click()
    page.wait_for_function("() => window.__viewer.viewports[0].referenceLine !== null")
    line = page.evaluate("() => window.__viewer.viewports[0].referenceLine")
    # The coronal stack is sorted along its normal (+y first): slice 0 lies at y = +20 mm,
    # axial row (20 + 22.4) / 0.7.
    assert line[0]["y"] == pytest.approx(42.4 / 0.7 + 0.5, abs=1e-6)
    assert not page.problems


def test_parallel_series_and_other_frames_of_reference_get_no_reference_line(
    page: Any, live_server: Any, upload_client: Client
) -> None:
    spec = StudySpec(patient_id="REF-2")
    parallel = make_series(spec, "CT", count=4, size=64, extra={"FrameOfReferenceUID": "1.2.3.4"})
    other = make_series(spec, "CT", count=3, size=64, extra={"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]})
    assert stow(upload_client, parallel + other).status_code == 200
    open_viewer(page, live_server, spec.study_uid)
    page.select_option("#vw-layout", "1x2")
    page.wait_for_function(FULL_AT, arg=[1, 0])
    page.locator(".vw-viewport[data-viewport='0']").click()
    page.keyboard.press("ArrowDown")
    page.wait_for_function(FULL_AT, arg=[0, 1])
    assert page.evaluate("() => window.__viewer.viewports[1].referenceLine") is None


def test_the_first_requests_are_preloaded_by_the_page_and_fetched_once(
    page: Any, live_server: Any, ct: StudySpec
) -> None:
    open_viewer(page, live_server, ct.study_uid)
    hinted = page.evaluate("() => [...document.querySelectorAll('link[rel=preload][as=fetch]')].map((l) => l.href)")
    # The series search, the first series' metadata, the first slice's preview and lossless frame.
    assert len(hinted) == 4
    assert any("/rendered?viewport=" in url for url in hinted) and any(url.endswith("/frames/1") for url in hinted)
    # Answered once each: the viewer's own fetch took the preloaded response. (A request the
    # test server failed, SQLite's "table is locked" under concurrent audit writes, is retried
    # for the search, metadata and frames; a failed preview is only skipped.)
    answered = page.evaluate(
        "() => performance.getEntriesByType('resource').filter((e) => e.responseStatus === 200).map((e) => e.name)"
    )
    for url in hinted:
        count = answered.count(url)
        assert count == 1 or (count == 0 and "/rendered?" in url), url
    # The hinted frame is the slice the viewer shows first.
    state = page.evaluate("() => { const vp = window.__viewer.viewports[0]; return [vp.index, vp.image.sop]; }")
    assert state[0] == 0 and f"/instances/{state[1]}/frames/1" in hinted[-1]
    assert not page.problems


def test_a_referring_clinician_is_told_that_their_role_cannot_search(
    chromium: Any, live_server: Any, settings: Any
) -> None:
    from portal.accounts.roles import Role
    from tests.conftest import role_user

    settings.PACS_ACCESS_POLICY = "portal.access.SitePolicy"
    access.policy.cache_clear()
    clinician = role_user("dr-referrer", Role.REFERRING_CLINICIAN)
    client = Client()
    client.force_login(clinician)
    context = chromium.new_context()
    context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
                "secure": bool(django_settings.SESSION_COOKIE_SECURE),
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    page = context.new_page()
    page.goto(f"{live_server.url}/viewer/")
    page.click("#search-button")
    page.wait_for_function("() => document.getElementById('search-status').textContent.includes('Your role')")
    assert page.locator("#search-results tbody tr").count() == 0
    context.close()


def test_a_study_on_an_archive_tier_shows_restoring_then_opens_by_itself_when_it_is_back(
    page: Any, live_server: Any, ct: StudySpec, settings: Any
) -> None:
    from archive.ingest.mover import Mover, plan_moves
    from archive.ingest.restore import advance_restores
    from archive.models import Instance, Restore, Tier

    settings.PACS_RESTORE_RETRY_AFTER_MAX = 1  # poll every second here
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    Tier.sync_environment()
    Tier.objects.filter(name="cold").update(retrieval="minutes")  # a tier that needs a restore, minutes away
    batch, _ = plan_moves(Instance.objects.all(), "cold")
    Mover(batch).run()
    assert set(Instance.objects.values_list("availability", flat=True)) == {"NEARLINE"}

    page.goto(f"{live_server.url}/viewer/studies/{ct.study_uid}#bench")
    status = page.locator("#vw-status")
    page.wait_for_function("() => document.getElementById('vw-status').textContent.startsWith('Restoring')")
    assert status.text_content() == "Restoring from archive storage, about 5 min"
    assert page.locator("#viewer.vw-restoring").count() == 1
    page.wait_for_function("() => window.__viewer.restore.polls >= 2", timeout=10000)  # polling, as Retry-After says
    assert Restore.objects.count() == 6  # one restore per object, however many polls
    assert page.evaluate("performance.getEntriesByName('viewer:first-image').length") == 0

    while advance_restores().active:
        pass
    assert set(Instance.objects.values_list("tier", "availability")) == {("hot", "ONLINE")}
    page.wait_for_function(FIRST_FULL, timeout=15000)
    pixels = digest(page)
    assert pixels["lit"] > pixels["total"] * 0.05
    assert page.locator("#viewer.vw-restoring").count() == 0
    assert not status.text_content().startswith("Restoring")
    assert not page.problems


def test_an_offline_study_says_so_at_once_and_neither_polls_nor_starts_a_restore(
    page: Any, live_server: Any, ct: StudySpec, settings: Any
) -> None:
    from archive.ingest.mover import Mover, plan_moves
    from archive.models import Instance, Restore, Tier

    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    Tier.sync_environment()
    Tier.objects.filter(name="cold").update(retrieval="manual")  # media that need an administrator
    batch, _ = plan_moves(Instance.objects.all(), "cold")
    Mover(batch).run()
    assert set(Instance.objects.values_list("availability", flat=True)) == {"OFFLINE"}

    page.goto(f"{live_server.url}/viewer/studies/{ct.study_uid}#bench")
    page.wait_for_function("() => document.getElementById('vw-status').textContent.startsWith('This study is offline')")
    assert page.locator("#vw-status").text_content() == (
        "This study is offline: an administrator must bring its storage media back."
    )
    assert page.evaluate("window.__viewer.restore.polls") == 0
    assert page.locator("#viewer.vw-restoring").count() == 0
    assert not Restore.objects.exists()
