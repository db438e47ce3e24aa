"""SMART App Launch (EHR launch) into the viewer, against a real oidc-provider EHR: PKCE, state, patient context."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from audit.models import AuditEvent
from integrations.models import EhrIdentity, EhrIntegration, SmartPatient
from integrations.smart.launch import _account, clinician_id_of
from portal.accounts.roles import Role, roles_of
from tests.conftest import stow
from tests.integrations.conftest import audit_reasons
from tests.integrations.smart.ehr import EhrServer

pytestmark = pytest.mark.django_db
CALLBACK = "http://testserver/smart/callback"
DICOM_JSON = "application/dicom+json"


@pytest.fixture
def patient_b_study(owner_client: Client) -> str:
    spec = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B2", accession="ACC-B2")
    assert stow(owner_client, make_series(spec, "CT", count=1)).status_code == 200
    return spec.study_uid


def start(browser: Client, ehr_server: EhrServer, patient: str) -> str:
    """The EHR opens our launch URL; we answer with the EHR's authorization endpoint."""
    launch = ehr_server.launch(patient)
    answer = browser.get("/smart/launch?" + urlencode({"iss": ehr_server.fhir, "launch": launch}))
    assert answer.status_code == 302, answer.content
    assert answer["Referrer-Policy"] == "no-referrer"
    return str(answer["Location"])


def authorize_at_ehr(ehr_server: EhrServer, authorize_url: str) -> str:
    """The clinician's browser at the EHR (sign-in, consent) until it is sent back to our callback."""
    return ehr_server.sign_in_and_consent(requests.Session(), authorize_url, CALLBACK)


def test_an_ehr_launch_runs_pkce_with_state_and_opens_the_patients_study_in_a_session_limited_to_it(
    ehr_server: EhrServer,
    smart_ehr: EhrIntegration,
    site_a_study: dict[str, Any],
    patient_b_study: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = Client()
    authorize = start(browser, ehr_server, "pa")
    sent = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(f"{ehr_server.url}/auth?")
    assert sent["code_challenge_method"] == ["S256"] and len(sent["code_challenge"][0]) == 43
    assert sent["aud"] == [ehr_server.fhir] and sent["redirect_uri"] == [CALLBACK]
    assert len(sent["state"][0]) >= 43 and sent["client_id"] == ["pacs"]
    back = authorize_at_ehr(ehr_server, authorize)
    code = parse_qs(urlsplit(back).query)["code"][0]
    opened = browser.get(back.removeprefix("http://testserver"))
    assert opened.status_code == 302, opened.content
    assert opened["Location"] == f"/viewer/studies/{site_a_study['study']}"
    assert opened["Referrer-Policy"] == "no-referrer"
    assert browser.get(opened["Location"]).status_code == 200
    a = browser.get(f"/dicom-web/studies/{site_a_study['study']}/metadata", HTTP_ACCEPT=DICOM_JSON)
    assert a.status_code == 200
    b = browser.get(f"/dicom-web/studies/{patient_b_study}/metadata", HTTP_ACCEPT=DICOM_JSON)
    assert b.status_code == 404
    assert browser.get("/dicom-web/studies", HTTP_ACCEPT=DICOM_JSON).status_code == 403  # a launched session
    identity = EhrIdentity.objects.get(integration=smart_ehr)
    assert identity.clinician_id == "smart:dr.ada" and roles_of(identity.user) == {Role.REFERRING_CLINICIAN}
    assert SmartPatient.objects.get().patient.patient_id == "PAT-A1"
    event = AuditEvent.objects.get(action="smart.launch")
    assert (event.outcome, event.patient_id, event.study_instance_uid) == ("success", "PAT-A1", site_a_study["study"])
    # The callback URL works once: the same answer again is refused, and the code was never logged.
    again = browser.get(back.removeprefix("http://testserver"))
    assert again.status_code == 400 and b'id="ehr-problem"' in again.content
    text = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    assert code not in text


def test_several_studies_open_the_list_of_the_launched_patient(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any], owner_client: Client
) -> None:
    spec = StudySpec(patient_name="ISOLATION^ALICE", patient_id="PAT-A1", accession="ACC-A2", study_date="20240301")
    assert stow(owner_client, make_series(spec, "MR", count=1)).status_code == 200
    browser = Client()
    back = authorize_at_ehr(ehr_server, start(browser, ehr_server, "pa"))
    opened = browser.get(back.removeprefix("http://testserver"))
    assert opened["Location"] == "/smart/studies"
    listed = browser.get("/smart/studies").content.decode()
    assert listed.index(spec.study_uid) < listed.index(site_a_study["study"])
    event = AuditEvent.objects.get(action="smart.studies")
    assert (event.outcome, event.patient_id) == ("success", "PAT-A1")
    assert event.detail["studies"] == [spec.study_uid, site_a_study["study"]]


