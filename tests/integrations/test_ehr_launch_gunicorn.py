"""The EHR launch through a real gunicorn (the ``make run`` configuration) with its access log on.

The token travels in the launch URL's fragment, which a browser never sends,
and then in a POST body, which no access log records: so gunicorn's access log
and the server's own log must not contain it, while they do record the
requests (the log is really on).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from archive.dicom.synthetic import StudySpec, make_series
from tests.archive.ingest.test_crash import REPO, Server, prepare_server
from tests.conftest import multipart
from tests.integrations.conftest import LAUNCH_PATH, launch_body, token_of

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = """
from archive.models import Site
from integrations.ehr.credentials import new_secret
from integrations.models import EhrIntegration
site = Site.objects.create(code="general", name="General Hospital", institution_names="General Hospital")
secret, digest = new_secret()
ehr = EhrIntegration.objects.create(name="Gunicorn EHR", client_id="gunicorn-ehr", secret_sha256=digest)
ehr.sites.add(site)
print(secret)
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str, Path]]:
    data = tmp_path_factory.mktemp("ehr-gunicorn")
    env, token = prepare_server(data, None, "ehr")
    env.update(PACS_STUDY_SITE_SOURCE="institution", WEB_ACCESS_LOG=str(data / "access.log"), LOG_LEVEL="DEBUG")
    env["PACS_FSYNC"] = "false"
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SETUP], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=REPO, env=env, check=True)
    srv = Server(env, data / "gunicorn.log")
    srv.start()
    yield srv, token, done.stdout.strip().splitlines()[-1], data
    srv.stop()


def test_neither_gunicorns_access_log_nor_the_server_log_holds_the_token(
    served: tuple[Server, str, str, Path], chromium: Any
) -> None:
    srv, bearer, secret, data = served
    base = f"http://127.0.0.1:{srv.port}"
    spec = StudySpec(patient_name="ISOLATION^ALICE", patient_id="PAT-A1", accession="ACC-A1")
    body, ctype = multipart(make_series(spec, "CT", count=2))
    stored = requests.post(
        f"{base}/dicom-web/studies",
        data=body,
        headers={"Content-Type": ctype, "Authorization": f"Bearer {bearer}", "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert stored.status_code == 200, stored.text
    answer = requests.post(
        base + LAUNCH_PATH, json=launch_body([spec.study_uid]), auth=("gunicorn-ehr", secret), timeout=30
    )
    assert answer.status_code == 201, answer.text
    launch_url = answer.json()["launch_url"]
    token = token_of(launch_url)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(launch_url)
        page.wait_for_url(f"**/viewer/studies/{spec.study_uid}", timeout=20000)
        page.wait_for_function("() => performance.getEntriesByName('viewer:first-full').length === 1", timeout=20000)
    finally:
        context.close()
    srv.stop()
    access = (data / "access.log").read_text()
    assert 'POST /ehr/launch/gunicorn-ehr HTTP/1.1" 200' in access
    assert f"GET /viewer/studies/{spec.study_uid}" in access
    for log in (access, (data / "gunicorn.log").read_text()):
        assert token not in log
        assert token.split(".")[0] not in log
