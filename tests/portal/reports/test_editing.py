"""Drafts: the editor, autosave with optimistic versioning, and the conflict two editors get."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from audit.models import AuditEvent
from portal.reports.models import Report, ReportTemplate
from portal.worklist.models import WorklistItem
from tests.portal.reports.conftest import signed_in
from tests.portal.reports.helpers import open_page, save, url

pytestmark = pytest.mark.django_db


def test_a_new_report_starts_from_the_template_of_its_modality_and_body_part(
    claimed: WorklistItem, radiologist: User
) -> None:
    ReportTemplate.objects.create(name="Any", findings="generic")
    ReportTemplate.objects.create(name="CT", modality="CT", technique="Axial CT.", findings="No acute finding.")
    ReportTemplate.objects.create(name="MR", modality="MR", findings="MR text")
    open_page(signed_in(radiologist), claimed.study_instance_uid)
    report = Report.objects.get(study_instance_uid=claimed.study_instance_uid)
    assert (report.technique, report.findings, report.version, report.status) == (
        "Axial CT.",
        "No acute finding.",
        1,
        "draft",
    )


def test_a_save_carries_its_version_and_gets_the_next_one(claimed: WorklistItem, radiologist: User) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    open_page(client, uid)
    first = save(client, uid, 1, findings="Lungs clear.")
    assert first.status_code == 200 and first.json()["version"] == 2
    second = save(client, uid, 2, findings="Lungs clear. Heart normal.")
    assert second.json()["version"] == 3
    assert Report.objects.get(study_instance_uid=uid).findings == "Lungs clear. Heart normal."
    assert AuditEvent.objects.filter(action="report_save", outcome="success").count() == 2


def test_two_editors_of_one_draft_never_overwrite_each_other_the_second_gets_both_texts(
    claimed: WorklistItem, radiologist: User, admin_user: User
) -> None:
    uid = claimed.study_instance_uid
    mine, theirs = signed_in(radiologist), signed_in(admin_user)
    open_page(mine, uid)
    open_page(theirs, uid)  # both opened version 1
    assert save(theirs, uid, 1, findings="Administrator's text").status_code == 200
    stale = save(mine, uid, 1, findings="Reader's text")
    assert stale.status_code == 409
    body = stale.json()
    assert body["error"] == "conflict" and body["version"] == 2
    assert body["theirs"]["findings"] == "Administrator's text"
    assert body["yours"]["findings"] == "Reader's text"
    assert Report.objects.get(study_instance_uid=uid).findings == "Administrator's text"
    page = save(mine, uid, 1, json=False, findings="Reader's <b>text</b>")  # the form without JavaScript
    assert page.status_code == 409
    html = page.content.decode()
    assert "Administrator&#x27;s text" in html and "Reader&#x27;s &lt;b&gt;text&lt;/b&gt;" in html
    assert AuditEvent.objects.filter(action="report_save", outcome="denied").count() == 2


def test_only_the_claimant_edits_another_radiologist_of_the_site_is_refused(
    claimed: WorklistItem, radiologist: User, second_radiologist: User
) -> None:
    uid = claimed.study_instance_uid
    open_page(signed_in(radiologist), uid)
    other = signed_in(second_radiologist)
    page = open_page(other, uid).content.decode()
    assert 'id="report-editor"' not in page
    assert save(other, uid, 1, findings="mine now").status_code == 403
    assert Report.objects.get(study_instance_uid=uid).findings == ""


def test_an_autosave_keeps_the_claim_alive(claimed: WorklistItem, radiologist: User) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    open_page(client, uid)
    before = WorklistItem.objects.get(pk=claimed.pk).claim_touched_at
    save(client, uid, 1, findings="x")
    after = WorklistItem.objects.get(pk=claimed.pk).claim_touched_at
    assert before is not None and after is not None and after > before


@pytest.mark.parametrize("version", ["", "x", "-1", "99999999999999999999"])
def test_a_save_without_a_usable_version_is_a_bad_request(
    claimed: WorklistItem, radiologist: User, version: Any
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    open_page(client, uid)
    response = client.post(url("report-save", uid), {"version": version}, headers={"Accept": "application/json"})
    assert response.status_code == 400


def test_a_section_longer_than_the_limit_is_refused_and_nothing_is_saved(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    open_page(client, uid)
    assert save(client, uid, 1, findings="x" * 20_001).status_code == 400
    assert Report.objects.get(study_instance_uid=uid).version == 1
