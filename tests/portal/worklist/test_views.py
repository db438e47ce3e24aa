"""The worklist pages over HTTP: who sees what, filters, sorting, paging, claims, live changes, saved lists."""

from __future__ import annotations

import functools
import re
import time
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from archive.models import Patient, Site, Study
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.worklist.models import SavedWorklist, WorklistItem
from portal.worklist.statuses import Priority, Status
from tests.conftest import role_user
from tests.portal.worklist.conftest import signed_in, store_study

HOSTILE = '<script>alert("x")</script>^<b>BOLD</b>'


def add_rows(site: Site, count: int, prefix: str = "R", **values: Any) -> list[WorklistItem]:
    """Rows written directly (the index rows they stand for too), as the benchmark does."""
    rows = []
    for n in range(count):
        uid = f"1.2.826.0.1.{site.pk}.{prefix.encode().hex()}.{n}"
        name = values.pop("patient_name", f"{prefix}^{n:03d}")
        patient = Patient.objects.create(patient_id=f"{prefix}-{n}", patient_name=name)
        study = Study.objects.create(study_instance_uid=uid, patient=patient, site=site)
        fields = {"status": Status.READY, "modality": "CT", "site_code": site.code, **values}
        rows.append(
            WorklistItem.objects.create(
                study=study,
                study_instance_uid=uid,
                site=site,
                patient_id=patient.patient_id,
                patient_name=patient.patient_name,
                patient_name_search=patient.patient_name.upper(),
                **fields,
            )
        )
    return rows


def row_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="item-(\d+)"', html)]


def post_rows(client: Client, **filters: Any) -> Any:
    return client.post("/worklist/rows", filters)


def shown(client: Client, ordered: bool = False, **filters: Any) -> list[str]:
    """The patient IDs of the rows the filters give, as shown (or sorted)."""
    found = re.findall(r'<td class="col-patient_id">([^<]*)</td>', post_rows(client, **filters).content.decode())
    return sorted(found) if ordered else found


@pytest.fixture
def rows_a(general_site: Site) -> list[WorklistItem]:
    return add_rows(general_site, 3, "A")


@pytest.fixture
def rows_b(other_site: Site) -> list[WorklistItem]:
    return add_rows(other_site, 2, "B")


def test_a_radiologist_lands_on_the_worklist_and_a_technologist_on_the_qc_list(
    rad_client: Client, general_site: Site
) -> None:
    home = rad_client.get("/")
    assert home.status_code == 200 and b'<table class="wl-table" id="worklist">' in home.content
    assert b'id="link-worklist"' in rad_client.get("/?home").content
    technologist = signed_in(role_user("tech", Role.TECHNOLOGIST, general_site))
    home = technologist.get("/")
    assert home.status_code == 200 and b'<table class="wl-table" id="qc-list">' in home.content
    assert b'id="link-qc"' in technologist.get("/?home").content


def test_the_page_shows_only_rows_of_visible_studies(
    rad_client: Client, rows_a: list[WorklistItem], rows_b: list[WorklistItem]
) -> None:
    page = rad_client.get("/worklist/")
    assert page.status_code == 200
    assert sorted(row_ids(page.content.decode())) == sorted(r.pk for r in rows_a)
    assert b"B^000" not in page.content
    checked = re.findall(r'name="status" value="(\w+)" checked', page.content.decode())
    assert checked == ["arrived", "ready", "in_progress", "preliminary"]  # what "to read" means, shown
    event = AuditEvent.objects.filter(action="worklist_view").latest("id")
    assert (event.actor, event.detail["rows"]) == ("rad-one", 3)