def test_a_launch_from_an_unregistered_iss_is_refused_before_anything_is_sent(
    ehr_server: EhrServer, smart_ehr: EhrIntegration
) -> None:
    answer = Client().get("/smart/launch?" + urlencode({"iss": "https://evil.example/fhir", "launch": "x"}))
    assert answer.status_code == 403 and b"not registered" in answer.content
    assert Client().get("/smart/launch?launch=x").status_code == 400
    assert audit_reasons("smart.launch") == ["unknown-iss", "missing"]


def test_a_callback_with_a_state_this_browser_did_not_begin_is_refused(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any]
) -> None:
    victim, attacker = Client(), Client()
    back = authorize_at_ehr(ehr_server, start(attacker, ehr_server, "pa"))
    start(victim, ehr_server, "pa")
    refused = victim.get(back.removeprefix("http://testserver"))  # the attacker's code in the victim's browser
    assert refused.status_code == 400
    assert "_auth_user_id" not in victim.session
    assert audit_reasons("smart.launch") == ["state"]


def test_a_denied_authorization_opens_nothing(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any]
) -> None:
    browser = Client()
    state = parse_qs(urlsplit(start(browser, ehr_server, "pa")).query)["state"][0]
    denied = browser.get("/smart/callback?" + urlencode({"state": state, "error": "access_denied"}))
    assert denied.status_code == 403 and "_auth_user_id" not in browser.session
    assert audit_reasons("smart.launch") == ["denied"]


def test_a_patient_with_no_studies_here_opens_the_empty_list(
    ehr_server: EhrServer, smart_ehr: EhrIntegration, site_a_study: dict[str, Any]
) -> None:
    browser = Client()
    back = authorize_at_ehr(ehr_server, start(browser, ehr_server, "pb"))
    opened = browser.get(back.removeprefix("http://testserver"))
    assert opened["Location"] == "/smart/studies"
    assert browser.get("/smart/studies").status_code == 404
    event = AuditEvent.objects.get(action="smart.studies")
    assert (event.outcome, event.patient_id, event.detail["studies"]) == ("success", "", [])


def test_a_short_ehr_user_keeps_a_readable_clinician_id_and_long_ones_sharing_a_beginning_stay_two_clinicians(
    smart_ehr: EhrIntegration,
) -> None:
    assert clinician_id_of("dr.ada") == "smart:dr.ada"
    common = "https://ehr.example/Practitioner/" + "x" * 40
    first, second = clinician_id_of(common + "-1"), clinician_id_of(common + "-2")
    assert first != second and len(first) == len(second) == 64 and first.startswith("smart#")
    assert clinician_id_of(common + "-1") == first  # the same user is the same clinician next time
    assert _account(smart_ehr, common + "-1") != _account(smart_ehr, common + "-2")
    assert _account(smart_ehr, common + "-1") == _account(smart_ehr, common + "-1")


def test_an_ehr_whose_smart_configuration_cannot_be_read_gets_a_502_page(
    ehr_server: EhrServer, smart_ehr: EhrIntegration
) -> None:
    smart_ehr.smart_fhir_base = f"{ehr_server.url}/elsewhere"
    smart_ehr.save()
    answer = Client().get("/smart/launch?" + urlencode({"iss": smart_ehr.smart_fhir_base, "launch": "x"}))
    assert answer.status_code == 502 and b"could not be reached" in answer.content
    assert audit_reasons("smart.launch") == ["discovery"]
