"""The site policy: sites, roles, expiring grants, referring clinicians and auditors."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from archive.access import policy, visible_studies
from archive.dicom.synthetic import StudySpec, make_series
from archive.models import Study
from portal.accounts.roles import Role
from portal.models import AccessGrant, UserProfile
from tests.conftest import bearer_client, join_site, role_user, stow


def uids(user: User) -> set[str]:
    return set(visible_studies(User.objects.get(pk=user.pk)).values_list("study_instance_uid", flat=True))


def metadata_status(client: Client, study: str) -> int:
    return client.get(f"/dicom-web/studies/{study}/metadata").status_code


@pytest.fixture
def site_b_study(outsider: User) -> str:
    spec = StudySpec(patient_name="ELSEWHERE^BOB", patient_id="PAT-B1", institution="St Elsewhere")
    assert stow(bearer_client(outsider), make_series(spec, "MR", count=1)).status_code == 200
    return spec.study_uid


@pytest.fixture
def orphan_study(admin_client_token: Client) -> str:
    """A study whose Institution Name matches no site."""
    spec = StudySpec(patient_name="NOWHERE^NED", patient_id="PAT-N1", institution="Unknown Clinic")
    assert stow(admin_client_token, make_series(spec, "CR", count=1)).status_code == 200
    return spec.study_uid


def test_ingest_assigns_studies_to_the_site_of_their_institution(site_a_study: dict, site_b_study: str) -> None:
    assert Study.objects.get(study_instance_uid=site_a_study["study"]).site.code == "general"
    assert Study.objects.get(study_instance_uid=site_b_study).site.code == "elsewhere"


def test_site_readers_see_their_own_sites_studies_only(
    site_a_study: dict, site_b_study: str, owner: User, colleague: User, outsider: User
) -> None:
    assert uids(owner) == uids(colleague) == {site_a_study["study"]}
    assert uids(outsider) == {site_b_study}


def test_administrators_see_every_study_including_those_without_a_site(
    site_a_study: dict, site_b_study: str, orphan_study: str, admin_user: User, colleague: User
) -> None:
    administrator = role_user("boss", Role.ADMINISTRATOR)
    everything = {site_a_study["study"], site_b_study, orphan_study}
    assert uids(admin_user) == uids(administrator) == everything
    assert orphan_study not in uids(colleague)


def test_a_user_without_role_or_site_sees_nothing(site_a_study: dict) -> None:
    nobody = User.objects.create_user("nobody", password="x" * 20)
    assert uids(nobody) == set()


def test_an_inactive_user_sees_nothing(site_a_study: dict, colleague: User) -> None:
    User.objects.filter(pk=colleague.pk).update(is_active=False)
    assert uids(colleague) == set()


def grant(user: User, *, site: Any = None, study: str | None = None, minutes: int = 60) -> AccessGrant:
    return AccessGrant.objects.create(
        user=user,
        site=site,
        study=Study.objects.get(study_instance_uid=study) if study else None,
        reason="second opinion",
        expires_at=timezone.now() + timedelta(minutes=minutes),
    )


def test_a_site_grant_lets_a_consultant_read_another_hospital_until_it_expires(
    site_a_study: dict, outsider: User, outsider_client: Client, general_site: Any
) -> None:
    study = site_a_study["study"]
    assert metadata_status(outsider_client, study) == 404
    given = grant(outsider, site=general_site)
    assert metadata_status(outsider_client, study) == 200
    AccessGrant.objects.filter(pk=given.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert metadata_status(outsider_client, study) == 404


def test_a_study_grant_gives_that_study_and_no_other(
    site_a_study: dict, owner_client: Client, outsider: User, outsider_client: Client
) -> None:
    other = StudySpec(patient_name="OTHER^ONE", patient_id="PAT-A2")
    assert stow(owner_client, make_series(other, "CT", count=1)).status_code == 200
    grant(outsider, study=site_a_study["study"])
    assert metadata_status(outsider_client, site_a_study["study"]) == 200
    assert metadata_status(outsider_client, other.study_uid) == 404


def test_an_expired_grant_never_worked(site_a_study: dict, outsider: User, outsider_client: Client) -> None:
    grant(outsider, study=site_a_study["study"], minutes=-1)
    assert metadata_status(outsider_client, site_a_study["study"]) == 404


@pytest.fixture
def clinician(general_site: Any) -> User:
    """A referring clinician who is even a member of site A (membership must not widen access)."""
    user = role_user("dr-alice", Role.REFERRING_CLINICIAN, general_site)
    return user


def test_a_referring_clinician_sees_only_studies_given_to_them(
    site_a_study: dict, owner_client: Client, clinician: User
) -> None:
    other = StudySpec(patient_name="OTHER^TWO", patient_id="PAT-A3", referring="SOMEONE^ELSE")
    assert stow(owner_client, make_series(other, "CT", count=1)).status_code == 200
    assert uids(clinician) == set()  # no grant yet, no DICOM name on the profile, membership ignored
    grant(clinician, study=other.study_uid)
    assert uids(clinician) == {other.study_uid}


def test_a_referring_clinician_sees_the_studies_that_name_them_as_referring_physician(
    site_a_study: dict, clinician: User
) -> None:
    UserProfile.objects.create(user=clinician, dicom_person_name="Referrer^Alice^^")
    assert uids(clinician) == {site_a_study["study"]}
    assert metadata_status(bearer_client(clinician), site_a_study["study"]) == 200


def test_a_referring_clinician_cannot_search_the_archive(clinician: User, colleague: User) -> None:
    assert policy().can_search(User.objects.get(pk=clinician.pk)) is False
    assert policy().can_search(User.objects.get(pk=colleague.pk)) is True


def test_an_auditor_sees_no_images_even_when_given_a_site_and_a_grant(site_a_study: dict, general_site: Any) -> None:
    auditor = role_user("auditor", Role.AUDITOR, general_site)
    grant(auditor, study=site_a_study["study"])
    assert uids(auditor) == set()
    assert policy().can_search(User.objects.get(pk=auditor.pk)) is False
    assert metadata_status(bearer_client(auditor), site_a_study["study"]) == 404


def test_a_plain_member_of_a_site_reads_it_but_cannot_store_or_delete(reader: User) -> None:
    fresh = User.objects.get(pk=reader.pk)
    assert policy().can_search(fresh)
    assert not policy().can_store(fresh)
    assert not policy().can_delete(fresh)


def test_only_administrators_may_delete_and_technologists_may_store(owner: User, colleague: User) -> None:
    boss = role_user("boss", Role.ADMINISTRATOR)
    assert policy().can_delete(User.objects.get(pk=boss.pk))
    assert not policy().can_delete(User.objects.get(pk=colleague.pk))
    assert policy().can_store(User.objects.get(pk=owner.pk))
    assert not policy().can_store(User.objects.get(pk=colleague.pk))


def test_a_second_site_membership_adds_that_sites_studies(
    site_a_study: dict, site_b_study: str, colleague: User, other_site: Any
) -> None:
    join_site(colleague, other_site)
    assert uids(colleague) == {site_a_study["study"], site_b_study}


def perms(role: Role) -> set[str]:
    group = Group.objects.get(name=role.value)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def test_the_migration_creates_every_role_with_its_permissions(db: Any) -> None:
    assert {g.name for g in Group.objects.all()} >= {r.value for r in Role}
    assert "archive.delete_study" in perms(Role.ADMINISTRATOR)
    assert "auth.change_user" in perms(Role.ADMINISTRATOR)
    assert "archive.add_instance" in perms(Role.TECHNOLOGIST)
    assert "archive.add_instance" not in perms(Role.RADIOLOGIST)
    assert perms(Role.AUDITOR) == {"audit.view_auditevent"}
    assert perms(Role.REFERRING_CLINICIAN) == set()


def test_setup_roles_is_idempotent_and_restores_the_table(db: Any) -> None:
    from django.contrib.auth.models import Permission

    radiologist = Group.objects.get(name=Role.RADIOLOGIST.value)
    radiologist.permissions.add(Permission.objects.get(codename="delete_study"))
    call_command("setup_roles", stdout=io.StringIO())
    call_command("setup_roles", stdout=io.StringIO())
    assert Group.objects.filter(name=Role.RADIOLOGIST.value).count() == 1
    assert "archive.delete_study" not in perms(Role.RADIOLOGIST)