def test_an_outsider_neither_sees_nor_claims_nor_opens_another_sites_row(
    outside_radiologist: User, rows_a: list[WorklistItem], rows_b: list[WorklistItem]
) -> None:
    client = signed_in(outside_radiologist)
    assert sorted(row_ids(client.get("/worklist/").content.decode())) == sorted(r.pk for r in rows_b)
    target = rows_a[0]
    for url in (
        f"/worklist/items/{target.pk}/claim",
        f"/worklist/items/{target.pk}/override",
        f"/worklist/items/{target.pk}/release",
    ):
        response = client.post(url)
        assert response.status_code == 404 and target.study_instance_uid.encode() not in response.content
    assert client.get(f"/worklist/items/{target.pk}/open").status_code == 404
    assert client.get("/worklist/items/999999/open").status_code == 404  # the same answer as for a missing row
    target.refresh_from_db()
    assert target.status == Status.READY and target.claimed_by is None
    denied = AuditEvent.objects.filter(action="worklist_claim", outcome="denied").get()
    assert (
        denied.detail == {"item": target.pk, "reason": "not found or not visible"} and denied.study_instance_uid == ""
    )


def test_numbers_beyond_any_id_name_nothing_and_never_fail(rad_client: Client) -> None:
    huge = "9" * 30
    assert rad_client.post(f"/worklist/items/{huge}/claim").status_code == 404
    assert rad_client.get(f"/worklist/items/{huge}/open").status_code == 404
    assert rad_client.post(f"/worklist/saved/{huge}/delete").status_code == 404
    assert rad_client.get(f"/worklist/?saved={huge}").status_code == 404
    assert post_rows(rad_client, after=huge).status_code == 400
    assert rad_client.post("/worklist/saved", {"saved_name": "x", "share_with": huge}).status_code == 400
    assert rad_client.get(f"/worklist/changes?since={huge}").status_code == 400
    assert rad_client.get("/worklist/changes?since=" + "9" * 18).status_code == 400
    assert rad_client.get("/worklist/changes?since=" + "9" * 17).status_code == 204


def test_referring_clinicians_and_auditors_have_no_worklist(general_site: Site) -> None:
    for role in (Role.REFERRING_CLINICIAN, Role.AUDITOR):
        client = signed_in(role_user(f"u-{role.name}", role, general_site))
        assert client.get("/worklist/").status_code == 403
    assert Client().get("/worklist/").status_code == 302  # anonymous: to the sign-in page


def test_a_hostile_patient_name_is_shown_as_text(rad_client: Client, general_site: Site) -> None:
    (row,) = add_rows(general_site, 1, "H", patient_name=HOSTILE, description="<img src=x onerror=alert(1)>")
    html = rad_client.get("/worklist/").content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;, &lt;b&gt;BOLD&lt;/b&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"modality": "mr"}, ["MR-1"]),
        ({"body_part": "knee"}, ["KNEE-1"]),
        ({"priority": "0"}, ["STAT-1"]),
        ({"status": ["qc_failed"]}, ["QC-1"]),
        ({"status": ["all"], "q": "qc"}, ["QC-1"]),
        ({"date_from": "2024-02-01", "date_to": "2024-02-28"}, ["FEB-1"]),
        ({"q": "stat-0"}, ["STAT-1"]),
        ({"q": "knee"}, ["KNEE-1"]),
    ],
)
def test_filters_narrow_the_rows(
    rad_client: Client, general_site: Site, filters: dict[str, Any], expected: list[str]
) -> None:
    add_rows(general_site, 1, "PLAIN", study_date="20240101")
    add_rows(general_site, 1, "MR", modality="MR")
    add_rows(general_site, 1, "KNEE", body_part="KNEE", description="MR KNEE LEFT")
    add_rows(general_site, 1, "STAT", priority=Priority.STAT)
    add_rows(general_site, 1, "QC", status=Status.QC_FAILED)
    add_rows(general_site, 1, "FEB", study_date="20240210")
    html = post_rows(rad_client, **filters).content.decode()
    shown = re.findall(r'<td class="col-patient_id">([^<]*)</td>', html)
    assert shown == [f"{e}-0" for e in [x.split("-")[0] for x in expected]]


def test_the_site_filter_and_the_default_hide_finished_studies(
    rad_client: Client, radiologist: User, general_site: Site, other_site: Site
) -> None:
    from portal.models import SiteMembership

    SiteMembership.objects.create(user=radiologist, site=other_site)
    add_rows(general_site, 1, "GEN")
    add_rows(other_site, 1, "ELS")
    add_rows(general_site, 1, "DONE", status=Status.FINAL)
    ids = functools.partial(shown, rad_client)
    assert sorted(ids()) == ["ELS-0", "GEN-0"]
    assert ids(site="elsewhere") == ["ELS-0"]
    assert ids(status=["final"]) == ["DONE-0"]


