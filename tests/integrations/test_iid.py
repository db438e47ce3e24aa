"""IHE Invoke Image Display: who may open what, the profile's parameters, its refusals, and the audit trail."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from audit.models import AuditEvent
from tests.conftest import stow
from tests.integrations.conftest import LAUNCH_PATH, Ehr, audit_reasons, launch_body, token_of

pytestmark = pytest.mark.django_db
IID = "/IHEInvokeImageDisplay"


def iid(client: Client, **params: str) -> Any:
    return client.get(IID + "?" + urlencode(params))


@pytest.fixture
def radiologist(owner: User) -> Client:
    """A technologist of site A in a signed-in browser session (no MFA needed for the role)."""
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def history(owner_client: Client, site_a_study: dict[str, Any]) -> dict[str, str]:
    """Patient PAT-A1 has three studies: CT 2024-01-15 09:30 (site_a_study), MR 2024-03-01, CT 2023-06-30."""
    uids = {"ct-2024": site_a_study["study"]}
    more = (("mr-2024", "MR", "20240301", "ACC-A2"), ("ct-2023", "CT", "20230630", "ACC-A3"))
    for name, modality, date, accession in more:
        spec = StudySpec(patient_name="ISOLATION^ALICE", patient_id="PAT-A1", accession=accession, study_date=date)
        assert stow(owner_client, make_series(spec, modality, count=1)).status_code == 200
        uids[name] = spec.study_uid
    return uids


@pytest.fixture
def other_patient_study(owner_client: Client) -> str:
    spec = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B2", accession="ACC-B2")
    assert stow(owner_client, make_series(spec, "CT", count=1)).status_code == 200
    return spec.study_uid


def listed(response: Any) -> list[str]:
    body = response.content.decode()
    return [part.split('"')[0] for part in body.split('href="/viewer/studies/')[1:]]


def test_a_study_request_opens_the_viewer_on_that_study(radiologist: Client, site_a_study: dict[str, Any]) -> None:
    response = iid(radiologist, requestType="STUDY", studyUID=site_a_study["study"])
    assert response.status_code == 302
    assert response["Location"] == f"/viewer/studies/{site_a_study['study']}"
    assert response["Cache-Control"].startswith("max-age=0") or "no-store" in response["Cache-Control"]
    event = AuditEvent.objects.get(action="iid.invoke")
    assert (event.outcome, event.study_instance_uid, event.patient_id) == ("success", site_a_study["study"], "PAT-A1")


def test_an_accession_request_with_an_issuer_opens_its_study(radiologist: Client, site_a_study: dict[str, Any]) -> None:
    response = iid(radiologist, requestType="STUDY", accessionNumber="ACC-A1^^^&1.2.3&ISO", viewerType="IHE_BIR")
    assert response.status_code == 302 and response["Location"] == f"/viewer/studies/{site_a_study['study']}"


def test_several_studies_open_a_list_most_recent_first(radiologist: Client, history: dict[str, str]) -> None:
    response = iid(radiologist, requestType="STUDY", studyUID=f"{history['ct-2023']},{history['mr-2024']}")
    assert response.status_code == 200
    assert listed(response) == [history["mr-2024"], history["ct-2023"]]


def test_a_patient_request_lists_the_patients_studies_and_honours_its_filters(
    radiologist: Client, history: dict[str, str], other_patient_study: str
) -> None:
    everything = iid(radiologist, requestType="PATIENT", patientID="PAT-A1")
    assert listed(everything) == [history["mr-2024"], history["ct-2024"], history["ct-2023"]]
    ct = iid(radiologist, requestType="PATIENT", patientID="PAT-A1", modalitiesInStudy="CT")
    assert listed(ct) == [history["ct-2024"], history["ct-2023"]]
    latest = iid(radiologist, requestType="PATIENT", patientID="PAT-A1", mostRecentResults="1")
    assert latest.status_code == 302 and latest["Location"] == f"/viewer/studies/{history['mr-2024']}"
    window = iid(
        radiologist,
        requestType="PATIENT",
        patientID="PAT-A1",
        lowerDateTime="2024-01-15T09:00:00",
        upperDateTime="2024-03-01",
        mostRecentResults="5",
    )
    assert listed(window) == [history["mr-2024"], history["ct-2024"]]
    after_the_scan = iid(radiologist, requestType="PATIENT", patientID="PAT-A1", lowerDateTime="2024-01-15T10:00:00")
    assert after_the_scan.status_code == 302 and after_the_scan["Location"].endswith(history["mr-2024"])


def test_a_patient_id_with_an_issuer_matches_only_that_issuer(radiologist: Client, history: dict[str, str]) -> None:
    elsewhere = iid(radiologist, requestType="PATIENT", patientID="PAT-A1^^^&2.16.840.1.113883.3.9&ISO")
    assert elsewhere.status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"requestType": "SERIES", "studyUID": "1.2.3"},
        {"requestType": "STUDY"},
        {"requestType": "STUDY", "studyUID": "1.2.3", "accessionNumber": "A"},
        {"requestType": "STUDY", "studyUID": "1.2.x"},
        {"requestType": "STUDY", "studyUID": "1.2.3,,1.2.4"},
        {"requestType": "STUDY", "studyUID": "1.2.3", "mostRecentResults": "2"},
        {"requestType": "PATIENT"},
        {"requestType": "PATIENT", "patientID": "A^B^^X"},
        {"requestType": "PATIENT", "patientID": "A^^^&1.2&DNS"},
        {"requestType": "PATIENT", "patientID": "A", "mostRecentResults": "0"},
        {"requestType": "PATIENT", "patientID": "A", "mostRecentResults": "٣"},
        {"requestType": "PATIENT", "patientID": "A", "lowerDateTime": "2024-02-30"},
        {"requestType": "PATIENT", "patientID": "A", "lowerDateTime": "2024-03-01", "upperDateTime": "2024-01-01"},
        {"requestType": "PATIENT", "patientID": "A", "modalitiesInStudy": "CT;MR"},
        {"requestType": "STUDY", "studyUID": "1.2.3", "viewerType": "OTHER_VIEWER"},
        {"requestType": "STUDY", "studyUID": "1.2.3", "keyImagesOnly": "yes"},
        {"requestType": "STUDY", "studyUID": "1.2.3", "studyUid": "1.2.4"},
    ],
)
def test_a_request_the_profile_does_not_allow_is_a_400_that_says_why(
    radiologist: Client, params: dict[str, str]
) -> None:
    response = iid(radiologist, **params)
    assert response.status_code == 400
    assert b'id="iid-problem"' in response.content
    assert audit_reasons("iid.invoke") == ["bad request"]


def test_a_study_the_user_may_not_see_answers_the_same_page_as_one_that_does_not_exist(
    site_a_study: dict[str, Any], outsider: User
) -> None:
    client = Client()
    client.force_login(outsider)
    hidden = iid(client, requestType="STUDY", studyUID=site_a_study["study"])
    missing = iid(client, requestType="STUDY", studyUID="1.2.3.4.5")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content
    assert b"ISOLATION" not in hidden.content and b"PAT-A1" not in hidden.content
    assert audit_reasons("iid.invoke") == ["nothing visible", "nothing visible"]


def test_anonymous_browsers_are_sent_to_sign_in_and_other_clients_get_401(site_a_study: dict[str, Any]) -> None:
    browser = iid(Client(), requestType="STUDY", studyUID=site_a_study["study"])
    assert browser.status_code == 302
    assert browser["Location"].startswith("/accounts/login/?next=/IHEInvokeImageDisplay%3F")
    machine = Client().get(IID + "?requestType=STUDY&studyUID=" + site_a_study["study"], HTTP_ACCEPT="application/json")
    assert machine.status_code == 401 and machine["WWW-Authenticate"].startswith("Bearer")
    assert audit_reasons("iid.invoke") == ["not signed in", "not signed in"]


def test_a_launched_session_opens_only_its_grants_through_iid(
    ehr: Ehr, site_a_study: dict[str, Any], other_patient_study: str
) -> None:
    issued = Client().post(
        LAUNCH_PATH,
        json.dumps(launch_body([site_a_study["study"]])),
        content_type="application/json",
        HTTP_AUTHORIZATION=ehr.basic(),
    )
    url = issued.json()["launch_url"]
    browser = Client()
    path = url.split("#", 1)[0].removeprefix("http://testserver")
    assert browser.post(path, {"token": token_of(url)}).status_code == 200
    mine = iid(browser, requestType="PATIENT", patientID="PAT-A1")
    assert mine.status_code == 302 and mine["Location"] == f"/viewer/studies/{site_a_study['study']}"
    theirs = iid(browser, requestType="STUDY", studyUID=other_patient_study)
    assert theirs.status_code == 404
    assert iid(browser, requestType="PATIENT", patientID="PAT-B2").status_code == 404


def test_a_signed_in_post_is_405_and_an_anonymous_one_is_sent_to_sign_in(radiologist: Client) -> None:
    assert radiologist.post(IID + "?requestType=STUDY&studyUID=1.2.3").status_code == 405
    assert Client().post(IID + "?requestType=STUDY&studyUID=1.2.3")["Location"].startswith("/accounts/login/")
