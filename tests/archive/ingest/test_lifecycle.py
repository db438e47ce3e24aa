"""Lifecycle rules: the right instances to the right tier, decided in a few SQL statements; and manage.py tiers."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from archive.dicom.synthetic import StudySpec, make_instance
from archive.ingest.lifecycle import apply_rules
from archive.ingest.mover import Mover
from archive.ingest.store import Outcome, store_instances
from archive.models import Instance, LifecycleRule, Series, Site, Study, TierMove
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def mover_settings(settings: Any) -> None:
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    settings.PACS_TIER_MOVE_BYTES_PER_SECOND = 0
    settings.PACS_TIER_MOVE_CONCURRENCY = 1


def study(
    tmp_path: Path, days: int, modality: str = "CT", body: str = "CHEST", desc: str = "CT CHEST", site: Any = None
) -> str:
    """One stored instance in a study received ``days`` ago; returns the Study Instance UID."""
    spec = StudySpec(study_uid=f"2.25.{uuid.uuid4().int}", description=desc)
    raw = make_instance(spec, modality=modality, extra={"BodyPartExamined": body})
    path = tmp_path / f"{uuid.uuid4().hex}.dcm"
    path.write_bytes(raw)
    assert store_instances([stage_file(get_storage("hot"), path)])[0].outcome == Outcome.STORED
    Study.objects.filter(study_instance_uid=spec.study_uid).update(
        created_at=timezone.now() - timedelta(days=days), site=site
    )
    return spec.study_uid


def planned() -> dict[str, str]:
    """Study UID → target tier of every planned move."""
    return dict(TierMove.objects.values_list("instance__series__study__study_instance_uid", "target_tier"))


def test_rules_select_by_age_modality_body_part_description_and_site(tmp_path: Path) -> None:
    north = Site.objects.create(code="north", name="North")
    old_ct = study(tmp_path, 100)
    new_ct = study(tmp_path, 10)
    old_mr = study(tmp_path, 100, modality="MR", body="HEAD", desc="MR HEAD")
    old_ct_head = study(tmp_path, 100, body="HEAD", desc="CT HEAD")
    old_ct_north = study(tmp_path, 100, site=north, desc="CT research protocol")
    LifecycleRule.objects.create(
        name="research", priority=1, after_days=30, description_pattern="RESEARCH", target_tier="cold"
    )
    LifecycleRule.objects.create(name="north", priority=2, after_days=30, site=north, target_tier="hot")
    LifecycleRule.objects.create(
        name="old chest CT", priority=3, after_days=90, modality="ct", body_part="chest", target_tier="cold"
    )
    LifecycleRule.objects.create(name="disabled", enabled=False, after_days=0, target_tier="cold")
    plans = apply_rules()
    assert [(p.rule.name, p.planned) for p in plans] == [("research", 1), ("north", 0), ("old chest CT", 1)]
    assert planned() == {old_ct_north: "cold", old_ct: "cold"}
    assert new_ct not in planned() and old_mr not in planned() and old_ct_head not in planned()


def test_the_first_rule_by_priority_decides_even_when_the_instance_is_already_where_it_says(tmp_path: Path) -> None:
    uid = study(tmp_path, 400)
    LifecycleRule.objects.create(name="keep recent on hot", priority=1, after_days=0, target_tier="hot")
    LifecycleRule.objects.create(name="old to cold", priority=2, after_days=365, target_tier="cold")
    assert [p.planned for p in apply_rules()] == [0, 0]
    assert Instance.objects.get(series__study__study_instance_uid=uid).tier == "hot"


def test_rules_are_evaluated_in_as_many_queries_whatever_the_number_of_instances(tmp_path: Path) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for n in range(3):
        LifecycleRule.objects.create(name=f"r{n}", priority=n, after_days=50 * (n + 1), target_tier="cold")
    counts = []
    for studies in (1, 3, 12):  # the first run also creates the audit chain's head
        TierMove.objects.all().delete()
        for n in range(studies - len(set(Instance.objects.values_list("series__study", flat=True)))):
            study(tmp_path, 100 + 50 * (n % 4))
        with CaptureQueriesContext(connection) as queries:
            planned = sum(p.planned for p in apply_rules())
        assert planned == studies
        counts.append(len(queries))
    assert counts[1] == counts[2]


def test_applying_twice_plans_nothing_new_and_the_mover_carries_the_plan_out(tmp_path: Path) -> None:
    uid = study(tmp_path, 100)
    LifecycleRule.objects.create(name="old to cold", after_days=90, target_tier="cold")
    assert apply_rules()[0].planned == 1
    assert apply_rules()[0].planned == 0
    Mover().run()
    assert Instance.objects.get(series__study__study_instance_uid=uid).tier == "cold"
    assert apply_rules()[0].planned == 0


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("tiers", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_tiers_apply_moves_what_the_rules_select_and_tiers_status_says_where_things_are(tmp_path: Path) -> None:
    study(tmp_path, 100)
    study(tmp_path, 1)
    LifecycleRule.objects.create(name="CT older than 90 days", after_days=90, modality="CT", target_tier="cold")
    out = run("apply")
    assert "rule 'CT older than 90 days': 1 instances to cold" in out and "moved 1, removed 1 sources" in out
    status = run("status")
    assert [line.split()[:5] for line in status.splitlines()[1:3]] == [
        ["cold", "zstd", "immediate", "1", f"{Instance.objects.get(tier='cold').size / 1e9:.3f}"],
        ["hot", "filesystem", "immediate", "1", f"{Instance.objects.get(tier='hot').size / 1e9:.3f}"],
    ]
    assert "done 2" not in status and "done 1" in status


def test_tiers_move_by_study_and_back(tmp_path: Path) -> None:
    first, second = study(tmp_path, 1), study(tmp_path, 1)
    assert "moved 1" in run("move", "--to", "cold", "--study", first)
    assert dict(Instance.objects.values_list("series__study__study_instance_uid", "tier")) == {
        first: "cold",
        second: "hot",
    }
    assert "moved 1" in run("move", "--to", "hot", "--from", "cold")
    assert set(Instance.objects.values_list("tier", flat=True)) == {"hot"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("move", "--to", "glacier"), "there is no storage tier named 'glacier'"),
        (("move", "--to", "cold", "--study", "1.2.3"), "no such study: 1.2.3"),
        (("verify", "tape"), "there is no storage tier named 'tape'"),
    ],
)
def test_tiers_refuses_what_does_not_exist_clearly(args: tuple[str, ...], message: str) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        run(*args)


@pytest.mark.parametrize("tier", ["hot", "cold"])
def test_verify_reports_a_corrupted_object_and_it_is_never_served_as_good(
    tmp_path: Path, tier: str, admin_client_token: Client
) -> None:
    good, bad = study(tmp_path, 1), study(tmp_path, 1)
    if tier == "cold":
        run("move", "--to", "cold")
    assert "2 objects" in run("verify", tier) and "0 do not match" in run("verify", tier)
    victim = Instance.objects.get(series__study__study_instance_uid=bad)
    path = get_storage(tier).path(victim.storage_key)  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit flips on the disk
    path.write_bytes(bytes(data))
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_status:
        call_command("tiers", "verify", tier, stdout=out, stderr=io.StringIO())
    assert exit_status.value.code == 1
    assert "1 do not match" in out.getvalue() and "MISMATCH *." in out.getvalue()
    assert victim.sop_instance_uid not in out.getvalue()  # logs and reports name objects by hash, never by UID
    assert AuditEvent.objects.filter(action="tier-verify", outcome="failure", study_instance_uid=bad).exists()
    series = Series.objects.get(study__study_instance_uid=bad).series_instance_uid
    url = f"/dicom-web/studies/{bad}/series/{series}/instances/{victim.sop_instance_uid}"
    response = admin_client_token.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"')
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"DICM" not in body  # no Part 10 object of it goes out, damaged or not
    frame = admin_client_token.get(url + "/frames/1", HTTP_ACCEPT='multipart/related; type="application/octet-stream"')
    assert frame.status_code >= 400
    good_row = Instance.objects.get(series__study__study_instance_uid=good)
    with good_row.open_stored() as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == good_row.sha256


def test_moves_and_rules_to_a_tier_that_needs_a_restore_are_allowed_and_make_instances_nearline(
    tmp_path: Path,
) -> None:
    from archive.models import Tier

    study(tmp_path, 1)
    Tier.sync_environment()
    Tier.objects.filter(name="cold").update(retrieval="hours")
    LifecycleRule(name="deep", after_days=1, target_tier="cold").full_clean()
    run("move", "--to", "cold")
    assert set(Instance.objects.values_list("tier", "availability")) == {("cold", "NEARLINE")}
    run("move", "--to", "hot")
    assert set(Instance.objects.values_list("tier", "availability")) == {("hot", "ONLINE")}