def test_mine_and_unassigned(rad_client: Client, radiologist: User, general_site: Site) -> None:
    group = Group.objects.create(name="chest readers")
    radiologist.groups.add(group)
    add_rows(general_site, 1, "GROUP", assigned_group=group)
    add_rows(general_site, 1, "CLAIMED", claimed_by=radiologist, status=Status.IN_PROGRESS)
    add_rows(general_site, 1, "FREE")
    add_rows(general_site, 1, "OTHERS", assigned_group=Group.objects.create(name="neuro"))
    ids = functools.partial(shown, rad_client, ordered=True)
    assert ids(mine="on") == ["CLAIMED-0", "GROUP-0"]
    assert ids(unassigned="on") == ["FREE-0"]


SORT_KEYS = (
    "priority",
    "status",
    "patient",
    "patient_id",
    "age",
    "sex",
    "modality",
    "body_part",
    "description",
    "site",
    "study_date",
    "arrived",
    "images",
    "priors",
    "reader",
)


@pytest.mark.parametrize(
    "column",
    [
        "priority",
        "status",
        "patient",
        "patient_id",
        "age",
        "sex",
        "modality",
        "body_part",
        "description",
        "site",
        "study_date",
        "arrived",
        "images",
        "priors",
        "reader",
    ],
)
def test_every_column_sorts_both_ways_and_pages_by_keyset(
    rad_client: Client, general_site: Site, column: str, settings: Any
) -> None:
    rows = add_rows(general_site, 7, "S")
    for n, row in enumerate(rows):  # values that repeat, so ties are broken by id
        WorklistItem.objects.filter(pk=row.pk).update(
            priority=n % 3,
            patient_age=f"0{n % 4}0Y",
            image_count=n % 2,
            priors_count=n % 3,
            reader_name=f"r{n % 2}",
            study_date=f"2024010{n % 3 + 1}",
            description=f"D{n % 4}",
            body_part=f"B{n % 2}",
            patient_sex="MF"[n % 2],
        )
    from portal.worklist import listing

    for desc in ("", "on"):
        seen: list[int] = []
        after = ""
        while True:
            listing.PAGE_SIZE, saved = 3, listing.PAGE_SIZE
            try:
                html = post_rows(rad_client, sort=column, desc=desc, after=after).content.decode()
            finally:
                listing.PAGE_SIZE = saved
            page = row_ids(html)
            seen += page
            found = re.search(r'class="page-next secondary" data-after="(\d+)"', html)
            if not found:
                break
            after = found.group(1)
        fields = listing.SORTS[column]
        ordered = sorted(
            WorklistItem.objects.all(), key=lambda r: tuple(getattr(r, f) for f in fields) + (r.pk,), reverse=bool(desc)
        )
        assert seen == [r.pk for r in ordered]


def _pager(html: str, kind: str) -> str | None:
    found = re.search(rf'class="page-{kind} secondary" data-{"after" if kind == "next" else "before"}="(\d+)"', html)
    return found.group(1) if found else None


