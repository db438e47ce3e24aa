"""Report fixtures: a study of site A claimed by a radiologist, clients with a fresh or a stale second factor."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from portal.accounts.roles import Role
from portal.mfa.factors import VERIFIED_AT_SESSION_KEY
from portal.models import UserProfile
from portal.worklist import claims
from portal.worklist.models import WorklistItem
from tests.conftest import role_user, stow
from tests.mfa_support import force_verified_login

HOSTILE_NAME = "<img src=x onerror=alert(1)>^EVE"


@pytest.fixture
def radiologist(general_site: Any) -> User:
    user = role_user("rad-one", Role.RADIOLOGIST, general_site)
    User.objects.filter(pk=user.pk).update(first_name="Rita", last_name="Reader")
    user.refresh_from_db()
    return user


@pytest.fixture
def second_radiologist(general_site: Any) -> User:
    return role_user("rad-two", Role.RADIOLOGIST, general_site)


@pytest.fixture
def outside_radiologist(other_site: Any) -> User:
    return role_user("rad-elsewhere", Role.RADIOLOGIST, other_site)


@pytest.fixture
def clinician(general_site: Any) -> User:
    """A referring clinician named on the study as (0008,0090) Referring Physician's Name."""
    user = role_user("dr-alice", Role.REFERRING_CLINICIAN)
    UserProfile.objects.create(user=user, dicom_person_name="REFERRER^ALICE")
    return user


def signed_in(user: User, mfa_age: float | None = 0) -> Client:
    """A client of ``user`` whose session passed MFA ``mfa_age`` seconds ago (None: at an unknown time)."""
    client = Client()
    force_verified_login(client, user)
    if mfa_age is not None:
        session = client.session
        session[VERIFIED_AT_SESSION_KEY] = time.time() - mfa_age
        session.save()
    return client


@pytest.fixture
def study_item(upload_client: Client, django_capture_on_commit_callbacks: Any) -> WorklistItem:
    spec = StudySpec(patient_name=HOSTILE_NAME, patient_id="RP-1", description="CT CHEST")
    with django_capture_on_commit_callbacks(execute=True):
        response = stow(upload_client, make_series(spec, "CT", count=2, size=16))
    assert response.status_code == 200, response.content
    return WorklistItem.objects.get(study_instance_uid=spec.study_uid)


@pytest.fixture
def claimed(study_item: WorklistItem, radiologist: User) -> WorklistItem:
    return claims.claim(study_item, radiologist)
