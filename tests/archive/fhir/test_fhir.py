"""The FHIR R4 endpoint: ImagingStudy, Patient, Endpoint and metadata, valid R4, behind the one access policy."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from fhir.resources.bundle import Bundle
from fhir.resources.capabilitystatement import CapabilityStatement
from fhir.resources.endpoint import Endpoint
from fhir.resources.imagingstudy import ImagingStudy
from fhir.resources.operationoutcome import OperationOutcome
from fhir.resources.patient import Patient as FhirPatient

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import Patient, Study
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.models import AccessGrant
from tests.conftest import bearer_client, role_user, stow
from tests.mfa_support import force_verified_login

pytestmark = pytest.mark.django_db

R4 = {
    "Bundle": Bundle,
    "CapabilityStatement": CapabilityStatement,
    "Endpoint": Endpoint,
    "ImagingStudy": ImagingStudy,
    "OperationOutcome": OperationOutcome,
    "Patient": FhirPatient,
}
#: Required codes fhir.resources does not check (R4 value sets with a "required" binding).
REQUIRED_CODES = {
    ("ImagingStudy", "status"): {"registered", "available", "cancelled", "entered-in-error", "unknown"},
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
    ("Bundle", "type"): {"searchset"},
    ("Endpoint", "status"): {"active", "suspended", "error", "off", "entered-in-error", "test"},
}


def valid(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` parsed by fhir.resources' R4 (4.0.1) model of its type, with required codes checked; returned as is."""
    R4[body["resourceType"]].parse_obj(body)
    resources = [body] + [e["resource"] for e in body.get("entry", [])]
    for resource in resources:
        R4[resource["resourceType"]].parse_obj(resource)
        for (kind, element), codes in REQUIRED_CODES.items():
            if resource["resourceType"] == kind and element in resource:
                assert resource[element] in codes
    return body


def get(client: Client, path: str, status: int = 200, **kw: Any) -> dict[str, Any]:
    response = client.get(path, **kw)
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/fhir+json; charset=utf-8"
    return valid(json.loads(response.content))


@pytest.fixture
def site_b_study(outsider_client: Client) -> StudySpec:
    spec = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B1", accession="ACC-B1", institution="St Elsewhere")
    response = stow(outsider_client, make_series(spec, "MR", count=1))
    assert response.status_code == 200, response.content
    return spec


def test_metadata_is_a_valid_r4_capability_statement_open_to_anyone(db: Any) -> None:
    body = get(Client(), "/fhir/metadata")
    assert body["fhirVersion"] == "4.0.1"
    kinds = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert set(kinds) == {"ImagingStudy", "Patient", "Endpoint"}
    assert kinds["ImagingStudy"]["searchInclude"] == ["ImagingStudy:endpoint"]


