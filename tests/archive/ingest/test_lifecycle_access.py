"""Last access and the rules that use it: idle time, promotion back, patient age (archive/ingest/lastaccess.py).

Reads record when a study was last accessed, at most once an hour per study
and process, so the frame fast path stays a read; rules count days since that
access (since receipt when never read), promote back what was read lately,
and select by the patient's age at the study date, all in SQL.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from archive.dicom.synthetic import StudySpec, make_instance
from archive.ingest import lastaccess
from archive.ingest.lastaccess import touch_study
from archive.ingest.lifecycle import apply_rules
from archive.ingest.mover import Mover
from archive.ingest.store import Outcome, store_instances
from archive.models import (
    ACTIVE_MOVE_STATES,
    Instance,
    LifecycleRule,
    Restore,
    RestoreState,
    RuleBasis,
    Study,
    Tier,
    TierMove,
)
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file
from tests.archive.dicomweb.test_fastpath import call
from tests.conftest import bearer_client
from tests.mfa_support import force_verified_login

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def fresh_memory(settings: Any) -> Iterator[None]:
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    settings.PACS_TIER_MOVE_BYTES_PER_SECOND = 0
    settings.PACS_TIER_MOVE_CONCURRENCY = 1
    settings.PACS_LAST_ACCESS_INTERVAL_SECONDS = 3600
    lastaccess.forget()
    yield
    lastaccess.forget()


class Clock:
    """A wall clock the test moves forward."""

    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(lastaccess, "clock", c)
    return c


def study(
    tmp_path: Path,
    days: int = 100,
    birth: str = "19700101",
    study_date: str = "20240115",
    extra: dict[str, Any] | None = None,
) -> str:
    """One stored CT instance in a study received ``days`` ago; returns the Study Instance UID."""
    spec = StudySpec(
        study_uid=f"2.25.{uuid.uuid4().int}", patient_id=uuid.uuid4().hex[:16], birth_date=birth, study_date=study_date
    )
    raw = make_instance(spec, "CT", extra={"BodyPartExamined": "CHEST", **(extra or {})})
    path = tmp_path / f"{uuid.uuid4().hex}.dcm"
    path.write_bytes(raw)
    assert store_instances([stage_file(get_storage("hot"), path)])[0].outcome == Outcome.STORED
    Study.objects.filter(study_instance_uid=spec.study_uid).update(created_at=timezone.now() - timedelta(days=days))
    return spec.study_uid


def accessed(uid: str) -> datetime | None:
    return Study.objects.values_list("last_accessed_at", flat=True).get(study_instance_uid=uid)


def planned() -> dict[str, str]:
    """Study UID → target tier of every move planned and not yet done."""
    return dict(
        TierMove.objects.filter(state__in=ACTIVE_MOVE_STATES).values_list(
            "instance__series__study__study_instance_uid", "target_tier"
        )
    )


def frame_url(uid: str) -> str:
    inst = Instance.objects.select_related("series").get(series__study__study_instance_uid=uid)
    return f"/dicom-web/studies/{uid}/series/{inst.series.series_instance_uid}/instances/{inst.sop_instance_uid}"


def writes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].split(None, 1)[0].upper() in ("INSERT", "UPDATE")]


# ------------------------------------------------------------------ recording


def test_touching_a_study_writes_once_per_interval_and_never_moves_the_date_back(tmp_path: Path) -> None:
    uid = study(tmp_path)
    start = timezone.now()
    assert accessed(uid) is None
    assert touch_study(uid, start) is True
    assert accessed(uid) == start
    for minutes in (1, 30, 59):
        with CaptureQueriesContext(connection) as queries:
            assert touch_study(uid, start + timedelta(minutes=minutes)) is False
        assert queries.captured_queries == []  # not even a read
    assert accessed(uid) == start
    assert touch_study(uid, start + HOUR + timedelta(seconds=1)) is True
    assert accessed(uid) == start + HOUR + timedelta(seconds=1)


def test_another_process_that_touched_the_study_lately_changes_nothing(tmp_path: Path) -> None:
    uid = study(tmp_path)
    start = timezone.now()
    touch_study(uid, start)
    lastaccess.forget()  # a second process: it has not touched the study itself
    assert touch_study(uid, start + timedelta(minutes=10)) is True  # it asks the database once...
    assert accessed(uid) == start  # ...which keeps the first record, still within the interval


def test_recording_can_be_switched_off(tmp_path: Path, settings: Any) -> None:
    settings.PACS_LAST_ACCESS_INTERVAL_SECONDS = 0
    uid = study(tmp_path)
    assert touch_study(uid) is False
    assert accessed(uid) is None


def test_the_frame_fast_path_records_the_access_once_and_then_writes_nothing(
    tmp_path: Path, admin_user: Any, clock: Clock
) -> None:
    from archive.models import ApiToken

    uid = study(tmp_path)
    _, token = ApiToken.issue(admin_user, "viewer")
    url = frame_url(uid) + "/frames/1"
    first = call(url, token=token)
    assert first.status == 200 and not first.by_django
    assert accessed(uid) == clock.now
    with CaptureQueriesContext(connection) as queries:
        for _ in range(30):
            clock.now += timedelta(seconds=20)  # ten minutes of scrolling
            answer = call(url, token=token)
            assert answer.status == 200 and not answer.by_django
    # The audit trail writes one record per user and study every five minutes; the last access nothing.
    assert not [sql for sql in writes(queries) if Study._meta.db_table in sql]
    assert len(writes(queries)) <= 2
    assert accessed(uid) == clock.now - timedelta(seconds=600)
    clock.now += HOUR
    assert call(url, token=token).status == 200
    assert accessed(uid) == clock.now


@pytest.mark.parametrize(
    ("suffix", "accept"),
    [
        ("", 'multipart/related; type="application/dicom"'),  # WADO-RS retrieve
        ("/metadata", "application/dicom+json"),
        ("/rendered", "image/jpeg"),
        ("/frames/1", 'multipart/related; type="application/octet-stream"; transfer-syntax=*'),
    ],
)
def test_each_wado_read_records_the_access(
    tmp_path: Path, admin_client_token: Client, suffix: str, accept: str
) -> None:
    uid = study(tmp_path)
    response = admin_client_token.get(frame_url(uid) + suffix, HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert accessed(uid) is not None


def test_a_refused_read_records_nothing(tmp_path: Path, outsider: Any) -> None:
    uid = study(tmp_path)
    response = bearer_client(outsider).get(frame_url(uid) + "/metadata", HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 404
    assert accessed(uid) is None


def test_an_export_records_the_access_of_the_studies_it_wrote(tmp_path: Path) -> None:
    read, left = study(tmp_path), study(tmp_path)
    call_command("export_dicom", str(tmp_path / "out"), "--study", read, stdout=io.StringIO(), stderr=io.StringIO())
    assert accessed(read) is not None and accessed(left) is None


# ------------------------------------------------------------------ rules since the last access


def test_idle_rules_count_from_the_last_access_or_from_receipt_when_never_read(tmp_path: Path) -> None:
    now = timezone.now()
    never_read_old = study(tmp_path, days=100)
    never_read_new = study(tmp_path, days=10)
    read_lately = study(tmp_path, days=100)
    read_long_ago = study(tmp_path, days=100)
    touch_study(read_lately, now - timedelta(days=5))
    touch_study(read_long_ago, now - timedelta(days=60))
    LifecycleRule.objects.create(name="idle 30 days", basis=RuleBasis.LAST_ACCESS, after_days=30, target_tier="cold")
    assert [p.planned for p in apply_rules(now)] == [2]
    assert planned() == {never_read_old: "cold", read_long_ago: "cold"}
    assert never_read_new not in planned() and read_lately not in planned()


def test_a_read_postpones_an_idle_move_as_time_passes(tmp_path: Path) -> None:
    now = timezone.now()
    uid = study(tmp_path, days=20)
    LifecycleRule.objects.create(name="idle 30 days", basis=RuleBasis.LAST_ACCESS, after_days=30, target_tier="cold")
    touch_study(uid, now + timedelta(days=5))  # read at 25 days old
    assert apply_rules(now + timedelta(days=15))[0].planned == 0  # 35 days old, idle 10 days
    assert apply_rules(now + timedelta(days=36))[0].planned == 1  # idle 31 days


# ------------------------------------------------------------------ promotion back


def test_studies_read_lately_are_promoted_back_and_the_others_age_out(tmp_path: Path) -> None:
    now = timezone.now()
    read, unread = study(tmp_path, days=200), study(tmp_path, days=200)
    call_command("tiers", "move", "--to", "cold", stdout=io.StringIO(), stderr=io.StringIO())
    assert set(Instance.objects.values_list("tier", flat=True)) == {"cold"}
    touch_study(read, now - timedelta(days=2))
    LifecycleRule.objects.create(
        name="read lately", priority=1, basis=RuleBasis.ACCESSED_WITHIN, after_days=7, target_tier="hot"
    )
    LifecycleRule.objects.create(name="old to cold", priority=2, after_days=90, target_tier="cold")
    assert [p.planned for p in apply_rules(now)] == [1, 0]
    assert planned() == {read: "hot"}
    Mover().run()
    tiers = dict(Instance.objects.values_list("series__study__study_instance_uid", "tier"))
    assert tiers == {read: "hot", unread: "cold"}
    assert [p.planned for p in apply_rules(now)] == [0, 0]  # nothing moves twice
    # Ten days on, nobody read it again: the age rule sends it back.
    assert [p.planned for p in apply_rules(now + timedelta(days=10))] == [0, 1]


def test_promotion_leaves_a_nearline_study_to_the_restore_its_read_started(
    tmp_path: Path, admin_client_token: Client
) -> None:
    uid = study(tmp_path, days=200)
    Tier.sync_environment()
    Tier.objects.filter(name="cold").update(retrieval="hours")
    call_command("tiers", "move", "--to", "cold", stdout=io.StringIO(), stderr=io.StringIO())
    assert set(Instance.objects.values_list("availability", flat=True)) == {"NEARLINE"}
    moves_before = TierMove.objects.count()
    response = admin_client_token.get(
        frame_url(uid) + "/frames/1", HTTP_ACCEPT='multipart/related; type="application/octet-stream"'
    )
    assert response.status_code == 503
    assert accessed(uid) is not None  # the read counts, though it waits
    assert Restore.objects.filter(state=RestoreState.REQUESTED).count() == 1
    LifecycleRule.objects.create(name="read lately", basis=RuleBasis.ACCESSED_WITHIN, after_days=7, target_tier="hot")
    assert apply_rules()[0].planned == 0
    assert TierMove.objects.count() == moves_before  # the restore alone brings it back: one move, not two
    Restore.objects.update(state=RestoreState.FAILED)  # even with no restore in flight, no move from NEARLINE
    assert apply_rules()[0].planned == 0


# ------------------------------------------------------------------ patient age


def test_rules_select_by_the_patients_age_at_the_study_date(tmp_path: Path) -> None:
    child = study(tmp_path, birth="20150601", study_date="20240115")  # 8
    just_18 = study(tmp_path, birth="20060115", study_date="20240115")  # 18 that day
    almost_18 = study(tmp_path, birth="20060116", study_date="20240115")  # 17
    adult = study(tmp_path, birth="19800101", study_date="20240115")  # 44
    elderly = study(tmp_path, birth="19400301", study_date="20240115")  # 83
    by_age_only = study(tmp_path, birth="", extra={"PatientAge": "070Y"})  # 70
    infant = study(tmp_path, birth="bad", extra={"PatientAge": "018M"})  # 1
    unknown = study(tmp_path, birth="", study_date="")
    LifecycleRule.objects.create(name="children", priority=1, after_days=0, max_patient_age=17, target_tier="hot")
    LifecycleRule.objects.create(name="65+", priority=2, after_days=0, min_patient_age=65, target_tier="cold")
    LifecycleRule.objects.create(
        name="18 to 44", priority=3, after_days=0, min_patient_age=18, max_patient_age=44, target_tier="cold"
    )
    plans = apply_rules()
    # children are already on hot (the rule keeps them there: later rules do not see them)
    assert [p.planned for p in plans] == [0, 2, 2]
    assert planned() == {elderly: "cold", by_age_only: "cold", just_18: "cold", adult: "cold"}
    for uid in (child, almost_18, infant, unknown):
        assert uid not in planned()


def test_an_age_rule_with_bounds_upside_down_is_refused() -> None:
    rule = LifecycleRule(name="x", after_days=1, min_patient_age=60, max_patient_age=18, target_tier="cold")
    with pytest.raises(ValidationError, match="upper age bound"):
        rule.full_clean()


def test_the_admin_edits_the_new_rule_fields_with_their_help(admin_user: Any) -> None:
    client = Client()
    force_verified_login(client, admin_user)
    page = client.get("/admin/archive/lifecyclerule/add/").content.decode()
    for text in ("since the last access", "accessed within the last N days", "(0010,0030) Patient", "age up to"):
        assert text in page


def test_the_cost_projection_takes_age_rules_and_leaves_promotions_out(tmp_path: Path) -> None:
    from archive.costs.usage import cost_report

    study(tmp_path, birth="19400301")
    LifecycleRule.objects.create(
        name="read lately", priority=1, basis=RuleBasis.ACCESSED_WITHIN, after_days=7, target_tier="hot"
    )
    LifecycleRule.objects.create(name="65+", priority=2, after_days=30, min_patient_age=65, target_tier="cold")
    report = cost_report()
    assert [(r.after_days, r.target) for r in report.rules] == [(30, "cold")]


def test_promotion_never_plans_a_second_move_of_an_object_already_moving(tmp_path: Path) -> None:
    from archive.ingest.mover import plan_moves

    uid = study(tmp_path, days=200)
    call_command("tiers", "move", "--to", "cold", stdout=io.StringIO(), stderr=io.StringIO())
    touch_study(uid)
    batch, _ = plan_moves(Instance.objects.all(), "hot", actor="test")  # e.g. an administrator's move, not run yet
    LifecycleRule.objects.create(name="read lately", basis=RuleBasis.ACCESSED_WITHIN, after_days=7, target_tier="hot")
    assert apply_rules()[0].planned == 0
    assert list(TierMove.objects.filter(state__in=ACTIVE_MOVE_STATES).values_list("batch", flat=True)) == [batch]
    Mover().run()
    assert Instance.objects.get().tier == "hot"
    assert apply_rules()[0].planned == 0 and not TierMove.objects.filter(state__in=ACTIVE_MOVE_STATES).exists()


def test_a_birth_date_after_the_study_date_is_no_age_and_the_patients_age_is_used_instead(tmp_path: Path) -> None:
    wrong = study(tmp_path, birth="20300101", study_date="20240115")  # a typo, not a child of -6
    same_day_wrong = study(tmp_path, birth="20240116", study_date="20240115")
    with_age = study(tmp_path, birth="20300101", study_date="20240115", extra={"PatientAge": "050Y"})
    LifecycleRule.objects.create(name="children", priority=1, after_days=0, max_patient_age=17, target_tier="cold")
    LifecycleRule.objects.create(name="40+", priority=2, after_days=0, min_patient_age=40, target_tier="cold")
    apply_rules()
    assert planned() == {with_age: "cold"}
    assert wrong not in planned() and same_day_wrong not in planned()
