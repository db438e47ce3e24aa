"""SMART Imaging Access: access tokens of a registered EHR (a real oidc-provider) read that patient's imaging only."""

from __future__ import annotations

import base64
import io
import time
from datetime import timedelta
from typing import Any

import jwt
import pydicom
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import ApiToken, Patient
from integrations.models import EhrIntegration, SmartPatient
from integrations.smart import tokens
from tests.conftest import stow
from tests.integrations.conftest import audit_reasons
from tests.integrations.smart.conftest import AUDIENCE
from tests.integrations.smart.ehr import EhrServer

pytestmark = pytest.mark.django_db
DICOM_JSON = "application/dicom+json"


@pytest.fixture
def patient_b_study(owner_client: Client) -> str:
    spec = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B2", accession="ACC-B2")
    assert stow(owner_client, make_series(spec, "CT", count=1)).status_code == 200
    return spec.study_uid


def bearer(token: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def study_uids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return sorted(item["0020000D"]["Value"][0] for item in response.json()) if response.content else []


def fhir_study_uids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    entries = response.json().get("entry", [])
    return sorted(e["resource"]["identifier"][0]["value"].removeprefix("urn:oid:") for e in entries)


def test_a_token_for_patient_a_reads_a_over_qido_wado_and_fhir_and_nothing_of_patient_b(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any], patient_b_study: str
) -> None:
    token = ehr_server.authorize("imaging-app", "launch patient/ImagingStudy.read", patient="pa")
    assert token["patient"] == "pa"
    app = bearer(token["access_token"])
    a = site_a_study["study"]
    assert study_uids(app.get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == [a]
    assert study_uids(app.get("/dicom-web/studies?PatientID=PAT-A1", HTTP_ACCEPT=DICOM_JSON)) == [a]
    metadata = app.get(f"/dicom-web/studies/{a}/metadata", HTTP_ACCEPT=DICOM_JSON)
    assert metadata.status_code == 200 and len(metadata.json()) == 3
    assert app.get(f"/dicom-web/studies/{patient_b_study}/metadata", HTTP_ACCEPT=DICOM_JSON).status_code == 404
    other = app.get("/dicom-web/studies?PatientID=PAT-B2", HTTP_ACCEPT=DICOM_JSON)
    assert other.status_code == 403 and other.json()["detail"] == "The token is for another patient"
    assert fhir_study_uids(app.get("/fhir/ImagingStudy")) == [a]
    assert fhir_study_uids(app.get("/fhir/ImagingStudy?patient.identifier=PAT-A1")) == [a]
    assert app.get("/fhir/ImagingStudy?patient.identifier=PAT-B2").status_code == 403
    searched = app.post("/fhir/ImagingStudy/_search", "patient.identifier=PAT-B2", "application/x-www-form-urlencoded")
    assert searched.status_code == 403
    assert audit_reasons("smart.token") == ["another patient"] * 3


def test_a_patient_scope_wildcard_reads_too_and_a_scope_without_imaging_is_403(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any]
) -> None:
    wildcard = ehr_server.authorize("imaging-app", "patient/*.read", patient="pa")["access_token"]
    assert study_uids(bearer(wildcard).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == [site_a_study["study"]]
    observations = ehr_server.authorize("imaging-app", "patient/Observation.read", patient="pa")["access_token"]
    refused = bearer(observations).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)
    assert refused.status_code == 403
    assert bearer(observations).get("/fhir/ImagingStudy").status_code == 403
    assert audit_reasons("smart.token") == ["scope", "scope"]


def test_a_token_without_a_patient_context_is_403(ehr_server: EhrServer, smart_ehr: EhrIntegration) -> None:
    token = ehr_server.authorize("imaging-app", "patient/ImagingStudy.read")["access_token"]
    assert bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 403
    assert audit_reasons("smart.token") == ["no patient"]


def test_a_revoked_token_is_401_from_the_next_check(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any], settings: Any
) -> None:
    settings.PACS_SMART_TOKEN_CACHE_SECONDS = 0
    token = ehr_server.authorize("imaging-app", "patient/ImagingStudy.read", patient="pa")["access_token"]
    assert bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 200
    ehr_server.revoke("imaging-app", token)
    refused = bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert bearer(token).get("/fhir/ImagingStudy").status_code == 401


def test_an_expired_token_is_401(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any]
) -> None:
    token = ehr_server.authorize("imaging-app-brief", "patient/ImagingStudy.read", patient="pa")["access_token"]
    assert bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 200
    time.sleep(2.5)
    assert bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 401


def test_a_token_for_another_audience_is_401_and_audited(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any]
) -> None:
    token = ehr_server.authorize("imaging-app", "patient/ImagingStudy.read", patient="pa", resource=ehr_server.fhir)
    refused = bearer(token["access_token"]).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)
    assert refused.status_code == 401
    assert audit_reasons("smart.token") == ["wrong audience"]


