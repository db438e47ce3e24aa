"""The endpoints the viewer page calls while a study is read: the claim's heartbeat over HTTP."""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.worklist import claims
from portal.worklist.models import WorklistItem
from tests.conftest import role_user
from tests.mfa_support import force_verified_login
from tests.portal.worklist.conftest import signed_in


def beat(client: Client, uid: str) -> object:
    return client.post(f"/worklist/studies/{uid}/heartbeat")


def test_the_holders_heartbeat_refreshes_the_claim_and_anyone_elses_changes_nothing(
    rad_client: Client, radiologist: User, second_radiologist: User, study_row: WorklistItem
) -> None:
    uid = study_row.study_instance_uid
    claims.claim(study_row, radiologist)
    stale = timezone.now() - timedelta(minutes=20)
    WorklistItem.objects.filter(pk=study_row.pk).update(claim_touched_at=stale)
    before = AuditEvent.objects.count()
    response = beat(rad_client, uid)
    assert response.status_code == 200 and json.loads(response.content) == {"held": True}
    study_row.refresh_from_db()
    assert timezone.now() - study_row.claim_touched_at < timedelta(seconds=5)
    assert AuditEvent.objects.count() == before
    WorklistItem.objects.filter(pk=study_row.pk).update(claim_touched_at=stale)
    other = beat(signed_in(second_radiologist), uid)
    assert other.status_code == 200 and json.loads(other.content) == {"held": False}
    study_row.refresh_from_db()
    assert study_row.claim_touched_at == stale


def test_a_heartbeat_is_a_csrf_protected_post_for_a_visible_study_only(
    radiologist: User, outside_radiologist: User, study_row: WorklistItem, general_site: object
) -> None:
    uid = study_row.study_instance_uid
    claims.claim(study_row, radiologist)
    strict = Client(enforce_csrf_checks=True)
    force_verified_login(strict, radiologist)
    assert beat(strict, uid).status_code == 403  # no CSRF token
    client = signed_in(radiologist)
    assert client.get(f"/worklist/studies/{uid}/heartbeat").status_code == 405
    assert beat(client, "1.2.x").status_code == 400
    assert beat(client, "1.2.3.999").status_code == 404
    outsider = beat(signed_in(outside_radiologist), uid)
    assert outsider.status_code == 404 and uid.encode() not in outsider.content
    denied = AuditEvent.objects.filter(action="worklist_heartbeat", outcome="denied")
    assert denied.count() == 2 and not denied.filter(study_instance_uid=uid).exists()
    assert Client().post(f"/worklist/studies/{uid}/heartbeat").status_code == 302  # signed out: to the sign-in
    clinician = signed_in(role_user("dr-bob", Role.REFERRING_CLINICIAN, general_site))
    assert beat(clinician, uid).status_code == 403
