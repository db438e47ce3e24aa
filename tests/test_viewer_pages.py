"""The viewer's pages: sign-in required, UID validation, access policy, CSP-safe shells."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.db.models import QuerySet
from django.test import Client

from archive import access
from archive.access import AccessPolicy
from archive.models import Study
from archive.synthetic import StudySpec, make_series
from audit.models import AuditEvent
from tests.conftest import stow

PAYLOAD = "<script>alert(1)</script>^<img src=x onerror=alert(2)>"


class NothingPolicy(AccessPolicy):
    """A policy under which nobody sees any study."""

    def studies(self, user: Any) -> QuerySet[Study]:
        return Study.objects.none()


@pytest.fixture(autouse=True)
def everyone_sees_everything(settings: Any) -> Any:
    """Pin the simplest policy: the viewer must only ever ask ``visible_studies``, whatever it is."""
    settings.PACS_ACCESS_POLICY = "archive.access.AuthenticatedPolicy"
    access.policy.cache_clear()
    yield
    access.policy.cache_clear()


@pytest.fixture
def signed_in(reader: User) -> Client:
    client = Client()
    client.force_login(reader)
    return client


@pytest.fixture
def hidden_everything(settings: Any) -> Any:
    settings.PACS_ACCESS_POLICY = "tests.test_viewer_pages.NothingPolicy"
    access.policy.cache_clear()
    yield
    access.policy.cache_clear()


def viewer_url(uid: str) -> str:
    return f"/viewer/studies/{uid}"


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/viewer/", viewer_url("1.2.3.4")])
def test_it_sends_anonymous_visitors_to_sign_in(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "uid",
    ["abc", "1.2.3.", "1..2", ".1.2", "1.2.3a", "1" * 65, "1.2.3<script>", "1.2.3%20"],
)
def test_it_rejects_a_malformed_study_uid_with_400(signed_in: Client, uid: str) -> None:
    response = signed_in.get(viewer_url(uid))
    assert response.status_code == 400
    assert b"not a valid Study Instance UID" in response.content
    assert b"<script>" not in response.content


@pytest.mark.django_db
def test_it_answers_404_for_a_study_that_does_not_exist(signed_in: Client) -> None:
    assert signed_in.get(viewer_url("1.2.3.4.5.6")).status_code == 404


@pytest.mark.django_db
def test_it_answers_404_for_a_study_the_access_policy_hides(
    signed_in: Client, ct_study: dict[str, Any], hidden_everything: Any
) -> None:
    response = signed_in.get(viewer_url(ct_study["spec"].study_uid))
    assert response.status_code == 404
    assert ct_study["spec"].study_uid.encode() not in response.content


@pytest.mark.django_db
def test_it_serves_the_viewer_shell_for_a_visible_study(signed_in: Client, ct_study: dict[str, Any]) -> None:
    uid = ct_study["spec"].study_uid
    response = signed_in.get(viewer_url(uid))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-study="{uid}"' in html
    assert 'data-dicomweb="/dicom-web"' in html
    assert '<script type="module" src="/static/viewer/viewer.js"></script>' in html
    # The page is a shell: patient data only ever arrives over DICOMweb.
    assert "DOE" not in html and "PAT-1" not in html


@pytest.mark.django_db
def test_it_records_opening_a_study_in_the_audit_trail(signed_in: Client, ct_study: dict[str, Any]) -> None:
    uid = ct_study["spec"].study_uid
    signed_in.get(viewer_url(uid))
    event = AuditEvent.objects.filter(action="viewer.open").get()
    assert (event.actor, event.study_instance_uid, event.patient_id) == ("reader", uid, "PAT-1")


@pytest.mark.django_db
def test_it_does_not_audit_a_refused_request(signed_in: Client) -> None:
    signed_in.get(viewer_url("1.2.3.4.5.6"))
    signed_in.get(viewer_url("not-a-uid"))
    assert not AuditEvent.objects.filter(action="viewer.open").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["search", "viewer"])
def test_its_pages_have_no_inline_script_or_style_and_carry_the_csp(
    signed_in: Client, ct_study: dict[str, Any], page: str
) -> None:
    url = "/viewer/" if page == "search" else viewer_url(ct_study["spec"].study_uid)
    response = signed_in.get(url)
    html = response.content.decode()
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert all(not body.strip() for body in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S))
    assert "<style" not in html
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "external resource"


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["search", "viewer"])
def test_every_static_file_its_pages_reference_exists(signed_in: Client, ct_study: dict[str, Any], page: str) -> None:
    url = "/viewer/" if page == "search" else viewer_url(ct_study["spec"].study_uid)
    html = signed_in.get(url).content.decode()
    paths = re.findall(r"(?:src|href)=\"/static/([^\"]+)\"", html)
    assert any(p.endswith(".js") for p in paths)
    for path in paths:
        assert finders.find(path), path


def test_every_module_the_viewer_imports_is_preloaded_or_exists() -> None:
    """A typo in an import path would only show up in the browser; catch it here."""
    entry = ["viewer/viewer.js", "viewer/search.js"]
    seen: set[str] = set()
    while entry:
        path = entry.pop()
        if path in seen:
            continue
        seen.add(path)
        found = finders.find(path)
        assert found, path
        source = open(found, encoding="utf-8").read()
        for name in re.findall(r"from\s+'\./([a-z]+\.js)'", source):
            entry.append(f"viewer/{name}")
    assert {"viewer/dicomweb.js", "viewer/pixels.js", "viewer/loader.js"} <= seen


@pytest.mark.django_db
def test_a_patient_name_with_markup_never_reaches_the_html(signed_in: Client, upload_client: Client) -> None:
    spec = StudySpec(patient_name=PAYLOAD, patient_id="XSS-1")
    assert stow(upload_client, make_series(spec, "CT", count=1)).status_code == 200
    for url in ("/viewer/", viewer_url(spec.study_uid)):
        html = signed_in.get(url).content.decode()
        assert "<script>alert" not in html and "onerror" not in html
