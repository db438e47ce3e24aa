"""Walk every URL pattern of the project and prove who gets what.

The patterns come from the root URLconf itself, so a route added later is
walked too (and a route the walker cannot fill in fails the walk rather than
being skipped). Parameters are filled with the real UIDs of a study stored at
site A. Anonymous requests get no data anywhere except the public pages; an
outsider from site B gets 404 on every DICOMweb URL of site A's study —
exactly what a study that does not exist gets — and nothing of it in QIDO;
the owner and a colleague at site A get it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

#: URL names anyone may open: sign-in, health, password reset, SSO endpoints.
PUBLIC_NAMES = {
    "login",
    "health",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "oidc_authentication_init",
    "oidc_authentication_callback",
    "oidc_logout",
    "logout",  # signing out needs no sign-in
    "fhir-metadata",  # the FHIR CapabilityStatement: clients read it before they authenticate
    "ehr-launch-page",  # the launch token is the sign-in
    "ehr-launch-problem",
    "smart-configuration",  # SMART discovery: clients read it before they have a token
    "smart-configuration-fhir",
    "smart-configuration-dicomweb",
    "smart-launch",  # the EHR's SMART launch: it starts the sign-in (at the EHR)
    "smart-callback",  # the EHR's answer: the state bound to this browser and the code are the sign-in
}
#: JSON APIs answer 401/403 rather than redirecting to the sign-in page.
API_PREFIX = "/api/"
LOGIN_PATHS = ("/accounts/login/", "/admin/login/")
PIXEL_DATA = "7FE00010"


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "dicom-web/studies/<uid:study>/metadata"
    name: str | None
    callback: Any
    params: tuple[str, ...]


def _join(prefix: str, pattern: Any) -> str:
    text = str(pattern)
    if text.startswith("^"):  # regex pattern: keep it as a template with named groups
        text = text[1:]
    return prefix + text.rstrip("$").replace("\\Z", "")


def routes(patterns: list[Any] | None = None, prefix: str = "") -> list[Route]:
    patterns = get_resolver().url_patterns if patterns is None else patterns
    found: list[Route] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found += routes(entry.url_patterns, _join(prefix, entry.pattern))
        elif isinstance(entry, URLPattern):
            template = _join(prefix, entry.pattern)
            params = tuple(_names(template))
            found.append(Route(template, entry.name, entry.callback, params))
    return found


def _names(template: str) -> list[str]:
    return [a or b for a, b in re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", template)]


def fill(route: Route, values: dict[str, str]) -> str:
    """The concrete path of a route, parameters replaced by ``values``."""

    def value(name: str) -> str:
        if name not in values:
            raise KeyError(f"the URL walk has no value for <{name}> in {route.template!r}: add one")
        return values[name]

    path = re.sub(r"\(\?P<(\w+)>[^()]*(?:\([^()]*\)[^()]*)*\)", lambda m: value(m.group(1)), route.template)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m.group(1)), path)
    path = path.replace("\\", "")
    assert not re.search(r"[()\[\]^$?*+|]", path), f"cannot fill regex route {route.template!r}"
    return "/" + path


def values_for(study: dict[str, Any], admin_object_id: str = "1") -> dict[str, str]:
    return {
        "study": study["study"],
        "series": study["series"],
        "instance": study["instance"],
        "study_instance_uid": study["study"],
        "study_uid": study["study"],
        "study_id": study["study"],
        "patient_id": "1",
        "endpoint_id": "dicomweb",
        "rest": "Observation",
        "frames": "1",
        "tag": PIXEL_DATA,
        "app_label": "archive",
        "object_id": admin_object_id,
        "content_type_id": "1",
        "id": "1",
        "pk": "1",
        "uidb64": "MQ",
        "token": "set-password",
        "url": "no-such-page/",
        "path": "x",
        "client_id": "some-ehr",
        "problem": "expired",
    }


def all_paths(study: dict[str, Any]) -> list[tuple[Route, str]]:
    filled = []
    for route in routes():
        path = fill(route, values_for(study))
        match = resolve(path)
        assert match.func == route.callback or match.url_name == route.name, f"{path} resolves elsewhere"
        filled.append((route, path))
    return filled


def is_dicomweb(path: str) -> bool:
    return path.startswith("/dicom-web/")


def is_api(path: str) -> bool:
    """DICOMweb and FHIR: bearer or session, 401 (not a sign-in redirect) without either."""
    return path.startswith(("/dicom-web/", "/fhir/"))


def is_search(route: Route) -> bool:
    return getattr(route.callback, "__module__", "") == "archive.dicomweb.qido"


def about_study(route: Route) -> bool:
    return any(p in ("study", "study_instance_uid", "study_id", "study_uid") for p in route.params)


def test_the_walk_covers_every_dicomweb_route_and_the_portal(site_a_study: dict[str, Any]) -> None:
    paths = [p for _, p in all_paths(site_a_study)]
    assert sum(is_dicomweb(p) for p in paths) >= 23
    assert f"/fhir/ImagingStudy/{site_a_study['study']}" in paths
    assert "/accounts/login/" in paths and "/admin/" in paths and "/viewer/" in paths and "/" in paths


def test_anonymous_requests_get_no_data_anywhere(site_a_study: dict[str, Any]) -> None:
    anonymous = Client()
    name = site_a_study["spec"].patient_name.encode()
    for route, path in all_paths(site_a_study):
        for method in ("get", "post"):
            response = getattr(anonymous, method)(path)
            assert name not in response.content, f"{method.upper()} {path} leaked the patient's name"
            if route.name in PUBLIC_NAMES:
                assert response.status_code != 500, path
                continue
            if path.startswith(API_PREFIX):
                assert response.status_code in (401, 403), f"{method.upper()} {path}: {response.status_code}"
                continue
            if is_api(path):
                if method == "post" and response.status_code == 405:
                    continue  # a method the resource never allows: refused before sign-in, same for any UID
                assert response.status_code == 401, f"{method.upper()} {path}: {response.status_code}"
                assert response["WWW-Authenticate"].startswith("Bearer")
            elif method == "get" or response.status_code != 403:  # POST without CSRF may be refused first
                assert response.status_code == 302, f"{method.upper()} {path}: {response.status_code}"
                assert response["Location"].startswith(LOGIN_PATHS), f"{path} -> {response['Location']}"


def test_a_public_page_needs_no_sign_in_but_shows_no_data(site_a_study: dict[str, Any]) -> None:
    anonymous = Client()
    for path in ("/accounts/login/", "/health", "/accounts/password/reset/"):
        response = anonymous.get(path)
        assert response.status_code == 200, path
        assert site_a_study["study"].encode() not in response.content


def _unknown_study() -> dict[str, str]:
    return {
        "study": f"2.25.{uuid.uuid4().int}",
        "series": f"2.25.{uuid.uuid4().int}",
        "instance": f"2.25.{uuid.uuid4().int}",
    }


def test_an_outsider_gets_404_on_every_dicomweb_url_of_another_sites_study(
    site_a_study: dict[str, Any], outsider_client: Client
) -> None:
    name = site_a_study["spec"].patient_name.encode()
    unknown = _unknown_study()
    for route in routes():
        path = fill(route, values_for(site_a_study))
        if not (is_api(path) and about_study(route)):
            continue
        response = outsider_client.get(path)
        ghost = outsider_client.get(fill(route, values_for(unknown)))
        assert name not in response.content and site_a_study["series"].encode() not in response.content
        # The answer is the one a study that does not exist gets: existence is not revealed.
        assert response.status_code == ghost.status_code, f"GET {path}: {response.status_code} vs {ghost.status_code}"
        if is_search(route):  # QIDO below a study: an empty result, like any study one cannot see
            assert response.status_code in (200, 204, 404), f"GET {path}: {response.status_code}"
            assert response.content in (b"", b"[]", ghost.content), response.content[:200]
        else:
            assert response.status_code == 404, f"GET {path}: {response.status_code}"
        for method in ("delete", "head"):
            real = getattr(outsider_client, method)(path)
            fake = getattr(outsider_client, method)(fill(route, values_for(unknown)))
            assert real.status_code == fake.status_code, f"{method.upper()} {path}"
            allowed = (200, 204, 403, 404, 405) if is_search(route) and method == "head" else (403, 404, 405)
            assert real.status_code in allowed, f"{method.upper()} {path}: {real.status_code}"


def test_an_outsider_cannot_delete_another_sites_study(site_a_study: dict[str, Any], outsider_client: Client) -> None:
    from archive.models import Study

    assert outsider_client.delete(f"/dicom-web/studies/{site_a_study['study']}").status_code in (403, 404)
    assert Study.objects.filter(study_instance_uid=site_a_study["study"]).exists()


@pytest.mark.parametrize(
    "query",
    ["/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances", "/dicom-web/studies?PatientID=PAT-A1"],
)
def test_an_outsider_finds_nothing_of_another_site_in_qido(
    site_a_study: dict[str, Any], outsider_client: Client, query: str
) -> None:
    response = outsider_client.get(query, HTTP_ACCEPT="application/dicom+json")
    assert response.status_code in (200, 204), response.content
    assert site_a_study["study"].encode() not in response.content
    assert b"PAT-A1" not in response.content


def test_an_outsider_sees_no_other_sites_study_in_the_viewer(site_a_study: dict[str, Any], outsider: Any) -> None:
    client = Client()
    client.force_login(outsider)
    for route in routes():
        path = fill(route, values_for(site_a_study))
        if is_api(path) or path.startswith("/admin/") or not about_study(route):
            continue
        response = client.get(path)
        if response.status_code == 405:  # an action taken by POST only (the viewer's heartbeat): POST it
            response = client.post(path)
            ghost = client.post(fill(route, values_for(_unknown_study())))
            # refused by role (403) or as unknown (404), the same as for a study that does not exist
            assert response.status_code == ghost.status_code in (403, 404), f"POST {path}: {response.status_code}"
        else:
            ghost = client.get(fill(route, values_for(_unknown_study())))
            # 404, or refused by role (403, next/previous for a non-reader) as a study that does not exist is
            assert response.status_code == ghost.status_code in (403, 404), f"{path}: {response.status_code}"
            assert response.status_code == 404 or "/worklist/studies/" in path, f"{path}: {response.status_code}"
        assert site_a_study["spec"].patient_name.encode() not in response.content


@pytest.mark.parametrize("who", ["owner_client", "colleague_client"])
def test_the_owner_and_a_colleague_get_every_dicomweb_url_of_their_sites_study(
    site_a_study: dict[str, Any], who: str, request: pytest.FixtureRequest
) -> None:
    client: Client = request.getfixturevalue(who)
    for route in routes():
        path = fill(route, values_for(site_a_study))
        if not (is_api(path) and about_study(route)):
            continue
        response = client.get(path)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.content[:200]!r}"


@pytest.mark.parametrize("who", ["owner_client", "colleague_client"])
def test_the_owner_and_a_colleague_find_their_sites_study_in_qido(
    site_a_study: dict[str, Any], who: str, request: pytest.FixtureRequest
) -> None:
    client: Client = request.getfixturevalue(who)
    response = client.get("/dicom-web/studies?PatientID=PAT-A1", HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 200, response.content
    assert site_a_study["study"] in response.content.decode()
