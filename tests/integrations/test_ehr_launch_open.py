"""Opening a launch link in process: one use, the right refusals, and a session that sees only its studies."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

from archive.dicom.synthetic import StudySpec, make_series
from audit.models import AuditEvent
from integrations.models import EhrIdentity, EhrLaunch
from portal.accounts.roles import Role, roles_of
from portal.models import AccessGrant, UserProfile
from tests.conftest import bearer_client, stow
from tests.integrations.conftest import LAUNCH_PATH, Ehr, audit_reasons, launch_body, token_of

pytestmark = pytest.mark.django_db


def issue(ehr: Ehr, body: dict[str, Any]) -> str:
    response = Client().post(
        LAUNCH_PATH, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=ehr.basic()
    )
    assert response.status_code == 201, response.content
    return str(response.json()["launch_url"])


def open_link(browser: Client, url: str, client_id: str | None = None) -> Any:
    """What the launch page's script does: POST the fragment to the page's own path."""
    path, token = url.split("#", 1)[0].removeprefix("http://testserver"), token_of(url)
    if client_id is not None:
        path = f"/ehr/launch/{client_id}"
    page = browser.get(path)
    assert page.status_code == 200 and page["Referrer-Policy"] == "no-referrer"
    return browser.post(path, {"token": token})


@pytest.fixture
def other_patient_study(owner_client: Client) -> str:
    spec = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B2", accession="ACC-B2")
    assert stow(owner_client, make_series(spec, "CT", count=1)).status_code == 200
    return spec.study_uid


def test_a_launch_link_opens_the_viewer_in_a_session_that_sees_only_the_launched_study(
    ehr: Ehr, site_a_study: dict[str, Any], other_patient_study: str
) -> None:
    browser = Client()
    answer = open_link(browser, issue(ehr, launch_body([site_a_study["study"]])))
    assert answer.status_code == 200
    assert answer.json() == {"location": f"/viewer/studies/{site_a_study['study']}"}
    assert answer["Cache-Control"] == "no-store"
    assert browser.get(answer.json()["location"]).status_code == 200
    mine = browser.get(f"/dicom-web/studies/{site_a_study['study']}/series", HTTP_ACCEPT="application/dicom+json")
    assert mine.status_code == 200 and len(mine.json()) == 2
    theirs = browser.get(f"/dicom-web/studies/{other_patient_study}/series", HTTP_ACCEPT="application/dicom+json")
    assert theirs.status_code in (204, 404) or theirs.json() == []
    search = browser.get("/dicom-web/studies?PatientID=PAT-B2", HTTP_ACCEPT="application/dicom+json")
    assert search.status_code == 403
    assert browser.get(f"/viewer/studies/{other_patient_study}").status_code == 404
    user = User.objects.get(ehr_identities__clinician_id="Practitioner/42")
    assert roles_of(user) == {Role.REFERRING_CLINICIAN}
    assert not user.has_usable_password()
    assert (user.email, user.first_name) == ("ada@ehr.example", "Dr Ada Lovelace")
    event = AuditEvent.objects.get(action="ehr.launch.use")
    assert (event.outcome, event.actor, event.study_instance_uid) == ("success", user.username, site_a_study["study"])


def test_the_scope_narrows_even_what_the_account_could_otherwise_see(
    ehr: Ehr, site_a_study: dict[str, Any], other_patient_study: str
) -> None:
    browser = Client()
    open_link(browser, issue(ehr, launch_body([site_a_study["study"]])))
    user = User.objects.get(ehr_identities__isnull=False)
    # The launch's grant serves only that session: a token of the same account never sees it.
    token = bearer_client(user)
    metadata = token.get(f"/dicom-web/studies/{site_a_study['study']}/metadata", HTTP_ACCEPT="application/dicom+json")
    assert metadata.status_code == 404
    # An ordinary grant and a referring name matching both studies: the launched session still sees only one.
    from archive.models import Study

    AccessGrant.objects.create(
        user=user,
        study=Study.objects.get(study_instance_uid=other_patient_study),
        reason="by hand",
        expires_at=timezone.now() + timezone.timedelta(hours=1),
    )
    UserProfile.objects.update_or_create(user=user, defaults={"dicom_person_name": "REFERRER^ALICE"})
    assert bearer_client(user).get(f"/dicom-web/studies/{other_patient_study}/metadata").status_code == 200
    assert browser.get(f"/viewer/studies/{other_patient_study}").status_code == 404
    assert browser.get(f"/dicom-web/studies/{other_patient_study}/metadata").status_code == 404
    assert browser.get(f"/viewer/studies/{site_a_study['study']}").status_code == 200


def test_a_launch_link_works_once(ehr: Ehr, site_a_study: dict[str, Any]) -> None:
    url = issue(ehr, launch_body([site_a_study["study"]]))
    assert open_link(Client(), url).status_code == 200
    again = open_link(Client(), url)
    assert (again.status_code, again.json()) == (410, {"location": "/ehr/launch/problem/used"})
    assert audit_reasons("ehr.launch.use") == ["used"]


def test_a_launch_link_opened_after_its_lifetime_is_refused_as_expired(
    ehr: Ehr, site_a_study: dict[str, Any], moving_clock: Any
) -> None:
    url = issue(ehr, launch_body([site_a_study["study"]]))
    moving_clock.advance(121)
    browser = Client()
    answer = open_link(browser, url)
    assert (answer.status_code, answer.json()) == (410, {"location": "/ehr/launch/problem/expired"})
    assert audit_reasons("ehr.launch.use") == ["expired"]
    assert "_auth_user_id" not in browser.session
    assert not AccessGrant.objects.exists()


@pytest.mark.parametrize(
    ("change", "problem", "status"),
    [
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "tampered", 400),
        (lambda t: ("A" if t[0] != "A" else "B") + t[1:], "tampered", 400),
        (lambda t: t[:20], "tampered", 400),
        (lambda t: "", "missing", 400),
        (lambda t: "<script>alert(1)</script>", "tampered", 400),
    ],
    ids=["last character", "first character", "truncated", "empty", "markup"],
)
def test_an_altered_token_is_refused_and_leaves_the_real_one_usable(
    ehr: Ehr, site_a_study: dict[str, Any], change: Any, problem: str, status: int
) -> None:
    url = issue(ehr, launch_body([site_a_study["study"]]))
    base, token = url.split("#")
    answer = open_link(Client(), f"{base}#{change(token)}")
    assert (answer.status_code, answer.json()) == (status, {"location": f"/ehr/launch/problem/{problem}"})
    assert audit_reasons("ehr.launch.use") == [problem]
    assert open_link(Client(), url).status_code == 200


def test_a_well_formed_token_this_server_never_issued_is_unknown(ehr: Ehr, site_a_study: dict[str, Any]) -> None:
    from integrations.ehr.tokens import new_token

    forged, _ = new_token()
    answer = open_link(Client(), f"http://testserver/ehr/launch/test-ehr#{forged}")
    assert (answer.status_code, answer.json()) == (404, {"location": "/ehr/launch/problem/unknown"})


def test_a_token_opened_through_another_integration_is_refused_and_burnt(
    ehr: Ehr, other_ehr: Ehr, site_a_study: dict[str, Any]
) -> None:
    url = issue(ehr, launch_body([site_a_study["study"]]))
    answer = open_link(Client(), url, client_id=other_ehr.client_id)
    assert (answer.status_code, answer.json()) == (403, {"location": "/ehr/launch/problem/wrong-integration"})
    then = open_link(Client(), url)
    assert (then.status_code, then.json()["location"]) == (410, "/ehr/launch/problem/used")
    assert audit_reasons("ehr.launch.use") == ["wrong-integration", "used"]
    assert not AccessGrant.objects.exists()


@pytest.mark.parametrize("problem", ["missing", "tampered", "unknown", "expired", "used", "wrong-integration"])
def test_every_problem_has_a_page_that_says_what_happened_and_what_to_do(problem: str) -> None:
    page = Client().get(f"/ehr/launch/problem/{problem}")
    assert page.status_code in (400, 403, 404, 410)
    text = page.content.decode()
    assert "What to do:" in text and "Traceback" not in text
    assert "script" not in text.split("<body>")[1] or "<script" not in text


def test_the_clinicians_second_launch_reuses_the_account_and_a_disabled_account_is_refused(
    ehr: Ehr, site_a_study: dict[str, Any]
) -> None:
    open_link(Client(), issue(ehr, launch_body([site_a_study["study"]])))
    open_link(Client(), issue(ehr, launch_body([site_a_study["study"]])))
    assert EhrIdentity.objects.count() == 1 and User.objects.filter(ehr_identities__isnull=False).count() == 1
    User.objects.filter(ehr_identities__isnull=False).update(is_active=False)
    answer = open_link(Client(), issue(ehr, launch_body([site_a_study["study"]])))
    assert answer.json() == {"location": "/ehr/launch/problem/account-disabled"}


def test_an_ehr_cannot_reach_an_existing_account_by_naming_its_address(
    ehr: Ehr, site_a_study: dict[str, Any], colleague: User
) -> None:
    body = launch_body([site_a_study["study"]])
    body["clinician"] = {**body["clinician"], "email": colleague.email, "id": colleague.username}
    browser = Client()
    open_link(browser, issue(ehr, body))
    assert int(browser.session["_auth_user_id"]) != colleague.pk


def test_images_not_yet_available_wait_on_a_refreshing_page_and_open_when_they_arrive(
    ehr: Ehr, general_site: Any, owner_client: Client
) -> None:
    browser = Client()
    answer = open_link(browser, issue(ehr, launch_body(accessions=["ACC-LATE"])))
    assert answer.json() == {"location": "/ehr/waiting"}
    waiting = browser.get("/ehr/waiting")
    assert waiting.status_code == 200
    assert '<meta http-equiv="refresh" content="10">' in waiting.content.decode()
    assert "Images not yet available" in waiting.content.decode()
    # It arrives, but for another patient: never granted, audited.
    wrong = StudySpec(patient_name="OTHER^BOB", patient_id="PAT-B2", accession="ACC-LATE")
    assert stow(owner_client, make_series(wrong, "CT", count=1)).status_code == 200
    assert browser.get("/ehr/waiting").status_code == 200
    assert browser.get("/ehr/waiting").status_code == 200
    refused = AuditEvent.objects.filter(action="ehr.launch.study-refused", study_instance_uid=wrong.study_uid)
    assert refused.count() == 1
    # Then the right one arrives.
    right = StudySpec(patient_name="ISOLATION^ALICE", patient_id="PAT-A1", accession="ACC-LATE")
    assert stow(owner_client, make_series(right, "CT", count=1)).status_code == 200
    arrived = browser.get("/ehr/waiting")
    assert (arrived.status_code, arrived["Location"]) == (302, f"/viewer/studies/{right.study_uid}")
    assert browser.get(f"/viewer/studies/{right.study_uid}").status_code == 200
    assert browser.get(f"/viewer/studies/{wrong.study_uid}").status_code == 404


def test_the_waiting_page_belongs_to_a_launched_session(reader: User) -> None:
    browser = Client()
    browser.force_login(reader)
    assert browser.get("/ehr/waiting").status_code == 404
    assert Client().get("/ehr/waiting").status_code == 302  # anonymous: to sign-in


def test_a_launch_replaces_whatever_session_the_browser_had(
    ehr: Ehr, site_a_study: dict[str, Any], colleague: User
) -> None:
    browser = Client()
    browser.force_login(colleague)
    before = browser.session.session_key
    open_link(browser, issue(ehr, launch_body([site_a_study["study"]])))
    assert browser.session.session_key != before
    assert int(browser.session["_auth_user_id"]) != colleague.pk
    assert EhrLaunch.objects.get().consumed_at is not None


@pytest.mark.django_db(transaction=True)
def test_browsers_racing_with_one_token_cannot_both_open_it(ehr: Ehr, site_a_study: dict[str, Any]) -> None:
    url = issue(ehr, launch_body([site_a_study["study"]]))
    path, token = "/ehr/launch/test-ehr", token_of(url)
    ready = threading.Barrier(4)
    statuses: list[int] = []

    def browser() -> None:
        client = Client()
        client.get(path)
        ready.wait()
        statuses.append(client.post(path, {"token": token}).status_code)
        connection.close()

    threads = [threading.Thread(target=browser) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 410, 410, 410]
    assert AccessGrant.objects.count() == 1
    assert audit_reasons("ehr.launch.use") == ["used"] * 3


def test_a_launch_of_several_studies_lists_them_and_waits_for_the_rest(
    ehr: Ehr, site_a_study: dict[str, Any], owner_client: Client
) -> None:
    second = StudySpec(patient_name="ISOLATION^ALICE", patient_id="PAT-A1", accession="ACC-A2", description="MR <b>")
    assert stow(owner_client, make_series(second, "MR", count=1)).status_code == 200
    browser = Client()
    body = launch_body([site_a_study["study"], second.study_uid], accessions=["ACC-LATER"])
    answer = open_link(browser, issue(ehr, body))
    assert answer.json() == {"location": "/ehr/studies"}
    page = browser.get("/ehr/studies")
    text = page.content.decode()
    assert page.status_code == 200
    assert (
        f'href="/viewer/studies/{site_a_study["study"]}"' in text
        and f'href="/viewer/studies/{second.study_uid}"' in text
    )
    assert "MR &lt;b&gt;" in text
    assert "1 more not yet available" in text and '<meta http-equiv="refresh" content="10">' in text
    assert browser.get(f"/viewer/studies/{second.study_uid}").status_code == 200
