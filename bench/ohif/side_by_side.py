"""Our viewer and OHIF, same study, same server, same Chromium, same run: first-frame times.

OHIF's prebuilt ``dist/`` (fetched by ``bench/ohif/fetch.sh``) is served on a
second port by a small static server with an ``app-config.js`` whose DICOMweb
data source is our server. OHIF authenticates with a bearer token (its
``?token=`` URL parameter sets the Authorization header), so our server must
allow OHIF's origin: start it with ``PACS_CORS_ORIGINS=http://127.0.0.1:<port>``.

For both viewers the first frame is the time from navigation start until the
viewport's canvas first holds a non-blank image, checked on every animation
frame by the same probe (a 64x64 copy of the canvas with any pixel brighter
than 10). For ours the viewer's own ``viewer:first-image`` mark is printed too.
Each run uses a fresh browser context (cold cache); the two viewers alternate.

Usage::

    PACS_CORS_ORIGINS=http://127.0.0.1:8792 <start the server on :8791>
    bench/ohif/fetch.sh
    .venv/bin/python bench/ohif/side_by_side.py --base http://127.0.0.1:8791 \\
        --token <bearer token> --username <user> --password <password> --runs 5
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import viewer_bench  # noqa: E402

DIST = HERE / "node_modules" / "@ohif" / "app" / "dist"

# Records performance.now() when a viewport canvas first shows something; never creates a
# context on the page's canvases (it only draws them into a scratch canvas of its own).
PROBE = """(selector) => {
  window.__firstNonBlank = null;
  const scratch = document.createElement('canvas');
  scratch.width = scratch.height = 64;
  const ctx = scratch.getContext('2d', { willReadFrequently: true });
  const check = () => {
    for (const c of document.querySelectorAll(selector)) {
      if (!c.width || !c.height) continue;
      ctx.fillStyle = '#000';
      ctx.fillRect(0, 0, 64, 64);
      try { ctx.drawImage(c, 0, 0, 64, 64); } catch (e) { continue; }
      const d = ctx.getImageData(0, 0, 64, 64).data;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i] > 10 || d[i + 1] > 10 || d[i + 2] > 10) { window.__firstNonBlank = performance.now(); return; }
      }
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}"""
OURS_CANVAS = ".vw-viewport[data-viewport='0'] canvas"
OHIF_CANVAS = ".cornerstone-viewport-element canvas, canvas.cornerstone-canvas, [data-viewport-uid] canvas"


def app_config(dicomweb: str) -> str:
    """OHIF's runtime configuration: one DICOMweb data source, our server."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "pacs",
        "configuration": {
            "friendlyName": "Cloud PACS",
            "name": "pacs",
            "wadoUriRoot": dicomweb,
            "qidoRoot": dicomweb,
            "wadoRoot": dicomweb,
            "qidoSupportsIncludeField": True,
            "supportsReject": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "maxNumberOfWebWorkers": 3,
        "defaultDataSourceName": "pacs",
        "dataSources": [source],
    }
    return "window.config = " + json.dumps(config, indent=2) + ";\n"


class OhifHandler(http.server.SimpleHTTPRequestHandler):
    """dist/ as a single-page app: unknown paths get index.html; app-config.js is generated."""

    protocol_version = "HTTP/1.1"
    config = b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            self.wfile.write(self.config)
            return
        if not (DIST / path.lstrip("/")).is_file():
            self.path = "/index.html"
        super().do_GET()


def serve_ohif(port: int, dicomweb: str) -> http.server.ThreadingHTTPServer:
    if not (DIST / "index.html").is_file():
        raise SystemExit(f"no OHIF build in {DIST}: run bench/ohif/fetch.sh first")
    handler = type("Handler", (OhifHandler,), {"config": app_config(dicomweb).encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler, directory=str(DIST)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def first_frame(page: Any, url: str, selector: str, timeout_ms: int) -> float | None:
    page.add_init_script(f"addEventListener('DOMContentLoaded', () => ({PROBE})({json.dumps(selector)}))")
    page.goto(url, wait_until="commit")
    try:
        page.wait_for_function(
            "() => window.__firstNonBlank !== null && window.__firstNonBlank !== undefined", timeout=timeout_ms
        )
    except Exception:
        return None
    return float(page.evaluate("window.__firstNonBlank"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8791")
    parser.add_argument("--token", required=True, help="bearer token of a user who may see the study")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--ohif-port", type=int, default=8792)
    parser.add_argument("--study", help="Study Instance UID (default: the viewer bench's 50-slice CT)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--institution", default="General Hospital")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    base = args.base.rstrip("/")
    study = args.study or viewer_bench.ensure_series(base, args.token, "ct50", 50, 512, args.institution)[0]
    server = serve_ohif(args.ohif_port, base + "/dicom-web")
    ohif_url = f"http://127.0.0.1:{args.ohif_port}/viewer?StudyInstanceUIDs={study}&token={args.token}"
    ours_url = f"{base}/viewer/studies/{study}"
    browser_args = argparse.Namespace(session=None, username=args.username, password=args.password, secure_cookie=False)

    from playwright.sync_api import sync_playwright

    ours: list[float] = []
    ours_mark: list[float] = []
    ohif: list[float] = []
    failures: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=viewer_bench.CHROMIUM, args=viewer_bench.ARGS)
        for run in range(args.runs):
            page = viewer_bench.new_page(browser, base, browser_args, throttle=False)
            value = first_frame(page, ours_url, OURS_CANVAS, int(args.timeout * 1000))
            if value is None:
                failures.append(f"ours run {run + 1}: no image within {args.timeout} s")
            else:
                ours.append(value)
                ours_mark.append(
                    float(page.evaluate("performance.getEntriesByName('viewer:first-image')[0].startTime"))
                )
            page.context.close()

            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            problems: list[str] = []

            def note(message: Any, problems: list[str] = problems) -> None:
                if message.type == "error":
                    problems.append(message.text[:200])

            page.on("console", note)
            value = first_frame(page, ohif_url, OHIF_CANVAS, int(args.timeout * 1000))
            if value is None:
                failures.append(f"OHIF run {run + 1}: no image within {args.timeout} s; console: {problems[:3]}")
            else:
                ohif.append(value)
            context.close()
        browser.close()
    server.shutdown()

    def summary(values: list[float]) -> str:
        if not values:
            return "no value"
        return (
            f"median {statistics.median(values):.0f} ms (min {min(values):.0f}, max {max(values):.0f}, n={len(values)})"
        )

    print(f"study {study}, {args.runs} cold runs each, loopback")
    print(f"  ours  first non-blank canvas   {summary(ours)}")
    print(f"  ours  viewer:first-image mark  {summary(ours_mark)}")
    print(f"  OHIF  first non-blank canvas   {summary(ohif)}")
    for failure in failures:
        print("  !", failure)


if __name__ == "__main__":
    main()
