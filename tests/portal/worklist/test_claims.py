"""Claiming: one reader at a time (also under a real race), refusals naming the holder, expiry, overrides, audit."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from archive.models import Patient, Site, Study
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.worklist import claims
from portal.worklist.claims import ClaimRefused, claim, expire_claims, release, touch
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Status
from tests.conftest import role_user


def make_row(site: Site, uid: str = "1.2.3.4", status: Status = Status.READY) -> WorklistItem:
    patient = Patient.objects.create(patient_id="C-1", patient_name="CLAIM^ME")
    study = Study.objects.create(study_instance_uid=uid, patient=patient, site=site)
    return WorklistItem.objects.create(
        study=study, study_instance_uid=uid, status=status, patient_id="C-1", site=site, site_code=site.code
    )


@pytest.fixture
def row(general_site: Site) -> WorklistItem:
    return make_row(general_site)


def actions() -> list[tuple[str, str, str]]:
    return [(e.action, e.actor, e.outcome) for e in AuditEvent.objects.order_by("id")]


def test_a_claim_locks_the_study_to_its_reader_and_is_audited(row: WorklistItem, radiologist: User) -> None:
    claimed = claim(row, radiologist)
    assert (claimed.status, claimed.claimed_by, claimed.reader_name) == (Status.IN_PROGRESS, radiologist, "rad-one")
    assert claimed.claimed_at == claimed.claim_touched_at is not None
    event = AuditEvent.objects.get(action="worklist_claim")
    assert (event.actor, event.study_instance_uid, event.patient_id, event.outcome) == (
        "rad-one",
        "1.2.3.4",
        "C-1",
        "success",
    )


def test_a_second_claim_is_refused_naming_who_holds_the_study(
    row: WorklistItem, radiologist: User, second_radiologist: User
) -> None:
    claim(row, radiologist)
    with pytest.raises(ClaimRefused) as refused:
        claim(row, second_radiologist)
    assert (str(refused.value), refused.value.holder) == ("claimed by rad-one", "rad-one")
    assert WorklistItem.objects.get(pk=row.pk).claimed_by == radiologist


def test_claiming_ones_own_claim_again_only_keeps_it_alive(row: WorklistItem, radiologist: User) -> None:
    start = timezone.now()
    claim(row, radiologist, now=start)
    again = claim(row, radiologist, now=start + timedelta(minutes=10))
    assert (again.claimed_at, again.claim_touched_at) == (start, start + timedelta(minutes=10))
    assert [a for a, _, _ in actions()] == ["worklist_claim"]


def test_an_idle_claim_expires_and_another_reader_may_take_it(
    settings: Any, row: WorklistItem, radiologist: User, second_radiologist: User
) -> None:
    settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS = 600
    start = timezone.now()
    claim(row, radiologist, now=start)
    with pytest.raises(ClaimRefused):
        claim(row, second_radiologist, now=start + timedelta(seconds=599))
    taken = claim(row, second_radiologist, now=start + timedelta(seconds=601))
    assert taken.claimed_by == second_radiologist
    event = AuditEvent.objects.filter(action="worklist_claim").latest("id")
    assert event.actor == "rad-two" and event.detail == {"took_over_expired_claim_of": "rad-one"}


def test_activity_keeps_a_claim_from_expiring(
    settings: Any, row: WorklistItem, radiologist: User, second_radiologist: User
) -> None:
    settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS = 600
    start = timezone.now()
    claim(row, radiologist, now=start)
    assert touch(row, radiologist, now=start + timedelta(seconds=500))
    assert not touch(row, second_radiologist, now=start + timedelta(seconds=500))
    with pytest.raises(ClaimRefused):
        claim(row, second_radiologist, now=start + timedelta(seconds=900))


def test_expire_claims_puts_idle_studies_back_to_ready_with_an_audit_record(
    settings: Any, general_site: Site, radiologist: User
) -> None:
    settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS = 60
    idle, busy = make_row(general_site, "1.2.9.1"), make_row_for_other_patient(general_site, "1.2.9.2")
    start = timezone.now() - timedelta(seconds=120)
    claim(idle, radiologist, now=start)
    claim(busy, radiologist)
    assert expire_claims() == 1
    idle.refresh_from_db()
    busy.refresh_from_db()
    assert (idle.status, idle.claimed_by, busy.status) == (Status.READY, None, Status.IN_PROGRESS)
    event = AuditEvent.objects.get(action="worklist_claim_expired")
    assert (event.actor, event.study_instance_uid, event.detail["previous_holder"]) == (
        "worklist",
        "1.2.9.1",
        "rad-one",
    )


def make_row_for_other_patient(site: Site, uid: str) -> WorklistItem:
    patient = Patient.objects.create(patient_id="C-2", patient_name="OTHER^ONE")
    study = Study.objects.create(study_instance_uid=uid, patient=patient, site=site)
    return WorklistItem.objects.create(study=study, study_instance_uid=uid, status=Status.READY, site=site)


def test_the_holder_releases_and_another_reader_cannot(
    row: WorklistItem, radiologist: User, second_radiologist: User
) -> None:
    claim(row, radiologist)
    with pytest.raises(ClaimRefused) as refused:
        release(row, second_radiologist)
    assert refused.value.holder == "rad-one"
    released = release(row, radiologist)
    assert (released.status, released.claimed_by, released.claimed_at, released.reader_name) == (
        Status.READY,
        None,
        None,
        "",
    )
    assert [a for a, _, _ in actions()] == ["worklist_claim", "worklist_release"]


def test_an_administrator_overrides_and_releases_anyones_claim_audited(
    row: WorklistItem, radiologist: User, admin_user: User, second_radiologist: User
) -> None:
    claim(row, radiologist)
    with pytest.raises(ClaimRefused) as refused:
        claim(row, second_radiologist, override=True)
    assert str(refused.value) == "only administrators may override a claim"
    taken = claim(row, admin_user, override=True)
    assert taken.claimed_by == admin_user
    override = AuditEvent.objects.get(action="worklist_claim_override")
    assert override.detail == {"previous_holder": "rad-one"}
    release(row, admin_user)
    assert WorklistItem.objects.get(pk=row.pk).status == Status.READY


def test_an_administrator_releases_a_readers_claim_as_an_override(
    row: WorklistItem, radiologist: User, admin_user: User
) -> None:
    claim(row, radiologist)
    release(row, admin_user)
    event = AuditEvent.objects.get(action="worklist_release_override")
    assert (event.actor, event.detail) == ("admin", {"previous_holder": "rad-one"})


def test_only_readers_claim_and_only_claimable_studies(general_site: Site, row: WorklistItem) -> None:
    technologist = role_user("tech", Role.TECHNOLOGIST, general_site)
    with pytest.raises(ClaimRefused, match="only radiologists and administrators claim studies"):
        claim(row, technologist)
    reader = role_user("reader-x", Role.RADIOLOGIST, general_site)
    for status in (Status.ARRIVED, Status.QC_FAILED, Status.FINAL, Status.CANCELLED):
        WorklistItem.objects.filter(pk=row.pk).update(status=status)
        with pytest.raises(ClaimRefused, match="cannot be claimed"):
            claim(row, reader)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("readers", [2, 6])
def test_of_readers_claiming_at_the_same_moment_exactly_one_wins(general_site: Site, readers: int) -> None:
    row = make_row(general_site, "1.2.3.99")
    users = [role_user(f"racer-{n}", Role.RADIOLOGIST, general_site) for n in range(readers)]
    start = threading.Barrier(readers)
    won: list[str] = []
    lost: list[str] = []

    def race(user: User) -> None:
        try:
            start.wait()
            claim(WorklistItem.objects.get(pk=row.pk), user)
            won.append(user.username)
        except ClaimRefused as refused:
            lost.append(refused.holder)
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1 and len(lost) == readers - 1
    assert set(lost) == set(won)  # every loser was told who won
    assert WorklistItem.objects.get(pk=row.pk).claimed_by.username == won[0]
    assert AuditEvent.objects.filter(action="worklist_claim", outcome="success").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_claim_update_itself_refuses_a_row_that_changed_since_it_was_read(general_site: Site) -> None:
    """The compare-and-set, without the SQLite writers' queue: a stale read cannot win."""
    row = make_row(general_site, "1.2.3.98")
    first, second = (role_user(n, Role.RADIOLOGIST, general_site) for n in ("first", "second"))
    stale = claims._read(row.pk)
    claim(row, first)
    assert not claims._swap(row.pk, stale, claimed_by_id=second.pk, status=Status.IN_PROGRESS)
    assert WorklistItem.objects.get(pk=row.pk).claimed_by == first