def test_an_unknown_token_is_401(smart_ehr: EhrIntegration) -> None:
    assert bearer("not-a-token-anyone-issued").get("/dicom-web/studies").status_code == 401


def test_jwt_access_tokens_are_checked_against_the_ehrs_keys(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any], patient_b_study: str
) -> None:
    smart_ehr.smart_token_check = "jwks"
    smart_ehr.save()
    token = ehr_server.authorize("imaging-app-jwt", "patient/ImagingStudy.read", patient="pa")["access_token"]
    assert study_uids(bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == [site_a_study["study"]]
    header, body, signature = token.split(".")
    tampered = f"{header}.{body}.{signature[:-4]}AAAA"
    assert bearer(tampered).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 401
    elsewhere = ehr_server.authorize(
        "imaging-app-jwt", "patient/ImagingStudy.read", patient="pa", resource=ehr_server.fhir
    )["access_token"]
    assert bearer(elsewhere).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 401
    assert audit_reasons("smart.token") == ["signature, issuer or expiry", "wrong audience"]


def test_a_patient_without_an_identifier_of_the_integrations_system_sees_nothing(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any]
) -> None:
    token = ehr_server.authorize("imaging-app", "patient/ImagingStudy.read", patient="pz")["access_token"]
    assert study_uids(bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == []


def test_discovery_names_the_ehrs_authorization_server_at_the_root_and_the_fhir_and_dicomweb_bases(
    ehr_server: EhrServer, smart_ehr: EhrIntegration
) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        found = Client().get(path)
        assert found.status_code == 200, path
        body = found.json()
        assert body["authorization_endpoint"] == f"{ehr_server.url}/auth"
        assert body["token_endpoint"] == f"{ehr_server.url}/token"
        assert body["issuer"] == ehr_server.url
        assert body["code_challenge_methods_supported"] == ["S256"]
        assert "patient/ImagingStudy.read" in body["scopes_supported"]
    assert Client().get("/dicom-web/.well-known/smart-configuration").json() == body


def test_without_a_registered_authorization_server_discovery_is_404(db: Any) -> None:
    assert Client().get("/.well-known/smart-configuration").status_code == 404


def test_the_capability_statement_carries_smarts_security_extension(
    ehr_server: EhrServer, smart_ehr: EhrIntegration
) -> None:
    from fhir.resources.capabilitystatement import CapabilityStatement

    statement = Client().get("/fhir/metadata").json()
    CapabilityStatement.parse_obj(statement)
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["authorize"] == f"{ehr_server.url}/auth" and uris["token"] == f"{ehr_server.url}/token"


def test_a_study_of_the_patient_that_arrives_later_is_reached_from_the_next_check(
    ehr_server: EhrServer,
    smart_ehr: EhrIntegration,
    site_a_study: dict[str, Any],
    patient_b_study: str,
    owner_client: Client,
    settings: Any,
) -> None:
    settings.PACS_SMART_TOKEN_CACHE_SECONDS = 0
    token = ehr_server.authorize("imaging-app", "patient/ImagingStudy.read", patient="pa")["access_token"]
    app = bearer(token)
    assert study_uids(app.get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == [site_a_study["study"]]
    later = StudySpec(patient_name="ISOLATION^ALICE", patient_id="PAT-A1", accession="ACC-A9", study_date="20250101")
    assert stow(owner_client, make_series(later, "MR", count=1)).status_code == 200
    reached = study_uids(app.get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON))
    assert reached == sorted([site_a_study["study"], later.study_uid])
    # A FHIR reference to another patient is refused as a Patient ID is.
    theirs = Patient.objects.get(patient_id="PAT-B2").pk
    assert app.get(f"/fhir/ImagingStudy?patient=Patient/{theirs}").status_code == 403
    mine = Patient.objects.get(patient_id="PAT-A1").pk
    assert fhir_study_uids(app.get(f"/fhir/ImagingStudy?patient=Patient/{mine}")) == reached


@pytest.fixture
def introspected(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (host, token) this archive POSTs to any EHR's introspection endpoint (the real call still happens)."""
    sent: list[tuple[str, str]] = []
    real = tokens.requests.post

    def spying(url: str, *args: Any, data: dict[str, str] | None = None, **kwargs: Any) -> Any:
        if isinstance(data, dict) and "token" in data:  # an introspection (the test EHR's own calls are not)
            sent.append((url.split("/")[2], data["token"]))
        return real(url, *args, data=data, **kwargs)

    monkeypatch.setattr(tokens.requests, "post", spying)
    return sent


def test_basic_credentials_and_the_archives_own_tokens_even_revoked_or_expired_are_never_sent_to_an_ehr(
    smart_ehr: EhrIntegration, introspected: list[tuple[str, str]], owner_client: Client
) -> None:
    user = get_user_model().objects.create_user("api-user")
    _, revoked = ApiToken.issue(user, "revoked")
    ApiToken.objects.filter(user=user).update(revoked=True)
    _, expired = ApiToken.issue(user, "expired", expires_at=timezone.now() - timedelta(minutes=1))
    basic = base64.b64encode(b"radiologist:correct horse battery staple").decode()
    for header in (f"Basic {basic}", f"Bearer {revoked}", f"Bearer {expired}", "Bearer pacs_never-issued-here"):
        answer = Client(HTTP_AUTHORIZATION=header).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)
        assert answer.status_code == 401, header
    assert introspected == []
    assert bearer("opaque-token-nobody-issued").get("/dicom-web/studies").status_code == 401
    assert [token for _, token in introspected] == ["opaque-token-nobody-issued"]  # a Bearer token does reach it


def test_an_opaque_token_is_sent_to_no_ehr_when_two_check_by_introspection_and_to_the_one_that_does_otherwise(
    ehr_server: EhrServer,
    smart_ehr: EhrIntegration,
    site_a_study: dict[str, Any],
    introspected: list[tuple[str, str]],
    general_site: Any,
) -> None:
    other = EhrIntegration.objects.create(
        name="Other EHR",
        client_id="other-ehr",
        smart_fhir_base="https://other-ehr.invalid/fhir",
        smart_client_id="pacs",
        smart_audience=AUDIENCE,
    )
    other.sites.add(general_site)
    token = ehr_server.authorize("imaging-app", "patient/ImagingStudy.read", patient="pa")["access_token"]
    assert bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 401
    assert introspected == []  # which EHR's it is cannot be told: it is shown to none
    other.smart_token_check = "jwks"
    other.save()
    cache.clear()
    assert study_uids(bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == [site_a_study["study"]]
    assert {host for host, _ in introspected} == {ehr_server.url.split("/")[2]}


def test_a_jwt_is_checked_only_by_the_integration_of_its_issuer(
    ehr_server: EhrServer,
    smart_ehr: EhrIntegration,
    site_a_study: dict[str, Any],
    introspected: list[tuple[str, str]],
    general_site: Any,
) -> None:
    smart_ehr.smart_token_check = "jwks"
    smart_ehr.save()
    EhrIntegration.objects.create(
        name="Other EHR",
        client_id="other-ehr",
        smart_fhir_base="https://other-ehr.invalid/fhir",
        smart_client_id="pacs",
        smart_audience=AUDIENCE,
    ).sites.add(general_site)
    token = ehr_server.authorize("imaging-app-jwt", "patient/ImagingStudy.read", patient="pa")["access_token"]
    assert study_uids(bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == [site_a_study["study"]]
    forged = jwt.encode({"iss": "https://nobody.invalid", "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")
    assert bearer(forged).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 401
    assert introspected == []


def test_one_address_may_have_only_so_many_unknown_tokens_checked_a_minute(
    smart_ehr: EhrIntegration, introspected: list[tuple[str, str]], settings: Any
) -> None:
    settings.PACS_SMART_CHECKS_PER_MINUTE = 2
    answers = [bearer(f"random-token-{n}").get("/dicom-web/studies").status_code for n in range(4)]
    assert answers == [401, 401, 401, 401]
    assert [token for _, token in introspected] == ["random-token-0", "random-token-1"]
    assert audit_reasons("smart.token") == ["rate limited", "rate limited"]
    elsewhere = Client(HTTP_AUTHORIZATION="Bearer random-token-9", REMOTE_ADDR="192.0.2.7")
    assert elsewhere.get("/dicom-web/studies").status_code == 401
    assert introspected[-1][1] == "random-token-9"  # another address has its own count


def test_the_ehrs_patient_is_ours_only_under_the_integrations_issuer_of_patient_id(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any], owner_client: Client
) -> None:
    stranger = StudySpec(patient_name="STRANGER^SAM", patient_id="PAT-A1", accession="OUT-1")
    assert stow(owner_client, with_issuer(make_series(stranger, "CT", count=1), "OUTSIDE-HOSP")).status_code == 200
    token = ehr_server.authorize("imaging-app", "patient/ImagingStudy.read", patient="pa")["access_token"]
    assert study_uids(bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == [site_a_study["study"]]
    assert SmartPatient.objects.get().patient.issuer_of_patient_id == ""
    smart_ehr.smart_patient_issuer = "OUTSIDE-HOSP"
    smart_ehr.save()
    cache.clear()
    token = ehr_server.authorize("imaging-app", "patient/ImagingStudy.read", patient="pa")["access_token"]
    assert study_uids(bearer(token).get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON)) == [stranger.study_uid]
    assert SmartPatient.objects.get().patient.issuer_of_patient_id == "OUTSIDE-HOSP"


def with_issuer(parts: list[bytes], issuer: str) -> list[bytes]:
    out = []
    for raw in parts:
        ds = pydicom.dcmread(io.BytesIO(raw))
        ds.IssuerOfPatientID = issuer
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out
