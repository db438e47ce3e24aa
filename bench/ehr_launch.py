"""EHR launch benchmark: from the EHR's launch call to the first image, against opening the study directly.

Starts the production server (gunicorn, ``scripts/gunicorn.conf.py``) on a
scratch data folder and a free loopback port, registers an EHR integration
(client secret) and a technologist of the same site, stores one synthetic CT
series, then measures in Debian's Chromium, each run in a fresh browser context:

* **direct**: a signed-in technologist opens ``/viewer/studies/<uid>``; from
  ``page.goto`` to ``performance.mark('viewer:first-image')``;
* **launch**: the EHR's ``POST /api/ehr/launch`` (HTTP Basic), then the browser
  opens the launch URL (launch page, token POST, sign-in, redirect) and the
  viewer draws; from before the POST to the same mark.

Prints the median and spread of both and the difference (targets, issue 13:
launch ≤ 1 s, ≤ 200 ms more than direct). Usage::

    .venv/bin/python bench/ehr_launch.py [--runs 7] [--slices 20]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIRST_IMAGE = "() => performance.getEntriesByName('viewer:first-image').length === 1"
SETUP = """
import os
from django.contrib.auth.models import Group, User
from archive.models import Site
from integrations.ehr.credentials import new_secret
from integrations.models import EhrIntegration
from portal.models import SiteMembership
site = Site.objects.create(code="bench", name="Bench", institution_names="General Hospital")
user = User.objects.create_user("benchtech", password=os.environ["BENCH_PASSWORD"])
user.groups.add(Group.objects.get(name="technologist"))
SiteMembership.objects.create(user=user, site=site)
secret, digest = new_secret()
ehr = EhrIntegration.objects.create(name="Bench EHR", client_id="bench-ehr", secret_sha256=digest)
ehr.sites.add(site)
print(secret)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    return done.stdout


def start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(gunicorn), "-c", "scripts/gunicorn.conf.py", "pacs.wsgi:application"],
            cwd=REPO,
            env={**env, "PORT": str(port), "HOST": "127.0.0.1", "WEB_LOG_LEVEL": "warning"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not start:\n" + log.read_text()[-2000:])


def store(base: str, token: str, slices: int) -> str:
    from archive.dicom.synthetic import StudySpec, make_series

    spec = StudySpec(patient_name="BENCH^EHR", patient_id="PAT-BENCH", accession="ACC-BENCH")
    parts = make_series(spec, "CT", count=slices, size=512)
    boundary = "benchboundary"
    body = (
        b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    r = requests.post(
        f"{base}/dicom-web/studies",
        data=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Authorization": f"Bearer {token}",
            "Accept": "application/dicom+json",
        },
        timeout=120,
    )
    if r.status_code != 200:
        raise SystemExit(f"STOW failed: {r.status_code} {r.text[:300]}")
    return spec.study_uid


def sign_in(context: Any, base: str, password: str) -> None:
    import html

    page = context.request.get(base + "/accounts/login/")
    token = html.unescape(re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text()).group(1))
    r = context.request.post(
        base + "/accounts/login/",
        form={"username": "benchtech", "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": base + "/accounts/login/", "Origin": base},
        max_redirects=0,
    )
    if r.status != 302:
        raise SystemExit(f"sign-in failed: {r.status}")


def direct(browser: Any, base: str, password: str, study: str) -> float:
    context = browser.new_context()
    try:
        sign_in(context, base, password)
        page = context.new_page()
        started = time.perf_counter()
        page.goto(f"{base}/viewer/studies/{study}")
        page.wait_for_function(FIRST_IMAGE, timeout=30000, polling="raf")
        return time.perf_counter() - started
    finally:
        context.close()


def launch(browser: Any, base: str, secret: str, study: str) -> float:
    context = browser.new_context()
    try:
        page = context.new_page()
        body = {
            "clinician": {"id": "bench-clinician", "name": "Dr Bench"},
            "patient": {"id": "PAT-BENCH"},
            "studies": [{"study_instance_uid": study}],
        }
        started = time.perf_counter()
        answer = requests.post(f"{base}/api/ehr/launch", json=body, auth=("bench-ehr", secret), timeout=30)
        if answer.status_code != 201:
            raise SystemExit(f"launch failed: {answer.status_code} {answer.text[:300]}")
        page.goto(answer.json()["launch_url"])
        page.wait_for_url(f"**/viewer/studies/{study}", timeout=30000)
        page.wait_for_function(FIRST_IMAGE, timeout=30000, polling="raf")
        return time.perf_counter() - started
    finally:
        context.close()


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"{name:<38} median {statistics.median(ms):7.0f} ms   min {ms[0]:6.0f}   max {ms[-1]:6.0f}   (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--slices", type=int, default=20)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    data = Path(tempfile.mkdtemp(prefix="pacs-ehr-bench."))
    password = secrets.token_urlsafe(18)
    env = {
        **os.environ,
        "PACS_DATA_DIR": str(data),
        "DJANGO_SETTINGS_MODULE": "pacs.settings",
        "PACS_SECURE_COOKIES": "false",
        "BENCH_PASSWORD": password,
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "setup_roles", "-v0")
    manage(env, "collectstatic", "--noinput", "-v0")
    secret = manage(env, "shell", "-v0", "-c", SETUP).strip().splitlines()[-1]
    issued = re.search(r"pacs_[A-Za-z0-9_-]+", manage(env, "issue_token", "benchtech", "--name", "ehr-bench"))
    if issued is None:
        raise SystemExit("no token issued")
    token = issued.group(0)
    port = free_port()
    server = start(env, port, data / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"
    try:
        study = store(base, token, args.slices)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless=new", "--no-sandbox", "--disable-gpu"]
            )
            direct(browser, base, password, study)  # warm both paths once (bundle build, caches)
            launch(browser, base, secret, study)
            directs, launches = [], []
            for _ in range(args.runs):
                directs.append(direct(browser, base, password, study))
                launches.append(launch(browser, base, secret, study))
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(f"{args.slices}-slice 512x512 CT, gunicorn on loopback, Chromium, fresh context each run")
    print(summary("open the study directly (signed in)", directs))
    print(summary("EHR launch call -> first image", launches))
    extra = statistics.median(launches) - statistics.median(directs)
    print(f"{'the launch adds':<38} median {extra * 1000:7.0f} ms   (targets: launch <= 1000 ms, adds <= 200 ms)")


if __name__ == "__main__":
    main()
