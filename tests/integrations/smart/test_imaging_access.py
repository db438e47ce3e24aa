"""SMART Imaging Access: access tokens of a registered EHR (a real oidc-provider) read that patient's imaging only."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import Patient
from integrations.models import EhrIntegration
from tests.conftest import stow
from tests.integrations.conftest import audit_reasons
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