def test_an_imaging_study_read_lists_series_instances_counts_and_the_dicomweb_endpoint(
    owner_client: Client, site_a_study: dict[str, Any]
) -> None:
    study = site_a_study["study"]
    body = get(owner_client, f"/fhir/ImagingStudy/{study}")
    assert body["id"] == study
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{study}", "use": "official"} in body["identifier"]
    accession = [i for i in body["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "ACSN"]
    assert accession[0]["value"] == "ACC-A1"
    assert body["numberOfSeries"] == 2 and body["numberOfInstances"] == 3
    assert [s["numberOfInstances"] for s in body["series"]] == [2, 1]
    assert len(body["series"][0]["instance"]) == 2
    assert site_a_study["instance"] in [i["uid"] for s in body["series"] for i in s["instance"]]
    assert body["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}]
    assert body["started"] == "2024-01-15"
    assert body["endpoint"] == [{"reference": "Endpoint/dicomweb"}]
    patient = Patient.objects.get(patient_id="PAT-A1")
    assert body["subject"] == {"reference": f"Patient/{patient.pk}"}
    event = AuditEvent.objects.filter(action="retrieve", study_instance_uid=study).latest("id")
    assert event.detail == {"via": "FHIR", "resource": "ImagingStudy"} and event.actor == "owner"


def test_a_search_by_patient_identifier_includes_the_endpoint_with_our_dicomweb_root(
    owner_client: Client, site_a_study: dict[str, Any]
) -> None:
    body = get(owner_client, "/fhir/ImagingStudy?patient.identifier=PAT-A1&_include=ImagingStudy:endpoint")
    assert body["total"] == 1
    match, endpoint = body["entry"]
    assert match["search"]["mode"] == "match" and match["resource"]["id"] == site_a_study["study"]
    assert "instance" not in match["resource"]["series"][0]  # searches list series, a read lists instances
    assert endpoint["search"]["mode"] == "include"
    assert endpoint["resource"]["address"] == "http://testserver/dicom-web"
    assert endpoint["resource"]["connectionType"]["code"] == "dicom-wado-rs"
    event = AuditEvent.objects.filter(action="search").latest("id")
    assert event.detail["via"] == "FHIR" and event.detail["results"] == 1


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("identifier=ACC-A1", 1),
        ("identifier=urn:dicom:uid|urn:oid:{study}", 1),
        ("identifier=urn:oid:{study}", 1),
        ("identifier=ACC-NONE", 0),
        ("_id={study}", 1),
        ("patient=Patient/{patient}", 1),
        ("subject={patient}", 1),
        ("started=2024-01-15", 1),
        ("started=2024", 1),
        ("started=ge2024-01-16", 0),
        ("started=gt2023&started=lt2024-02", 1),
        ("started=le2024-01-14", 0),
        ("modality=CT", 1),
        ("modality=http://dicom.nema.org/resources/ontology/DCM|CT", 1),
        ("modality=MR,CT", 1),
        ("modality=MR", 0),
        ("modality=other-system|CT", 0),
        ("patient.identifier=|PAT-A1", 1),
        ("patient.identifier=urn:oid:1.2.3|PAT-A1", 0),
    ],
)
def test_search_parameters_match_as_fhir_defines_them(
    owner_client: Client, site_a_study: dict[str, Any], query: str, found: int
) -> None:
    patient = Patient.objects.get(patient_id="PAT-A1").pk
    body = get(owner_client, "/fhir/ImagingStudy?" + query.format(study=site_a_study["study"], patient=patient))
    assert body["total"] == found
    assert len(body.get("entry", [])) == found


def test_an_outsider_finds_and_reads_nothing_of_another_site(
    outsider_client: Client, site_a_study: dict[str, Any], site_b_study: StudySpec
) -> None:
    body = get(outsider_client, "/fhir/ImagingStudy?patient.identifier=PAT-A1")
    assert body["total"] == 0
    everything = get(outsider_client, "/fhir/ImagingStudy")
    assert [e["resource"]["id"] for e in everything["entry"]] == [site_b_study.study_uid]
    assert "entry" not in body  # FHIR JSON has no empty arrays
    get(outsider_client, f"/fhir/ImagingStudy/{site_a_study['study']}", status=404)
    patient = Patient.objects.get(patient_id="PAT-A1").pk
    get(outsider_client, f"/fhir/Patient/{patient}", status=404)
    assert get(outsider_client, "/fhir/Patient?identifier=PAT-A1")["total"] == 0
    denied = AuditEvent.objects.filter(action="retrieve", outcome="denied", actor="outsider")
    assert denied.count() == 2


def test_a_patient_is_minimal_and_from_dicom(owner_client: Client, site_a_study: dict[str, Any]) -> None:
    patient = Patient.objects.get(patient_id="PAT-A1")
    body = get(owner_client, f"/fhir/Patient/{patient.pk}")
    assert body["name"][0]["family"] == "ISOLATION" and body["name"][0]["given"] == ["ALICE"]
    assert body["gender"] == "female" and body["birthDate"] == "1970-01-01"
    assert body["identifier"] == [{"use": "usual", "value": "PAT-A1"}]
    found = get(owner_client, "/fhir/Patient?identifier=PAT-A1")
    assert [e["resource"]["id"] for e in found["entry"]] == [str(patient.pk)]


def test_patient_ids_take_the_configured_system_or_their_issuer(
    owner_client: Client, site_a_study: dict[str, Any], settings: Any
) -> None:
    settings.PACS_FHIR_PATIENT_ID_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
    patient = Patient.objects.get(patient_id="PAT-A1")
    body = get(owner_client, f"/fhir/Patient/{patient.pk}")
    assert body["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.19.5"
    query = "/fhir/ImagingStudy?patient.identifier=urn:oid:2.16.840.1.113883.19.5|PAT-A1"
    assert get(owner_client, query)["total"] == 1
    Patient.objects.filter(pk=patient.pk).update(issuer_of_patient_id="HOSP-A")
    body = get(owner_client, f"/fhir/Patient/{patient.pk}")
    assert body["identifier"][0]["system"] == "urn:pacs:issuer:HOSP-A"
    assert get(owner_client, "/fhir/ImagingStudy?patient.identifier=urn:pacs:issuer:HOSP-A|PAT-A1")["total"] == 1


def test_a_post_search_keeps_identifiers_out_of_the_url(owner_client: Client, site_a_study: dict[str, Any]) -> None:
    response = owner_client.post(
        "/fhir/ImagingStudy/_search", "patient.identifier=PAT-A1", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    body = valid(json.loads(response.content))
    assert body["total"] == 1
    wrong = owner_client.post("/fhir/ImagingStudy/_search", "{}", content_type="application/json")
    assert wrong.status_code == 415


def test_paging_gives_next_and_previous_links_and_a_fixed_number_of_queries(
    owner_client: Client, site_a_study: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    for n in range(4):
        spec = StudySpec(patient_id=f"PAGE-{n}", accession=f"PAGE{n}", study_date=f"2023010{n + 1}")
        assert stow(owner_client, make_series(spec, "CT", count=1)).status_code == 200
    first = get(owner_client, "/fhir/ImagingStudy?_count=2&_include=ImagingStudy:endpoint")
    assert first["total"] == 5
    assert [e["resource"]["id"] for e in first["entry"]][0] == site_a_study["study"]  # newest first
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "_offset=2" in links["next"] and "_include=ImagingStudy%3Aendpoint" in links["next"]
    second = get(owner_client, links["next"].removeprefix("http://testserver"))
    assert {link["relation"] for link in second["link"]} == {"self", "next", "previous"}
    with django_assert_max_num_queries(12):  # token, policy, count, page, series, audit: not per study
        owner_client.get("/fhir/ImagingStudy?_count=200")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/fhir/ImagingStudy?bogus=1", 400, "invalid"),
        ("/fhir/ImagingStudy?started=yesterday", 400, "invalid"),
        ("/fhir/ImagingStudy?started=2024-01-15T10:00:00Z", 400, "invalid"),
        ("/fhir/ImagingStudy?patient=Robert'); DROP TABLE", 400, "invalid"),
        ("/fhir/ImagingStudy?_count=-1", 400, "invalid"),
        ("/fhir/ImagingStudy?_include=ImagingStudy:subject", 400, "invalid"),
        ("/fhir/ImagingStudy?modality=", 400, "invalid"),
        ("/fhir/ImagingStudy/1.2.3", 404, "not-found"),
        ("/fhir/ImagingStudy/..%2F..%2Fetc", 404, "not-supported"),
        ("/fhir/Patient/abc", 404, "not-found"),
        ("/fhir/Endpoint/other", 404, "not-found"),
        ("/fhir/Observation", 404, "not-supported"),
        ("/fhir/ImagingStudy?_format=xml", 406, "not-supported"),
        ("/fhir/ImagingStudy?_count=%C2%B2", 400, "invalid"),  # a superscript two: a digit to str.isdigit()
        ("/fhir/ImagingStudy?_offset=%D9%A3", 400, "invalid"),  # an Arabic-Indic three
        ("/fhir/Patient?_count=%EF%BC%95", 400, "invalid"),  # a full-width five
        ("/fhir/ImagingStudy?modality=C%00T", 400, "invalid"),
        ("/fhir/ImagingStudy?identifier=A%00B", 400, "invalid"),
        ("/fhir/ImagingStudy?identifier=%7C", 400, "invalid"),  # "|": no code
        ("/fhir/ImagingStudy?patient=Observation/1", 400, "invalid"),
    ],
)
def test_bad_requests_get_an_operation_outcome_never_a_500(
    owner_client: Client, site_a_study: dict[str, Any], path: str, status: int, code: str
) -> None:
    body = get(owner_client, path, status=status)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == code


def test_without_credentials_or_with_a_bad_token_it_is_401_and_writes_are_405(
    owner_client: Client, site_a_study: dict[str, Any]
) -> None:
    response = Client().get("/fhir/ImagingStudy")
    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="fhir"'
    response = Client(HTTP_AUTHORIZATION="Bearer pacs_not-a-token").get("/fhir/ImagingStudy")
    assert response.status_code == 401
    assert Client().get("/fhir/ImagingStudy?access_token=x").status_code == 401  # never a token in the URL
    created = owner_client.post("/fhir/ImagingStudy", "{}", content_type="application/fhir+json")
    assert created.status_code == 405 and created["Allow"] == "GET, HEAD"  # a create, not a search
    response = owner_client.delete(f"/fhir/ImagingStudy/{site_a_study['study']}")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
    assert Study.objects.filter(study_instance_uid=site_a_study["study"]).exists()


def test_a_session_user_searches_and_a_cross_site_post_without_csrf_is_refused(
    colleague: Any, site_a_study: dict[str, Any]
) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(colleague)
    owes = browser.get("/fhir/ImagingStudy")
    assert owes.status_code == 403  # a radiologist's session owes a second factor: JSON, not a redirect
    force_verified_login(browser, colleague)
    assert get(browser, "/fhir/ImagingStudy")["total"] == 1
    response = browser.post(
        "/fhir/ImagingStudy/_search", "patient.identifier=PAT-A1", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 403
    assert json.loads(response.content)["issue"][0]["diagnostics"] == "CSRF check failed"


def test_a_referring_clinician_may_read_a_study_given_to_them_but_not_search(
    site_a_study: dict[str, Any],
) -> None:
    clinician = role_user("dr-fhir", Role.REFERRING_CLINICIAN)
    AccessGrant.objects.create(
        user=clinician,
        study=Study.objects.get(study_instance_uid=site_a_study["study"]),
        reason="EHR launch",
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    client = bearer_client(clinician)
    assert get(client, f"/fhir/ImagingStudy/{site_a_study['study']}")["id"] == site_a_study["study"]
    for path in ("/fhir/ImagingStudy", "/fhir/ImagingStudy/_search", "/fhir/Patient", "/fhir/Patient/_search"):
        body = get(client, path, status=403)
        assert body["issue"][0]["code"] == "forbidden"
    denied = AuditEvent.objects.filter(action="search", outcome="denied", actor="dr-fhir")
    assert denied.count() == 4


def test_result_shaping_parameters_never_widen_and_summary_count_gives_the_total_only(
    owner_client: Client, site_a_study: dict[str, Any]
) -> None:
    counted = get(owner_client, "/fhir/ImagingStudy?_summary=count&_include=ImagingStudy:endpoint")
    assert counted["total"] == 1 and "entry" not in counted
    shaped = get(owner_client, "/fhir/ImagingStudy?_pretty=true&_elements=id&patient.identifier=NOBODY")
    assert shaped["total"] == 0


def test_hostile_values_come_back_as_json_strings(owner_client: Client) -> None:
    spec = StudySpec(
        patient_name='<script>alert(1)</script>^"x"', patient_id="PAT-X", description="</script><img src=x onerror=1>"
    )
    assert stow(owner_client, make_series(spec, "CT", count=1)).status_code == 200
    response = owner_client.get("/fhir/ImagingStudy?patient.identifier=PAT-X")
    body = valid(json.loads(response.content))
    assert body["entry"][0]["resource"]["description"] == "</script><img src=x onerror=1>"
    assert response["Content-Type"].startswith("application/fhir+json")
