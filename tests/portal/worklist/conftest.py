"""Worklist fixtures: readers of site A (radiologists, MFA passed), stored studies with their rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from portal.accounts.roles import Role
from portal.worklist.models import WorklistItem
from tests.conftest import role_user, stow
from tests.mfa_support import force_verified_login


@pytest.fixture
def radiologist(general_site: Any) -> User:
    return role_user("rad-one", Role.RADIOLOGIST, general_site)


@pytest.fixture
def second_radiologist(general_site: Any) -> User:
    return role_user("rad-two", Role.RADIOLOGIST, general_site)


@pytest.fixture
def outside_radiologist(other_site: Any) -> User:
    return role_user("rad-elsewhere", Role.RADIOLOGIST, other_site)


def signed_in(user: User) -> Client:
    """A browser-like client of ``user`` whose session passed MFA."""
    client = Client()
    force_verified_login(client, user)
    return client


@pytest.fixture
def rad_client(radiologist: User) -> Client:
    return signed_in(radiologist)


def store_study(client: Client, capture: Any, count: int = 2, modality: str = "CT", **spec: Any) -> WorklistItem:
    """STOW a study through ``client`` and return its worklist row (on-commit receivers run)."""
    study = StudySpec(**spec)
    with capture(execute=True):
        response = stow(client, make_series(study, modality, count=count, size=16))
    assert response.status_code == 200, response.content
    return WorklistItem.objects.get(study_instance_uid=study.study_uid)


@pytest.fixture
def study_row(upload_client: Client, django_capture_on_commit_callbacks: Any) -> WorklistItem:
    return store_study(upload_client, django_capture_on_commit_callbacks, patient_name="DOE^JANE", patient_id="WL-1")
