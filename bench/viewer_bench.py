"""Benchmark of the zero-footprint viewer in real Chromium against a running server.

Measures what a radiologist feels: time to the first image (navigation start
to ``performance.mark('viewer:first-image')``), to the first lossless image
(``viewer:first-full``), to having shown all 50 slices of a 512x512 16-bit CT
at full fidelity while scrolling by keyboard as fast as frames arrive, the cine
frame rate once loaded, and memory (the page's JS memory from CDP
Runtime.getHeapUsage: V8 and Blink heaps plus ArrayBuffer backing stores, where
the pixels are; decoded pixel bytes held by the viewer; renderer RSS) including
for a 1,000-slice series. Then the same under CDP network throttling (5 Mbit/s,
150 ms latency).

Usage::

    .venv/bin/python bench/viewer_bench.py --base http://127.0.0.1:8000 \\
        --token <bearer token allowed to STOW> --username reader --password ...

The benchmark stores its own synthetic series once (deterministic UIDs, so a
second run reuses them) through STOW-RS with the bearer token. The browser
signs in with ``--username/--password`` through the sign-in page, or takes an
existing ``--session`` cookie value; that user must be allowed to see the
benchmark studies (institution ``--institution``) without a second factor.

Against the production server (gunicorn) on a scratch data directory, with a
technologist at a site as the benchmark user (technologists need no second
factor, may STOW, and see their site's studies)::

    export PACS_DATA_DIR=$(mktemp -d) PORT=8791 PACS_SECURE_COOKIES=false
    .venv/bin/python manage.py migrate && .venv/bin/python manage.py setup_roles
    .venv/bin/python manage.py collectstatic --noinput
    .venv/bin/python manage.py shell -c "
    from django.contrib.auth.models import Group, User
    from archive.models import Site
    from portal.models import SiteMembership
    site = Site.objects.create(code='bench', name='Bench', institution_names='General Hospital')
    user = User.objects.create_user('benchtech', password='bench-pass-123')
    user.groups.add(Group.objects.get(name='technologist'))
    SiteMembership.objects.create(user=user, site=site)"
    token=$(.venv/bin/python manage.py issue_token benchtech)
    .venv/bin/gunicorn -c scripts/gunicorn.conf.py pacs.wsgi:application &
    .venv/bin/python bench/viewer_bench.py --base http://127.0.0.1:8791 --token $token \\
        --username benchtech --password bench-pass-123

The viewer is opened with ``#bench`` in its URL: only then does the page keep
its counters (``window.__viewerStats``, refreshed by ``__viewer.updateStats()``)
and expose the application as ``window.__viewer``; a normal page has neither.

Single runs vary by tens of milliseconds on a shared machine; run it a few times.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archive.dicom.synthetic import StudySpec, make_instance  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# The URL fragment that makes the viewer keep its counters (static/viewer/stats.js).
BENCH = "#bench"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
MB = 1024 * 1024
TARGETS = {
    "first_image_ms": 300,
    "first_full_ms": 500,
    "scroll_50_ms": 1500,
    "cine_fps": 30,
    "heap_1000_mb": 1024,
}


def stable_uid(*parts: object) -> str:
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "cloud-pacs viewer bench/" + "/".join(map(str, parts))).int)


# ---------------------------------------------------------------- data via DICOMweb


def request(base: str, token: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(
        base + path, data=data, headers={"Authorization": f"Bearer {token}", **(headers or {})}
    )
    return urllib.request.urlopen(req, timeout=600)  # noqa: S310 (the URL is the operator's server)


def series_count(base: str, token: str, study: str, series: str) -> int:
    try:
        with request(
            base,
            token,
            f"/dicom-web/studies/{study}/series/{series}/metadata",
            headers={"Accept": "application/dicom+json"},
        ) as r:
            return len(json.loads(r.read()))
    except urllib.error.HTTPError:
        return 0


def stow(base: str, token: str, study: str, parts: list[bytes]) -> None:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    with request(
        base, token, f"/dicom-web/studies/{study}", body, {"Content-Type": ctype, "Accept": "application/dicom+json"}
    ) as r:
        if r.status != 200:
            raise SystemExit(f"STOW answered {r.status}: {r.read()[:300]!r}")


def ensure_series(
    base: str, token: str, key: str, count: int, size: int, institution: str, modality: str = "CT", frames: int = 1
) -> tuple[str, str]:
    """Store the series ``key`` unless it is already complete; return (study, series) UIDs."""
    study, series = stable_uid(key, "study"), stable_uid(key, "series")
    have = series_count(base, token, study, series)
    if have >= count:
        return study, series
    spec = StudySpec(
        patient_name=f"BENCH^{key.upper()}",
        patient_id=f"BENCH-{key}",
        study_uid=study,
        accession=key[:16],
        description=f"VIEWER BENCH {key}",
        institution=institution,
    )
    print(f"  storing {key}: {count} x {size}x{size} {modality} ...", file=sys.stderr, flush=True)
    batch: list[bytes] = []
    for i in range(count):
        batch.append(
            make_instance(
                spec,
                modality,
                series_uid=series,
                instance_number=i + 1,
                size=size,
                frames=frames,
                sop_uid=stable_uid(key, "sop", i),
            )
        )
        if len(batch) == 25 or i == count - 1:
            stow(base, token, study, batch)
            batch = []
    return study, series


# ---------------------------------------------------------------- browser


def sign_in(context: Any, base: str, username: str, password: str) -> None:
    page = context.request.get(base + "/accounts/login/")
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text())
    if not match:
        raise SystemExit("no CSRF token on the sign-in page")
    r = context.request.post(
        base + "/accounts/login/",
        form={"username": username, "password": password, "csrfmiddlewaretoken": html.unescape(match.group(1))},
        headers={"Referer": base + "/accounts/login/", "Origin": base},
        max_redirects=0,
    )
    if r.status != 302 or "login" in (r.headers.get("location") or ""):
        raise SystemExit(f"sign-in failed ({r.status}); check --username/--password")


MARKS = """() => Object.fromEntries(['viewer:first-image', 'viewer:first-full'].map((n) => {
  const e = performance.getEntriesByName(n)[0]; return [n, e ? e.startTime : null]; }))"""

# Scroll the first viewport with ArrowDown key events, one slice per animation frame at most,
# each only once the current slice has been painted at full fidelity. Resolves with the time
# since navigation start at which the last slice was shown losslessly.
SCROLL = """async (total) => {
  while (!window.__viewer || !window.__viewer.viewports[0].ds) await new Promise((r) => setTimeout(r, 2));
  const app = window.__viewer, vp = app.viewports[0];
  return await new Promise((resolve) => {
    let waiting = false;
    const advance = () => {
      if (waiting || !(vp.shownFull && vp.drawnIndex === vp.index)) return;
      if (vp.index >= total - 1) { resolve(performance.now()); return; }
      waiting = true;
      requestAnimationFrame(() => {
        waiting = false;
        document.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowDown', bubbles: true }));
        advance();
      });
    };
    const painted = app.painted.bind(app);
    app.painted = (v, f) => { painted(v, f); if (v === vp && f === 'full') advance(); };
    advance();
  });
}"""

CINE = """async (ms) => {
  const app = window.__viewer, vp = app.viewports[0];
  document.getElementById('vw-fps').value = '60';
  vp.startCine(60);
  await new Promise((r) => setTimeout(r, 300));
  const s0 = vp.cine.shown, t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const fps = (vp.cine.shown - s0) * 1000 / (performance.now() - t0);
  vp.stopCine();
  return fps;
}"""


class Memory:
    """Peak JS memory (CDP Runtime.getHeapUsage: V8 heap, Blink heap, ArrayBuffer backing stores) and renderer RSS."""

    def __init__(self, browser: Any, page: Any) -> None:
        self.cdp = page.context.new_cdp_session(page)
        self.browser_cdp = browser.new_browser_cdp_session()
        self.peak_heap = 0.0
        self.peak_rss = 0.0

    def renderer_rss(self) -> float:
        total = 0.0
        try:
            info = self.browser_cdp.send("SystemInfo.getProcessInfo")
        except Exception:
            return 0.0
        for proc in info.get("processInfo", []):
            if proc.get("type") != "renderer":
                continue
            try:
                status = Path(f"/proc/{proc['id']}/status").read_text()
            except OSError:
                continue
            m = re.search(r"VmRSS:\s+(\d+) kB", status)
            if m:
                total += int(m.group(1)) * 1024
        return total

    def sample(self) -> dict[str, float]:
        # The V8 heap alone leaves out typed arrays, where the pixels live: count their
        # backing stores (and Blink's heap) too, so the figure is what the page really holds.
        usage = self.cdp.send("Runtime.getHeapUsage")
        heap = float(usage["usedSize"] + usage.get("embedderHeapUsedSize", 0) + usage.get("backingStorageSize", 0))
        rss = self.renderer_rss()
        self.peak_heap = max(self.peak_heap, heap)
        self.peak_rss = max(self.peak_rss, rss)
        return {"heap": heap, "rss": rss}


def new_page(browser: Any, base: str, args: argparse.Namespace, throttle: bool) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    if args.session:
        context.add_cookies(
            [
                {
                    "name": "sessionid",
                    "value": args.session,
                    "url": base,
                    "httpOnly": True,
                    "secure": base.startswith("https:") or args.secure_cookie,
                }
            ]
        )
    else:
        sign_in(context, base, args.username, args.password)
    page = context.new_page()
    if throttle:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 150,
                "downloadThroughput": 5_000_000 / 8,
                "uploadThroughput": 5_000_000 / 8,
            },
        )
    return page


def run(
    browser: Any, args: argparse.Namespace, ct50: tuple[str, str], big: tuple[str, str] | None, throttle: bool
) -> dict[str, Any]:
    base = args.base
    out: dict[str, Any] = {}
    page = new_page(browser, base, args, throttle)
    memory = Memory(browser, page)
    url = f"{base}/viewer/studies/{ct50[0]}{BENCH}"

    # 1. Open the 50-slice CT: first image, first lossless image, then scroll through it.
    page.goto(url, wait_until="commit")
    shown_all = page.evaluate(SCROLL, 50)
    marks = page.evaluate(MARKS)
    out["first_image_ms"] = marks["viewer:first-image"]
    out["first_full_ms"] = marks["viewer:first-full"]
    out["first_image_was"] = page.evaluate("window.__viewerStats.firstImageFidelity")
    out["scroll_50_ms"] = shown_all
    memory.sample()

    stats = page.evaluate("() => window.__viewer.updateStats()")
    out["decoded_pixels_mb_50"] = stats["peakCacheBytes"] / MB
    out["requests_50"] = stats["requests"]

    # 2. Cine over the loaded series.
    out["cine_fps"] = page.evaluate(CINE, 3000 if not throttle else 2000)
    memory.sample()

    # 3. Warm re-open (static files and responses in the browser cache). By way of a blank
    # page: going to the URL the page is at, fragment included, would not load it again.
    page.goto("about:blank")
    page.goto(url, wait_until="commit")
    page.wait_for_function("() => window.__viewerStats && window.__viewerStats.firstFull !== null", timeout=120000)
    warm = page.evaluate(MARKS)
    out["warm_first_image_ms"] = warm["viewer:first-image"]
    out["warm_first_full_ms"] = warm["viewer:first-full"]
    out["peak_js_heap_mb"] = memory.peak_heap / MB
    out["peak_renderer_rss_mb"] = memory.peak_rss / MB

    # 4. The 1,000-slice series: load it all (or up to the memory budget) and watch memory.
    if big is not None:
        page.goto(f"{base}/viewer/studies/{big[0]}{BENCH}", wait_until="commit")
        page.wait_for_function("() => window.__viewerStats && window.__viewerStats.firstFull !== null", timeout=120000)
        started = time.monotonic()
        last, last_change = -1, time.monotonic()
        while time.monotonic() - started < args.big_timeout:
            state = page.evaluate("() => window.__viewer.updateStats()")
            memory.sample()
            loaded = state["viewports"][0]["loaded"]
            if loaded != last:
                last, last_change = loaded, time.monotonic()
            if loaded >= state["viewports"][0]["total"] or time.monotonic() - last_change > 10:
                break
            time.sleep(0.5)
        page.keyboard.press("End")  # scroll to the far end: evictions and refetches happen here
        page.wait_for_timeout(3000)
        state = page.evaluate("() => window.__viewer.updateStats()")
        memory.sample()
        out["big_slices_loaded"] = state["viewports"][0]["loaded"]
        out["big_load_s"] = round(time.monotonic() - started, 1)
        out["big_decoded_pixels_mb"] = state["peakCacheBytes"] / MB
        out["heap_1000_mb"] = memory.peak_heap / MB
        out["big_peak_renderer_rss_mb"] = memory.peak_rss / MB
        out["big_evictions"] = state["evictions"]
    page.context.close()
    return out


def report(title: str, result: dict[str, Any], judged: bool = True) -> None:
    """Print one run; the targets are loopback targets, so a throttled run is shown beside them, not judged."""
    print(f"\n== {title}")
    for key, value in result.items():
        target = TARGETS.get(key)
        if isinstance(value, float):
            value = round(value, 1)
        verdict = ""
        if target is not None and isinstance(value, int | float):
            ok = value >= target if key == "cine_fps" else value <= target
            sign = ">=" if key == "cine_fps" else "<="
            verdict = (
                f"  (target {sign} {target}: {'ok' if ok else 'MISSED'})"
                if judged
                else f"  (loopback target {sign} {target})"
            )
        print(f"  {key:26} {value}{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="bearer token allowed to STOW the benchmark series")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--session", help="an existing sessionid cookie value instead of signing in")
    parser.add_argument("--secure-cookie", action="store_true", help="mark the --session cookie Secure")
    parser.add_argument("--institution", default="General Hospital")
    parser.add_argument("--big", type=int, default=1000, help="slices of the large series (0 to skip)")
    parser.add_argument("--big-timeout", type=float, default=300)
    parser.add_argument("--no-throttle", action="store_true", help="skip the throttled run")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    if not args.session and not (args.username and args.password):
        parser.error("give --username and --password, or --session")
    base = args.base.rstrip("/")
    args.base = base

    from playwright.sync_api import sync_playwright

    print("preparing data ...", file=sys.stderr)
    ct50 = ensure_series(base, args.token, "ct50", 50, 512, args.institution)
    big = ensure_series(base, args.token, f"ct{args.big}", args.big, 512, args.institution) if args.big else None
    results: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        results["local"] = run(browser, args, ct50, big, throttle=False)
        report("local network", results["local"])
        if not args.no_throttle:
            # The 1,000-slice series would take ~15 minutes at 5 Mbit/s; it is measured unthrottled only.
            results["throttled"] = run(browser, args, ct50, None, throttle=True)
            report("throttled: 5 Mbit/s, 150 ms latency", results["throttled"], judged=False)
        browser.close()
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
