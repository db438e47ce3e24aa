"""The worklist's JSON API: list, filter and keyset paging, claim and release, by session or bearer token,
the same access policy as the page (an outsider gets 404 for everything), JSON errors, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from django.middleware.csrf import get_token
from django.test import Client
from django.test.utils import CaptureQueriesContext

from archive.models import ApiToken, Site
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Priority, Status
from tests.conftest import bearer_client, role_user
from tests.portal.worklist.conftest import signed_in
from tests.portal.worklist.test_views import HOSTILE, add_rows

pytestmark = pytest.mark.django_db

ITEMS = "/api/worklist/items/"


def item_url(row: WorklistItem, action: str = "") -> str:
    return f"{ITEMS}{row.study_instance_uid}" + (f"/{action}" if action else "")


def claim(client: Client, row: WorklistItem, **body: Any) -> Any:
    return client.post(item_url(row, "claim"), body, content_type="application/json")


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [r["patient_id"] for r in response.json()["results"]]


@pytest.fixture
def rows_a(general_site: Site) -> list[WorklistItem]:
    return add_rows(general_site, 3, "A")


@pytest.fixture
def rows_b(other_site: Site) -> list[WorklistItem]:
    return add_rows(other_site, 2, "B")


def test_the_list_gives_the_rows_a_reader_may_see_as_plain_json(
    rad_client: Client, rows_a: list[WorklistItem], rows_b: list[WorklistItem]
) -> None:
    response = rad_client.get(ITEMS)
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert sorted(r["patient_id"] for r in body["results"]) == ["A-0", "A-1", "A-2"]
    assert body["next"] is None and body["next_cursor"] is None
    first = body["results"][0]
    assert set(first) == {
        "id",
        "study_instance_uid",
        "priority",
        "status",
        "patient_name",
        "patient_id",
        "patient_age",
        "patient_sex",
        "modality",
        "body_part",
        "description",
        "accession_number",
        "site",
        "study_date",
        "arrived_at",
        "images",
        "priors_count",
        "reader",
        "claimed_by",
        "claimed_at",
        "critical",
    }
    assert (first["status"], first["priority"], first["site"], first["claimed_by"]) == (
        "ready",
        "routine",
        "general",
        None,
    )
    event = AuditEvent.objects.filter(action="worklist_view").latest("id")
    assert (event.actor, event.outcome, event.detail["rows"], event.detail["via"]) == ("rad-one", "success", 3, "api")


def test_filters_narrow_the_list(rad_client: Client, general_site: Site) -> None:
    add_rows(general_site, 2, "CT", modality="CT", body_part="CHEST")
    add_rows(general_site, 1, "MR", modality="MR", body_part="HEAD", priority=Priority.STAT)
    add_rows(general_site, 1, "FIN", status=Status.FINAL)
    assert ids(rad_client.get(ITEMS, {"modality": "MR"})) == ["MR-0"]
    assert ids(rad_client.get(ITEMS, {"priority": "stat"})) == ["MR-0"]
    assert sorted(ids(rad_client.get(ITEMS, {"body_part": "chest"}))) == ["CT-0", "CT-1"]
    assert ids(rad_client.get(ITEMS, {"status": "final"})) == ["FIN-0"]
    assert sorted(ids(rad_client.get(ITEMS, {"status": "final,ready", "modality": "MR"}))) == ["MR-0"]
    assert len(ids(rad_client.get(ITEMS, {"status": "all"}))) == 4
    assert ids(rad_client.get(ITEMS, {"site": "elsewhere"})) == []
    assert ids(rad_client.get(ITEMS, {"sort": "patient_id", "desc": "true", "limit": "1"})) == ["MR-0"]


def test_keyset_paging_follows_next_to_the_end_without_repeats(rad_client: Client, general_site: Site) -> None:
    add_rows(general_site, 7, "P")
    seen: list[str] = []
    url: str | None = ITEMS + "?limit=3&sort=patient_id"
    pages = 0
    while url:
        response = rad_client.get(url)
        seen += ids(response)
        url = response.json()["next"]
        pages += 1
        assert url is None or ("cursor=" in url and "sort=patient_id" in url and "limit=3" in url)
    assert (pages, seen) == (3, [f"P-{n}" for n in range(7)])
    first = rad_client.get(ITEMS, {"limit": 3, "sort": "patient_id"}).json()
    assert ids(rad_client.get(ITEMS, {"limit": 3, "sort": "patient_id", "cursor": first["next_cursor"]})) == [
        "P-3",
        "P-4",
        "P-5",
    ]


def test_mine_and_unassigned_follow_claims(rad_client: Client, radiologist: User, rows_a: list[WorklistItem]) -> None:
    assert claim(rad_client, rows_a[1]).status_code == 200
    assert ids(rad_client.get(ITEMS, {"mine": "true"})) == ["A-1"]
    assert sorted(ids(rad_client.get(ITEMS, {"unassigned": "1"}))) == ["A-0", "A-2"]


def test_free_text_is_searched_in_a_post_body_and_refused_in_a_url(rad_client: Client, general_site: Site) -> None:
    add_rows(general_site, 1, "S", patient_name="SMITH^JOHN")
    add_rows(general_site, 1, "T", patient_name="TAYLOR^ANN")
    refused = rad_client.get(ITEMS, {"q": "SMITH"})
    assert refused.status_code == 400 and "POST" in refused.json()["detail"]
    found = rad_client.post(ITEMS + "search", {"q": "smith", "status": ["ready"]}, content_type="application/json")
    assert ids(found) == ["S-0"] and found.json()["next"] is None
    event = AuditEvent.objects.filter(action="worklist_view", outcome="success").latest("id")
    assert "SMITH" not in json.dumps(event.detail).upper()  # the free text is not kept in the trail


def test_a_claim_locks_the_study_and_a_second_claim_is_refused_naming_the_holder(
    rad_client: Client, second_radiologist: User, rows_a: list[WorklistItem]
) -> None:
    row = rows_a[0]
    response = claim(rad_client, row)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["claimed_by"]) == ("in_progress", "rad-one")
    refused = claim(bearer_client(second_radiologist), row)
    assert refused.status_code == 409
    assert refused.json() == {"detail": "Refused: claimed by rad-one.", "holder": "rad-one"}
    row.refresh_from_db()
    assert row.claimed_by is not None and row.claimed_by.username == "rad-one"
    denied = AuditEvent.objects.get(action="worklist_claim", outcome="denied")
    assert (denied.actor, denied.detail["holder"], denied.study_instance_uid) == (
        "rad-two",
        "rad-one",
        row.study_instance_uid,
    )


def test_release_gives_the_study_back_and_only_its_holder_may(
    rad_client: Client, second_radiologist: User, rows_a: list[WorklistItem]
) -> None:
    row = rows_a[0]
    claim(rad_client, row)
    other = signed_in(second_radiologist)
    refused = other.post(item_url(row, "release"))
    assert (refused.status_code, refused.json()["holder"]) == (409, "rad-one")
    released = rad_client.post(item_url(row, "release"))
    assert released.status_code == 200
    assert (released.json()["status"], released.json()["claimed_by"]) == ("ready", None)
    assert rad_client.post(item_url(row, "release")).json() == {
        "detail": "Refused: the study is not claimed.",
        "holder": "",
    }
    assert claim(other, row).status_code == 200


def test_a_technologist_reads_the_list_but_may_not_claim(general_site: Site, rows_a: list[WorklistItem]) -> None:
    technologist = bearer_client(role_user("tech", Role.TECHNOLOGIST, general_site))
    assert len(ids(technologist.get(ITEMS))) == 3
    refused = claim(technologist, rows_a[0])
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Refused: only radiologists and administrators claim studies."
    overriding = bearer_client(role_user("rad-x", Role.RADIOLOGIST, general_site))
    assert claim(overriding, rows_a[0], override=True).json() == {
        "detail": "Refused: only administrators may override a claim.",
        "holder": "",
    }


def test_an_administrator_overrides_a_claim_and_it_is_audited(
    rad_client: Client, admin_user: User, rows_a: list[WorklistItem]
) -> None:
    row = rows_a[0]
    claim(rad_client, row)
    admin = bearer_client(admin_user)
    assert claim(admin, row).status_code == 409
    taken = claim(admin, row, override=True)
    assert (taken.status_code, taken.json()["claimed_by"]) == (200, "admin")
    event = AuditEvent.objects.get(action="worklist_claim_override", outcome="success")
    assert event.detail["previous_holder"] == "rad-one"


def test_an_outsider_gets_404_for_every_row_of_another_site(
    outside_radiologist: User, rows_a: list[WorklistItem], rows_b: list[WorklistItem]
) -> None:
    for client in (signed_in(outside_radiologist), bearer_client(outside_radiologist)):
        assert sorted(ids(client.get(ITEMS, {"status": "all"}))) == ["B-0", "B-1"]
        target = rows_a[0]
        answers = [
            client.get(item_url(target)),
            claim(client, target),
            client.post(item_url(target, "release")),
            client.get(ITEMS + "1.2.3.999999"),  # no such study: the very same answer
        ]
        for response in answers:
            assert (response.status_code, response.json()) == (404, {"detail": "No such study on your worklist."})
        assert ids(client.get(ITEMS, {"cursor": str(target.pk)})) == ["B-0", "B-1"]  # a cursor reveals nothing
    target.refresh_from_db()
    assert target.status == Status.READY and target.claimed_by is None
    denied = AuditEvent.objects.filter(action="worklist_claim", outcome="denied")
    assert denied.count() == 2 and not denied.filter(study_instance_uid=target.study_instance_uid).exists()


def test_a_hostile_patient_name_comes_back_as_plain_json_data(rad_client: Client, general_site: Site) -> None:
    add_rows(general_site, 1, "H", patient_name=HOSTILE)
    response = rad_client.get(ITEMS)
    assert response["Content-Type"] == "application/json"
    assert response.json()["results"][0]["patient_name"] == HOSTILE


@pytest.mark.parametrize(
    "query",
    [
        {"status": "nonsense"},
        {"priority": "0"},
        {"date_from": "2024-13-45"},
        {"date_from": "2024-02-02", "date_to": "2024-01-01"},
        {"cursor": "9" * 30},
        {"cursor": "-1"},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "9" * 40},
        {"mine": "perhaps"},
        {"sort": "password"},
        {"modality": "x" * 500},
        {"site": "\x00"},
        {"patient_name": "DOE"},
    ],
)
def test_bad_parameters_get_a_400_in_json(
    rad_client: Client, rows_a: list[WorklistItem], query: dict[str, str]
) -> None:
    response = rad_client.get(ITEMS, query)
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    ['"text"', "[1, 2]", '{"status": {"a": 1}}', '{"q": ["x"]}', '{"unknown": 1}', '{"limit": "x"}', "{not json"],
)
def test_a_bad_search_body_gets_a_400_in_json(rad_client: Client, body: str) -> None:
    response = rad_client.post(ITEMS + "search", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["detail"]


def test_bad_uids_and_methods_are_answered_precisely(rad_client: Client, rows_a: list[WorklistItem]) -> None:
    assert rad_client.get(ITEMS + "not-a-uid").status_code == 400
    assert rad_client.post(ITEMS + "1." + "2" * 70 + "/claim").status_code == 400
    assert rad_client.delete(item_url(rows_a[0])).status_code == 405
    assert rad_client.get(item_url(rows_a[0], "claim")).status_code == 405
    text = rad_client.post(item_url(rows_a[0], "claim"), "override=1", content_type="application/x-www-form-urlencoded")
    assert text.status_code == 415


def test_tokens_are_checked_and_a_refused_one_is_audited(radiologist: User, rows_a: list[WorklistItem]) -> None:
    assert len(ids(bearer_client(radiologist).get(ITEMS))) == 3
    anonymous = Client().get(ITEMS)
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"] == 'Bearer realm="api"'
    wrong = Client(HTTP_AUTHORIZATION="Bearer pacs_not-a-token").get(ITEMS)
    assert wrong.status_code == 401 and wrong.json()["detail"]
    event = AuditEvent.objects.get(action="api_auth")
    assert (event.outcome, event.detail["path"]) == ("failure", ITEMS)
    assert "pacs_not-a-token" not in json.dumps(event.detail)


def test_a_token_decides_alone_even_beside_a_session_cookie(
    radiologist: User, second_radiologist: User, rows_a: list[WorklistItem]
) -> None:
    client = signed_in(radiologist)
    _, raw = ApiToken.issue(second_radiologist, "ris")
    response = client.post(item_url(rows_a[0], "claim"), {}, "application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.json()["claimed_by"] == "rad-two"


def test_a_session_must_send_its_csrf_token_for_a_claim(radiologist: User, rows_a: list[WorklistItem]) -> None:
    client = Client(enforce_csrf_checks=True)
    signed = signed_in(radiologist)
    client.cookies = signed.cookies
    refused = claim(client, rows_a[0])
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    page = client.get(ITEMS)
    token = get_token(page.wsgi_request)
    client.cookies["csrftoken"] = token
    assert client.post(item_url(rows_a[0], "claim"), {}, "application/json", HTTP_X_CSRFTOKEN=token).status_code == 200


def test_referring_clinicians_have_no_worklist_and_are_told_so(general_site: Site) -> None:
    clinician = bearer_client(role_user("dr-who", Role.REFERRING_CLINICIAN, general_site))
    response = clinician.get(ITEMS)
    assert response.status_code == 403 and response.json()["detail"]
    assert AuditEvent.objects.filter(action="worklist_view", outcome="denied").count() == 1


def test_a_page_costs_the_same_number_of_queries_however_many_rows(rad_client: Client, general_site: Site) -> None:
    add_rows(general_site, 60, "Q")
    counts = []
    for limit in (2, 50):
        with CaptureQueriesContext(connection) as queries:
            assert len(ids(rad_client.get(ITEMS, {"limit": limit}))) == limit
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_session_owing_its_second_factor_is_refused_but_a_token_beside_it_decides_alone(
    radiologist: User, rows_a: list[WorklistItem]
) -> None:
    client = Client()
    client.force_login(radiologist)  # signed in, second factor not passed (radiologists must pass one)
    owing = client.get(ITEMS)
    assert (owing.status_code, owing.json()) == (403, {"detail": "A second authentication factor is required."})
    _, raw = ApiToken.issue(radiologist, "script")
    assert len(ids(client.get(ITEMS, HTTP_AUTHORIZATION=f"Bearer {raw}"))) == 3


def test_a_database_that_is_not_available_is_a_503_to_retry_not_a_500(
    rad_client: Client, rows_a: list[WorklistItem], monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr("portal.worklist.listing.page", locked)
    response = rad_client.get(ITEMS)
    assert (response.status_code, response["Retry-After"]) == (503, "5")
    assert response.json()["detail"].startswith("The database is not available")