@pytest.mark.parametrize("desc", ["", "on"])
@pytest.mark.parametrize("column", list(SORT_KEYS))
def test_paging_forward_then_back_gives_the_same_pages_in_every_column_even_among_ties(
    rad_client: Client, general_site: Site, column: str, desc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.worklist import listing

    rows = add_rows(general_site, 11, "B")
    for n, row in enumerate(rows):  # few distinct values: most rows tie and are ordered by id
        WorklistItem.objects.filter(pk=row.pk).update(
            priority=n % 2,
            patient_age=f"0{n % 3}0Y",
            image_count=n % 2,
            priors_count=n % 3,
            reader_name=f"r{n % 2}",
            study_date=f"2024010{n % 2 + 1}",
            description=f"D{n % 3}",
            body_part=f"B{n % 2}",
            patient_sex="MF"[n % 2],
        )
    monkeypatch.setattr(listing, "PAGE_SIZE", 3)
    forward: list[list[int]] = []
    html = post_rows(rad_client, sort=column, desc=desc).content.decode()
    assert _pager(html, "previous") is None  # the first page has none before it
    while True:
        forward.append(row_ids(html))
        after = _pager(html, "next")
        if after is None:
            break
        html = post_rows(rad_client, sort=column, desc=desc, after=after).content.decode()
    assert [len(p) for p in forward] == [3, 3, 3, 2]
    backward = [row_ids(html)]
    while (before := _pager(html, "previous")) is not None:
        response = post_rows(rad_client, sort=column, desc=desc, before=before)
        assert response.status_code == 200
        html = response.content.decode()
        backward.append(row_ids(html))
        assert _pager(html, "next") is not None  # a page reached backwards still leads forwards
    assert backward == forward[::-1]


def test_a_previous_page_cursor_is_checked_like_a_next_page_cursor(
    rad_client: Client, general_site: Site, other_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.worklist import listing

    rows = add_rows(general_site, 5, "P")
    (hidden,) = add_rows(other_site, 1, "H")
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    assert post_rows(rad_client, before="9" * 30).status_code == 400
    assert post_rows(rad_client, before=rows[3].pk, after=rows[1].pk).status_code == 400
    # A cursor naming a row the user may not see (or none at all) gives the first page, as "after" does.
    first = row_ids(post_rows(rad_client).content.decode())
    assert row_ids(post_rows(rad_client, before=hidden.pk).content.decode()) == first
    assert row_ids(post_rows(rad_client, before=rows[0].pk).content.decode()) == first


def test_bad_filters_get_a_400_with_the_reason(rad_client: Client) -> None:
    response = post_rows(rad_client, date_from="2024-03-01", date_to="2024-02-01", sort="nonsense")
    assert response.status_code == 400
    assert b"The date range ends before it begins" not in response.content or b"sort" in response.content
    assert b"sort: Select a valid choice" in response.content
    assert post_rows(rad_client, date_from="2024-13-01").status_code == 400


def test_a_claim_over_http_and_the_refusal_that_names_the_holder(
    rad_client: Client, second_radiologist: User, rows_a: list[WorklistItem]
) -> None:
    target = rows_a[0]
    mine = rad_client.post(f"/worklist/items/{target.pk}/claim")
    assert mine.status_code == 200 and b'class="release"' in mine.content
    other = signed_in(second_radiologist).post(f"/worklist/items/{target.pk}/claim")
    assert other.status_code == 409
    assert b'<span class="refusal" role="alert">claimed by rad-one</span>' in other.content
    refused = AuditEvent.objects.get(action="worklist_claim", outcome="denied")
    assert (refused.actor, refused.detail["holder"]) == ("rad-two", "rad-one")
    assert rad_client.post(f"/worklist/items/{target.pk}/release").status_code == 200
    assert rad_client.get(f"/worklist/items/{target.pk}/claim").status_code == 405


def test_opening_a_row_opens_the_viewer_and_keeps_the_claim_alive(
    rad_client: Client, radiologist: User, rows_a: list[WorklistItem]
) -> None:
    target = rows_a[0]
    rad_client.post(f"/worklist/items/{target.pk}/claim")
    WorklistItem.objects.filter(pk=target.pk).update(claim_touched_at=timezone.now() - timezone.timedelta(minutes=20))
    response = rad_client.get(f"/worklist/items/{target.pk}/open")
    assert response.headers["Location"] == f"/viewer/studies/{target.study_instance_uid}"
    target.refresh_from_db()
    assert timezone.now() - target.claim_touched_at < timezone.timedelta(seconds=5)


def test_a_technologist_marks_an_arrived_study_ready_and_a_radiologist_may_not(
    rad_client: Client, general_site: Site
) -> None:
    (row,) = add_rows(general_site, 1, "T", status=Status.ARRIVED)
    assert rad_client.post(f"/worklist/items/{row.pk}/ready").status_code == 403
    technologist = signed_in(role_user("tech", Role.TECHNOLOGIST, general_site))
    assert technologist.post(f"/worklist/items/{row.pk}/ready").status_code == 200
    assert WorklistItem.objects.get(pk=row.pk).status == Status.READY
    again = technologist.post(f"/worklist/items/{row.pk}/ready")
    assert again.status_code == 409 and b"cannot go from Ready to Ready" in again.content
    event = AuditEvent.objects.get(action="worklist_status", outcome="success")
    assert event.detail == {"from": "arrived", "to": "ready"}


def test_changes_answers_204_until_a_visible_row_changes(
    rad_client: Client, rows_a: list[WorklistItem], rows_b: list[WorklistItem]
) -> None:
    WorklistItem.objects.update(updated_at=timezone.now() - timezone.timedelta(minutes=1))
    page = rad_client.get("/worklist/").content.decode()
    since = re.search(r"changes\?since=(\d+)", page).group(1)
    assert rad_client.get(f"/worklist/changes?since={since}").status_code == 204
    WorklistItem.objects.filter(pk=rows_b[0].pk).update(updated_at=timezone.now())  # another site's row
    assert rad_client.get(f"/worklist/changes?since={since}").status_code == 204
    WorklistItem.objects.filter(pk=rows_a[0].pk).update(updated_at=timezone.now())
    changed = rad_client.get(f"/worklist/changes?since={since}")
    assert changed.status_code == 200 and changed.headers["HX-Trigger"] == "worklist-changed"
    newer = re.search(r"changes\?since=(\d+)", changed.content.decode()).group(1)
    assert int(newer) > int(since)
    assert rad_client.get("/worklist/changes?since=yesterday").status_code == 400


def test_a_new_stow_study_is_reported_by_changes(
    rad_client: Client, upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    since = re.search(r"changes\?since=(\d+)", rad_client.get("/worklist/").content.decode()).group(1)
    time.sleep(0.01)
    row = store_study(upload_client, django_capture_on_commit_callbacks, patient_name="NEW^ARRIVAL", patient_id="N-1")
    assert rad_client.get(f"/worklist/changes?since={since}").status_code == 200
    assert f'id="item-{row.pk}"'.encode() in post_rows(rad_client).content


def test_a_saved_worklist_is_the_owners_and_its_groups(
    rad_client: Client, radiologist: User, second_radiologist: User, outside_radiologist: User, general_site: Site
) -> None:
    add_rows(general_site, 1, "MR", modality="MR")
    add_rows(general_site, 1, "CT")
    team = Group.objects.create(name="night team")
    radiologist.groups.add(team)
    second_radiologist.groups.add(team)
    saved = rad_client.post(
        "/worklist/saved", {"saved_name": "MR tonight", "modality": "MR", "share_with": team.pk, "after": ""}
    )
    assert saved.status_code == 204
    mine = SavedWorklist.objects.get()
    assert saved.headers["HX-Redirect"] == f"/worklist/?saved={mine.pk}"
    assert mine.filters == {"modality": "MR"} and mine.shared_with == team
    for client in (rad_client, signed_in(second_radiologist)):
        html = client.get(f"/worklist/?saved={mine.pk}").content.decode()
        assert re.findall(r'<td class="col-patient_id">([^<]*)</td>', html) == ["MR-0"]
        assert "MR tonight" in html
    assert signed_in(outside_radiologist).get(f"/worklist/?saved={mine.pk}").status_code == 404
    assert signed_in(second_radiologist).post(f"/worklist/saved/{mine.pk}/delete").status_code == 404
    outsider_group = Group.objects.create(name="not mine")
    assert rad_client.post("/worklist/saved", {"saved_name": "x", "share_with": outsider_group.pk}).status_code == 400
    assert rad_client.post(f"/worklist/saved/{mine.pk}/delete").status_code == 204
    assert not SavedWorklist.objects.exists()


def test_a_page_costs_a_constant_number_of_queries(
    rad_client: Client, general_site: Site, django_assert_max_num_queries: Any
) -> None:
    add_rows(general_site, 60, "Q")
    rad_client.get("/worklist/")  # warm caches (sessions, content types)
    with django_assert_max_num_queries(15):
        response = rad_client.get("/worklist/")
    assert len(row_ids(response.content.decode())) == 50