def test_heartbeats_keep_a_claim_alive_past_the_idle_limit_and_it_expires_once_they_stop(
    settings: Any, row: WorklistItem, radiologist: User, second_radiologist: User
) -> None:
    settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS = 600
    start = timezone.now()
    claim(row, radiologist, now=start)
    for minutes in (5, 10, 15, 20):  # the viewer is open: a beat every five minutes
        assert claims.heartbeat(row, radiologist, now=start + timedelta(minutes=minutes)) is True
    row.refresh_from_db()
    assert row.claim_touched_at == start + timedelta(minutes=20)
    assert expire_claims(now=start + timedelta(minutes=29)) == 0
    with pytest.raises(ClaimRefused):
        claim(row, second_radiologist, now=start + timedelta(minutes=29))
    # The viewer is closed: no more beats, and ten idle minutes later the claim expires.
    assert expire_claims(now=start + timedelta(minutes=30, seconds=1)) == 1
    row.refresh_from_db()
    assert (row.status, row.claimed_by) == (Status.READY, None)


def test_a_heartbeat_refreshes_only_its_holders_live_claim_and_never_revives_an_expired_one(
    settings: Any, row: WorklistItem, general_site: Site, radiologist: User, second_radiologist: User
) -> None:
    settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS = 600
    start = timezone.now()
    patient = Patient.objects.create(patient_id="C-2", patient_name="FREE^ONE")
    study = Study.objects.create(study_instance_uid="1.2.3.5", patient=patient, site=general_site)
    unclaimed = WorklistItem.objects.create(study=study, study_instance_uid="1.2.3.5", status=Status.READY)
    assert claims.heartbeat(unclaimed, radiologist, now=start) is False
    claim(row, radiologist, now=start)
    assert claims.heartbeat(row, second_radiologist, now=start + timedelta(minutes=5)) is False
    row.refresh_from_db()
    assert row.claim_touched_at == start
    late = start + timedelta(minutes=10, seconds=1)  # expired, not yet swept: a beat cannot bring it back
    assert claims.heartbeat(row, radiologist, now=late) is False
    row.refresh_from_db()
    assert row.claim_touched_at == start
    assert claim(row, second_radiologist, now=late).claimed_by == second_radiologist
    before = AuditEvent.objects.count()
    assert claims.heartbeat(row, second_radiologist, now=late + timedelta(seconds=30)) is True
    assert AuditEvent.objects.count() == before  # a beat is activity on an audited claim, not an audit record
