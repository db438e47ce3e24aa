"""CORS for viewers served from another origin (OHIF): off by default, DICOMweb only, bearer tokens only."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from archive.models import ApiToken

OHIF = "http://127.0.0.1:3000"


@pytest.fixture
def cors_on(settings: Any) -> None:
    settings.PACS_CORS_ORIGINS = [OHIF]


@pytest.fixture
def token(reader: User) -> str:
    return ApiToken.issue(reader, "ohif")[1]


def studies_url(ct_study: dict[str, Any]) -> str:
    return f"/dicom-web/studies?StudyInstanceUID={ct_study['spec'].study_uid}"


@pytest.mark.django_db
def test_it_sends_no_cors_headers_unless_origins_are_configured(
    client: Client, token: str, ct_study: dict[str, Any]
) -> None:
    response = client.get(studies_url(ct_study), HTTP_ORIGIN=OHIF, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
def test_it_answers_a_preflight_from_an_allowed_origin_without_credentials(client: Client, cors_on: None) -> None:
    response = client.options(
        "/dicom-web/studies",
        HTTP_ORIGIN=OHIF,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, accept",
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == OHIF
    assert "Authorization" in response["Access-Control-Allow-Headers"]
    assert "GET" in response["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in response


@pytest.mark.django_db
def test_a_bearer_request_from_an_allowed_origin_is_readable_there(
    client: Client, cors_on: None, token: str, ct_study: dict[str, Any]
) -> None:
    response = client.get(studies_url(ct_study), HTTP_ORIGIN=OHIF, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and len(response.json()) == 1
    assert response["Access-Control-Allow-Origin"] == OHIF
    assert "ETag" in response["Access-Control-Expose-Headers"]
    assert "Origin" in response["Vary"]
    assert "Access-Control-Allow-Credentials" not in response


@pytest.mark.django_db
@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:3001"])
def test_other_origins_get_no_cors_headers(
    client: Client, cors_on: None, token: str, ct_study: dict[str, Any], origin: str
) -> None:
    preflight = client.options("/dicom-web/studies", HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET")
    assert "Access-Control-Allow-Origin" not in preflight
    response = client.get(studies_url(ct_study), HTTP_ORIGIN=origin, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
@pytest.mark.parametrize("origin", [OHIF, "http://evil.example"])
def test_a_cross_origin_request_never_rides_on_the_session_cookie(
    client: Client, cors_on: None, reader: User, ct_study: dict[str, Any], origin: str
) -> None:
    client.force_login(reader)
    assert client.get(studies_url(ct_study)).status_code == 200  # same origin: the session works
    response = client.get(studies_url(ct_study), HTTP_ORIGIN=origin)
    assert response.status_code == 401


@pytest.mark.django_db
def test_it_leaves_pages_outside_dicomweb_alone(client: Client, cors_on: None) -> None:
    response = client.get("/accounts/login/", HTTP_ORIGIN=OHIF)
    assert "Access-Control-Allow-Origin" not in response
