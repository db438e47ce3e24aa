"""The admin: escaping patient names, issuing and revoking tokens, audited changes, roles."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import ApiToken, DicomDevice, Instance, Patient, Series, Site, Study
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.models import SiteMembership
from tests.conftest import role_user, stow
from tests.mfa_support import force_verified_login

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture
def admin_browser(admin_user: User) -> Client:
    client = Client()
    force_verified_login(client, admin_user)
    return client


@pytest.fixture
def evil_study(owner_client: Client) -> Study:
    spec = StudySpec(patient_name=EVIL, patient_id="PAT-XSS", description=EVIL, referring=EVIL)
    assert stow(owner_client, make_series(spec, "CT", count=1)).status_code == 200
    study = Study.objects.select_related("patient").get(study_instance_uid=spec.study_uid)
    assert study.patient.patient_name == EVIL
    return study


def evil_pages(study: Study) -> list[str]:
    series = Series.objects.get(study=study)
    instance = Instance.objects.get(series=series)
    return [
        "/admin/archive/patient/",
        f"/admin/archive/patient/{study.patient.pk}/change/",
        "/admin/archive/study/",
        f"/admin/archive/study/{study.pk}/change/",
        f"/admin/archive/study/?q={study.study_instance_uid}",
        f"/admin/archive/study/{study.pk}/delete/",
        "/admin/archive/series/",
        f"/admin/archive/series/{series.pk}/change/",
        "/admin/archive/instance/",
        f"/admin/archive/instance/{instance.pk}/change/",
        "/admin/audit/auditevent/",
        "/admin/",
    ]


def test_every_admin_page_escapes_a_hostile_patient_name(admin_browser: Client, evil_study: Study) -> None:
    # A change through the admin puts the study into "recent actions" on the index page too.
    admin_browser.post(f"/admin/archive/study/{evil_study.pk}/change/", {"site": evil_study.site_id})
    shown = 0
    for path in evil_pages(evil_study):
        response = admin_browser.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert "<script>alert(1)" not in html, path
        assert "<img src=x" not in html, path
        shown += "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert shown >= 6


def test_opening_a_study_in_the_admin_is_audited(admin_browser: Client, evil_study: Study) -> None:
    admin_browser.get(f"/admin/archive/study/{evil_study.pk}/change/")
    event = AuditEvent.objects.filter(action="admin-view").latest("id")
    assert (event.actor, event.study_instance_uid, event.patient_id) == (
        "admin",
        evil_study.study_instance_uid,
        "PAT-XSS",
    )


def test_index_rows_are_read_only_except_the_site_of_a_study(admin_browser: Client, evil_study: Study) -> None:
    series = Series.objects.get(study=evil_study)
    assert admin_browser.get("/admin/archive/study/add/").status_code == 403
    assert admin_browser.get("/admin/archive/patient/add/").status_code == 403
    assert admin_browser.post(f"/admin/archive/series/{series.pk}/change/", {"modality": "MR"}).status_code == 403
    other = Site.objects.create(code="annex", name="Annex")
    response = admin_browser.post(
        f"/admin/archive/study/{evil_study.pk}/change/", {"site": other.pk, "study_description": "changed"}
    )
    assert response.status_code == 302
    study = Study.objects.get(pk=evil_study.pk)
    assert study.site_id == other.pk and study.study_description == EVIL
    change = AuditEvent.objects.filter(action="admin-change").latest("id")
    assert change.study_instance_uid == study.study_instance_uid and change.detail["model"] == "archive.study"


def stored_files(root: Any) -> list[Any]:
    return [p for p in root.rglob("*.dcm") if p.is_file()]


def test_deleting_a_study_in_the_admin_moves_it_to_the_trash_and_is_audited(
    admin_browser: Client, evil_study: Study, isolated_storage: Any, django_capture_on_commit_callbacks: Any
) -> None:
    assert len(stored_files(isolated_storage)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_browser.post(f"/admin/archive/study/{evil_study.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert Study.objects.get(pk=evil_study.pk).trashed_at is not None
    assert len(stored_files(isolated_storage)) == 1  # kept until the purge
    event = AuditEvent.objects.get(action="delete")
    assert (event.outcome, event.detail["to"], event.detail["via"]) == ("success", "trash", "admin")


def test_issuing_a_token_shows_it_once_and_stores_only_its_hash(admin_browser: Client, colleague: User) -> None:
    response = admin_browser.post("/admin/archive/apitoken/add/", {"user": colleague.pk, "name": "ohif"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = re.search(r'id="issued-token" size="60" value="(pacs_[^"]+)"', response.content.decode())
    assert raw is not None
    token = ApiToken.objects.get(user=colleague)
    assert raw.group(1) not in str(ApiToken.objects.values_list().get(pk=token.pk))
    assert (
        Client(HTTP_AUTHORIZATION=f"Bearer {raw.group(1)}").get("/dicom-web/studies/1.2.3/metadata").status_code == 404
    )
    listing = admin_browser.get("/admin/archive/apitoken/").content.decode()
    assert raw.group(1) not in listing and token.prefix in listing
    change = admin_browser.get(f"/admin/archive/apitoken/{token.pk}/change/").content.decode()
    assert raw.group(1) not in change
    issued = AuditEvent.objects.get(action="token-issue")
    assert issued.detail["for"] == "colleague" and issued.actor == "admin"


def test_revoking_a_token_stops_it_at_once_and_is_audited(admin_browser: Client, colleague: User) -> None:
    token, raw = ApiToken.issue(colleague, "laptop")
    bearer = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert bearer.get("/dicom-web/studies/1.2.3/metadata").status_code == 404
    response = admin_browser.post("/admin/archive/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert response.status_code == 302
    assert bearer.get("/dicom-web/studies/1.2.3/metadata").status_code == 401
    assert AuditEvent.objects.get(action="token-revoke").detail["token"] == token.prefix


def test_admin_changes_to_sites_users_and_roles_are_audited(admin_browser: Client, colleague: User) -> None:
    response = admin_browser.post(
        "/admin/archive/site/add/",
        {
            "code": "north",
            "name": "North Clinic",
            "institution_names": "North Clinic",
            "source_aets": "",
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "0",
            "memberships-0-user": colleague.pk,
            "grants-TOTAL_FORMS": "0",
            "grants-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    site = Site.objects.get(code="north")
    assert SiteMembership.objects.filter(site=site, user=colleague).exists()
    added = AuditEvent.objects.get(action="admin-add")
    assert added.detail["model"] == "archive.site" and added.actor == "admin"
    group = Group.objects.get(name=Role.AUDITOR.value)
    admin_browser.post(f"/admin/auth/group/{group.pk}/change/", {"name": group.name, "permissions": []})
    assert AuditEvent.objects.filter(action="admin-change", detail__model="auth.group").exists()


def test_giving_someone_the_auditor_role_makes_them_staff(admin_browser: Client) -> None:
    person = User.objects.create_user("newbie", password="a long and proper passphrase 7")
    auditor = Group.objects.get(name=Role.AUDITOR.value)
    form = {
        "username": "newbie",
        "is_active": "on",
        "groups": [auditor.pk],
        "pacs_profile-TOTAL_FORMS": "1",
        "pacs_profile-INITIAL_FORMS": "0",
        "pacs_profile-0-dicom_person_name": "NEW^BIE",
        "site_memberships-TOTAL_FORMS": "0",
        "site_memberships-INITIAL_FORMS": "0",
    }
    response = admin_browser.post(f"/admin/auth/user/{person.pk}/change/", form)
    assert response.status_code == 302, response.content[:3000]
    person.refresh_from_db()
    assert person.is_staff
    assert person.pacs_profile.dicom_person_name == "NEW^BIE"


def test_the_sign_out_everywhere_action_ends_a_users_sessions(admin_browser: Client) -> None:
    tech = role_user("tech", Role.TECHNOLOGIST)
    session = Client()
    session.force_login(tech)
    assert session.get("/").status_code == 200
    admin_browser.post("/admin/auth/user/", {"action": "sign_out_everywhere", "_selected_action": [tech.pk]})
    assert session.get("/").status_code == 302


def test_the_admin_has_no_sign_in_form_of_its_own(db: Any) -> None:
    response = Client().get("/admin/login/?next=/admin/archive/study/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=%2Fadmin%2Farchive%2Fstudy%2F"


def test_a_signed_in_non_staff_user_is_refused_without_a_redirect_loop(colleague: User, owner: User) -> None:
    client = Client()
    client.force_login(owner)
    assert client.get("/admin/").status_code == 302
    assert client.get("/admin/login/?next=/admin/").status_code == 403


def test_patients_and_studies_in_the_admin_follow_the_access_policy(
    evil_study: Study, admin_user: User, general_site: Any
) -> None:
    auditor = role_user("auditor", Role.AUDITOR, general_site)
    User.objects.filter(pk=auditor.pk).update(is_staff=True)
    auditor.user_permissions.add(*Permission.objects.filter(codename__in=["view_study", "view_patient"]))
    client = Client()
    client.force_login(auditor)
    assert client.get("/admin/archive/study/").status_code == 200
    assert evil_study.study_instance_uid not in client.get("/admin/archive/study/").content.decode()
    assert client.get(f"/admin/archive/study/{evil_study.pk}/change/").status_code == 302  # not found -> back to list
    assert Patient.objects.filter(patient_id="PAT-XSS").exists()


def device_form(site: Site, **fields: Any) -> dict[str, Any]:
    form: dict[str, Any] = {"ae_title": "CT1", "host": "", "port": "", "site": site.pk, "enabled": "on"}
    form.update(fields)
    return {k: v for k, v in form.items() if v is not None}


def test_dicom_devices_are_listed_searched_added_and_edited_in_the_admin_with_audit(
    admin_browser: Client, general_site: Site
) -> None:
    DicomDevice.objects.create(ae_title="WS1", host="10.0.0.0/24", site=general_site, may_query=True)
    response = admin_browser.post(
        "/admin/archive/dicomdevice/add/",
        device_form(general_site, ae_title=" CT1 ", host="10.0.0.21/32", port="104", may_store="on"),
    )
    assert response.status_code == 302, response.content[:2000]
    ct1 = DicomDevice.objects.get(ae_title="CT1")
    assert (ct1.host, ct1.port, ct1.capabilities(), ct1.enabled) == ("10.0.0.21", 104, ["store"], True)
    listing = admin_browser.get("/admin/archive/dicomdevice/").content.decode()
    assert "CT1" in listing and "WS1" in listing and "10.0.0.0/24" in listing
    found = admin_browser.get("/admin/archive/dicomdevice/?q=WS1").content.decode()
    assert "WS1" in found and f"/admin/archive/dicomdevice/{ct1.pk}/change/" not in found
    filtered = admin_browser.get("/admin/archive/dicomdevice/?may_store__exact=1").content.decode()
    assert "CT1" in filtered and "WS1" not in filtered

    response = admin_browser.post(
        f"/admin/archive/dicomdevice/{ct1.pk}/change/", device_form(general_site, host="", may_store="on", enabled=None)
    )
    assert response.status_code == 302
    ct1.refresh_from_db()
    assert (ct1.host, ct1.enabled) == ("", False)
    records = AuditEvent.objects.filter(detail__model="archive.dicomdevice").order_by("pk")
    assert [(r.action, r.actor, r.detail["object"]) for r in records] == [
        ("admin-add", "admin", "CT1@10.0.0.21"),
        ("admin-change", "admin", "CT1"),
    ]


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"ae_title": "BACK\\SLASH"}, "An AE title is 1-16 printable ASCII characters"),
        ({"host": "scanner.local"}, "Give an IP address (10.0.0.21) or network"),
        ({"port": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"ae_title": "TAKEN"}, "DICOM device with this AE title already exists."),
    ],
)
def test_the_admin_refuses_an_invalid_dicom_device(
    admin_browser: Client, general_site: Site, fields: dict[str, str], error: str
) -> None:
    DicomDevice.objects.create(ae_title="TAKEN", site=general_site)
    response = admin_browser.post("/admin/archive/dicomdevice/add/", device_form(general_site, **fields))
    assert response.status_code == 200
    assert error in response.content.decode().replace("&#x27;", "'")
    assert list(DicomDevice.objects.values_list("ae_title", flat=True)) == ["TAKEN"]
