"""A RIS script over real HTTP (``requests`` against the live server): a study stored over STOW-RS appears on
the worklist API, a token claims it (a second reader is refused, told who holds it), drafts and signs the
report preliminary, and is refused the final signature."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.contrib.auth.models import User

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import ApiToken
from portal.accounts.roles import Role
from tests.conftest import multipart, role_user

pytestmark = pytest.mark.django_db(transaction=True)


def token_of(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {ApiToken.issue(user, 'ris')[1]}"}


def test_a_ris_script_reads_claims_drafts_and_signs_preliminary_but_never_final(
    live_server: Any, uploader: User, general_site: Any
) -> None:
    base = live_server.url
    spec = StudySpec(patient_name="SCRIPT^SAM", patient_id="RIS-1", accession="RIS-ACC-1")
    body, ctype = multipart(make_series(spec, "CT", count=2, size=16))
    stored = requests.post(
        f"{base}/dicom-web/studies",
        data=body,
        headers={"Content-Type": ctype, "Accept": "application/dicom+json", **token_of(uploader)},
        timeout=30,
    )
    assert stored.status_code == 200, stored.text
    ris = requests.Session()
    ris.headers.update(token_of(role_user("ris-reader", Role.RADIOLOGIST, general_site)))
    rival = token_of(role_user("rival", Role.RADIOLOGIST, general_site))

    page = ris.get(f"{base}/api/worklist/items/", params={"modality": "CT", "limit": 10}, timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"] == "application/json"
    (row,) = page.json()["results"]
    assert (row["study_instance_uid"], row["patient_id"], row["status"]) == (spec.study_uid, "RIS-1", "ready")

    item = f"{base}/api/worklist/items/{spec.study_uid}"
    assert ris.post(f"{item}/claim", timeout=30).json()["claimed_by"] == "ris-reader"
    refused = requests.post(f"{item}/claim", headers=rival, timeout=30)
    assert (refused.status_code, refused.json()["holder"]) == (409, "ris-reader")

    report = f"{base}/api/studies/{spec.study_uid}/report"
    started = ris.post(report, timeout=30)
    assert started.status_code == 201, started.text
    saved = ris.patch(
        report, json={"version": started.json()["version"], "sections": {"findings": "No acute findings."}}, timeout=30
    )
    assert saved.status_code == 200, saved.text
    signed = ris.post(f"{report}/sign", json={"status": "preliminary", "version": saved.json()["version"]}, timeout=30)
    assert (signed.status_code, signed.json()["status"]) == (201, "preliminary")
    final = ris.post(f"{report}/sign", json={"status": "final", "version": signed.json()["version"]}, timeout=30)
    assert (final.status_code, final.json()["code"]) == (403, "token_may_not_sign_final")

    schema = ris.get(f"{base}/api/schema/", params={"format": "json"}, timeout=30)
    assert schema.status_code == 200 and "/api/studies/{study_uid}/report/sign" in schema.json()["paths"]
    anonymous = requests.get(f"{base}/api/worklist/items/", timeout=30)
    assert (anonymous.status_code, anonymous.headers["WWW-Authenticate"]) == (401, 'Bearer realm="api"')
