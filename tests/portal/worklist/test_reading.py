"""The endpoints the viewer page calls while a study is read, over HTTP: the claim's heartbeat, next/previous study."""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from archive.models import Site
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.models import AccessGrant
from portal.worklist import claims
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Priority, Status
from tests.conftest import role_user
from tests.mfa_support import force_verified_login
from tests.portal.worklist.conftest import signed_in
from tests.portal.worklist.test_views import add_rows


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


def test_next_and_previous_study_follow_the_to_read_order_of_the_worklist(
    rad_client: Client, radiologist: User, outside_radiologist: User, general_site: Site
) -> None:
    rows = add_rows(general_site, 3, "1")  # a prefix whose hex form leaves valid UIDs
    WorklistItem.objects.filter(pk=rows[2].pk).update(priority=Priority.STAT)  # STAT leads the list
    WorklistItem.objects.filter(pk=rows[1].pk).update(status=Status.FINAL)  # read: not on the list to read
    first, _, stat = rows
    uid = stat.study_instance_uid

    def step(item: WorklistItem, direction: str) -> str:
        response = rad_client.get(f"/worklist/studies/{item.study_instance_uid}/{direction}")
        assert response.status_code == 302
        return str(response["Location"])

    assert step(stat, "next") == f"/viewer/studies/{first.study_instance_uid}"
    assert step(first, "previous") == f"/viewer/studies/{uid}"
    assert step(first, "next") == "/worklist/"  # the end of the list: back to it
    assert step(stat, "previous") == "/worklist/"
    assert step(rows[1], "next") == f"/viewer/studies/{uid}"  # off the list: the top of the list
    assert signed_in(outside_radiologist).get(f"/worklist/studies/{uid}/next").status_code == 404
    assert rad_client.get("/worklist/studies/1.2.x/next").status_code == 400
    assert rad_client.post(f"/worklist/studies/{uid}/next").status_code == 405


def test_next_and_previous_study_are_refused_to_users_who_read_no_worklist(general_site: Site) -> None:
    rows = add_rows(general_site, 3, "2")
    WorklistItem.objects.filter(pk=rows[1].pk).update(status=Status.PRELIMINARY)  # a preliminary report exists
    clinician = role_user("dr-carol", Role.REFERRING_CLINICIAN, general_site)
    for row in rows:
        AccessGrant.objects.create(
            user=clinician, study=row.study, reason="referred", expires_at=timezone.now() + timedelta(hours=1)
        )
    client = signed_in(clinician)
    for direction in ("next", "previous"):
        response = client.get(f"/worklist/studies/{rows[0].study_instance_uid}/{direction}")
        assert response.status_code == 403  # the order (and so the status) of the list to read is a reader's
    denied = AuditEvent.objects.filter(action__in=("worklist_next", "worklist_previous"), outcome="denied")
    assert denied.count() == 2
