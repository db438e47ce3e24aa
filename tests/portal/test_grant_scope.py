"""Session-scoped grants in the site policy: a scoped session sees its grants only; nobody else sees them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from archive.models import Study
from portal.access import SitePolicy
from portal.accounts.sessions import _SCOPE_ATTRIBUTE
from portal.models import AccessGrant

pytestmark = pytest.mark.django_db


def scoped(user: User, scope: str) -> User:
    fresh = User.objects.get(pk=user.pk)
    setattr(fresh, _SCOPE_ATTRIBUTE, scope)
    return fresh


def grant(user: User, study: Study, scope: str = "", hours: float = 1) -> None:
    AccessGrant.objects.create(
        user=user, study=study, scope=scope, reason="test", expires_at=timezone.now() + timedelta(hours=hours)
    )


def test_a_scoped_session_of_an_administrator_sees_only_the_scopes_unexpired_grants(
    admin_user: User, site_a_study: dict[str, Any]
) -> None:
    study = Study.objects.get(study_instance_uid=site_a_study["study"])
    policy = SitePolicy()
    assert policy.visibility(scoped(admin_user, "s1")).study_ids == frozenset()
    grant(admin_user, study, "s1")
    seen = policy.visibility(scoped(admin_user, "s1"))
    assert (seen.everything, seen.site_ids, seen.study_ids) == (False, frozenset(), frozenset({study.pk}))
    assert policy.visibility(scoped(admin_user, "s2")).study_ids == frozenset()
    assert not policy.can_search(scoped(admin_user, "s1"))
    AccessGrant.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert policy.visibility(scoped(admin_user, "s1")).study_ids == frozenset()


def test_scoped_grants_are_invisible_outside_their_session(reader: User, site_a_study: dict[str, Any]) -> None:
    study = Study.objects.get(study_instance_uid=site_a_study["study"])
    clinician = User.objects.create_user("clinician")
    grant(clinician, study, "s1")
    assert SitePolicy().visibility(User.objects.get(pk=clinician.pk)).study_ids == frozenset()
    grant(clinician, study)
    assert SitePolicy().visibility(User.objects.get(pk=clinician.pk)).study_ids == frozenset({study.pk})
