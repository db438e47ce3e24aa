"""Retention, legal holds and the trash in the admin: holds placed and released with a reason, refusals shown."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import LegalHold, RetentionPolicy, Study, TrashEntry
from audit.models import AuditEvent
from portal.accounts.roles import Role
from tests.conftest import role_user, stow
from tests.mfa_support import force_verified_login

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(admin_user: User) -> Client:
    client = Client()
    force_verified_login(client, admin_user)
    return client


@pytest.fixture
def study(admin_client_token: Client) -> Study:
    spec = StudySpec(patient_id="ADM-1")
    assert stow(admin_client_token, make_series(spec, "CT", count=2)).status_code == 200
    return Study.objects.select_related("patient").get()


def test_a_hold_is_placed_with_who_why_and_when_and_audited(admin_browser: Client, study: Study) -> None:
    response = admin_browser.post("/admin/archive/legalhold/add/", {"patient_id": "ADM-1", "reason": "Case 7"})
    assert response.status_code == 302
    hold = LegalHold.objects.get()
    assert (hold.placed_by, hold.reason, hold.released_at) == ("admin", "Case 7", None)
    event = AuditEvent.objects.get(action="legal-hold")
    assert (event.patient_id, event.actor, event.detail["reason"]) == ("ADM-1", "admin", "Case 7")


@pytest.mark.parametrize(
    "data,error",
    [
        ({"reason": "x"}, "Hold either a patient"),
        ({"patient_id": "A", "study_instance_uid": "1.2.3", "reason": "x"}, "Hold either a patient"),
        ({"study_instance_uid": "1.2.x", "reason": "x"}, "Not a valid UID"),
        ({"patient_id": "A", "reason": "  "}, "This field is required"),
    ],
)
def test_a_hold_without_a_subject_or_a_reason_is_refused(
    admin_browser: Client, data: dict[str, str], error: str
) -> None:
    response = admin_browser.post("/admin/archive/legalhold/add/", data)
    assert response.status_code == 200 and error in response.content.decode()
    assert not LegalHold.objects.exists()


def test_a_hold_is_released_only_with_a_reason_and_never_deleted(admin_browser: Client, study: Study) -> None:
    hold = LegalHold.objects.create(study_instance_uid=study.study_instance_uid, reason="Case 8", placed_by="counsel")
    url = f"/admin/archive/legalhold/{hold.pk}/change/"
    response = admin_browser.post(url, {"release_reason": ""})
    assert response.status_code == 200 and "say why in the release reason" in response.content.decode()
    assert LegalHold.objects.get().released_at is None
    assert admin_browser.post(url, {"release_reason": "Case closed"}).status_code == 302
    hold.refresh_from_db()
    assert hold.released_at is not None and (hold.released_by, hold.release_reason) == ("admin", "Case closed")
    event = AuditEvent.objects.get(action="legal-hold-release")
    assert (event.study_instance_uid, event.detail["reason"]) == (study.study_instance_uid, "Case closed")
    assert admin_browser.post(f"/admin/archive/legalhold/{hold.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_browser.post(url, {"release_reason": "again"}).status_code == 403  # a released hold is final


def test_only_administrators_reach_holds_policies_and_the_trash(general_site: Any) -> None:
    auditor = role_user("auditor1", Role.AUDITOR, general_site)
    client = Client()
    force_verified_login(client, auditor)
    for page in ("legalhold", "retentionpolicy", "trashentry", "patientdeath"):
        assert client.get(f"/admin/archive/{page}/").status_code in (302, 403)  # to sign-in, or forbidden
        assert client.post(f"/admin/archive/{page}/add/", {"patient_id": "X", "reason": "y"}).status_code in (302, 403)
    assert not LegalHold.objects.exists()


def test_deleting_a_held_study_in_the_admin_says_why_and_keeps_it(admin_browser: Client, study: Study) -> None:
    LegalHold.objects.create(patient_id="ADM-1", reason="Case 9", placed_by="counsel")
    response = admin_browser.post(f"/admin/archive/study/{study.pk}/delete/", {"post": "yes"}, follow=True)
    page = response.content.decode()
    assert "was not deleted: A legal hold on the patient" in page and "is in the trash" not in page
    assert Study.objects.get().trashed_at is None
    response = admin_browser.post(
        "/admin/archive/study/", {"action": "move_to_trash", "_selected_action": [study.pk]}, follow=True
    )
    assert "was not deleted: A legal hold" in response.content.decode()
    assert Study.objects.get().trashed_at is None
    assert AuditEvent.objects.filter(action="delete", outcome="denied").count() == 2


def test_retention_refuses_in_the_admin_and_the_trash_restores_there(admin_browser: Client, study: Study) -> None:
    policy = RetentionPolicy.objects.create(name="Ten years", basis="receipt", years=10)
    response = admin_browser.post(
        "/admin/archive/study/", {"action": "move_to_trash", "_selected_action": [study.pk]}, follow=True
    )
    assert "Retention policy &quot;Ten years&quot; keeps this study until" in response.content.decode()
    policy.delete()
    response = admin_browser.post(
        "/admin/archive/study/", {"action": "move_to_trash", "_selected_action": [study.pk]}, follow=True
    )
    assert "1 studies moved to the trash." in response.content.decode()
    assert admin_browser.get("/admin/archive/study/").content.decode().count(study.study_instance_uid) == 0
    entry = TrashEntry.objects.get()
    response = admin_browser.post(
        "/admin/archive/trashentry/", {"action": "restore", "_selected_action": [entry.pk]}, follow=True
    )
    assert f"{study.study_instance_uid} restored." in response.content.decode()
    assert Study.objects.get().trashed_at is None
