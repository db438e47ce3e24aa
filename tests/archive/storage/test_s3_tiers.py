"""The mover with an S3 tier (SeaweedFS): a crash at every step, a round trip through S3 and cold, an outage."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from archive.dicom.synthetic import StudySpec, make_instance
from archive.ingest.mover import STEPS, Mover, plan_moves
from archive.ingest.store import Outcome, store_instances
from archive.models import Instance, MoveState, TierMove
from archive.storage import registry
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file
from tests.archive.storage.test_s3 import s3_server, tier_config  # noqa: F401 - the SeaweedFS fixture

pytestmark = pytest.mark.django_db


class Crash(BaseException):
    """A simulated kill."""


@pytest.fixture
def warm(s3_server: dict[str, Any], settings: Any) -> dict[str, str]:  # noqa: F811
    """A ``warm`` tier in S3 (STANDARD_IA) under a prefix of its own, beside the built-in hot and cold."""
    config = tier_config(s3_server, f"warm-{uuid.uuid4().hex}/") | {"storage_class": "STANDARD_IA"}
    settings.PACS_TIERS = {"warm": config}
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    settings.PACS_TIER_MOVE_LEASE_SECONDS = 0
    settings.PACS_TIER_MOVE_CONCURRENCY = 1
    settings.PACS_TIER_MOVE_BYTES_PER_SECOND = 0
    registry.forget()
    return config


def store(tmp_path: Path, count: int) -> dict[str, bytes]:
    spec = StudySpec(study_uid=f"2.25.{uuid.uuid4().int}")
    items, raws = [], {}
    for n in range(count):
        raw = make_instance(spec, instance_number=n + 1, size=64)
        raws[hashlib.sha256(raw).hexdigest()] = raw
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(raw)
        items.append(stage_file(get_storage("hot"), path))
    assert [r.outcome for r in store_instances(items)] == [Outcome.STORED] * count
    return raws


def assert_whole(raws: dict[str, bytes]) -> None:
    for row in Instance.objects.all():
        assert get_storage(row.tier).exists(row.storage_key)
        with row.open_stored() as fh:
            assert fh.read() == raws[row.sha256]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_of_a_move_to_s3_loses_nothing(warm: dict[str, str], tmp_path: Path, step: str) -> None:
    raws = store(tmp_path, 2)
    batch, _ = plan_moves(Instance.objects.all(), "warm")

    def crash(at: str, move: TierMove) -> None:
        if at == step:
            raise Crash(at)

    with pytest.raises(Crash):
        Mover(batch, fault=crash).run()
    assert_whole(raws)
    Mover(batch).run()
    assert set(Instance.objects.values_list("tier", flat=True)) == {"warm"}
    assert not any(get_storage("hot").exists(row.storage_key) for row in Instance.objects.all())
    assert_whole(raws)


def test_hot_to_s3_to_cold_to_hot_keeps_every_sha256_and_uses_the_storage_class(
    warm: dict[str, str],
    tmp_path: Path,
    s3_server: dict[str, Any],  # noqa: F811
) -> None:
    raws = store(tmp_path, 3)
    for target in ("warm", "cold", "hot"):
        batch, _ = plan_moves(Instance.objects.all(), target)
        assert Mover(batch).run().moved == 3
        assert set(Instance.objects.values_list("tier", flat=True)) == {target}
        assert_whole(raws)
        if target == "warm":
            row = Instance.objects.first()
            assert row is not None
            head = s3_server["client"].head_object(Bucket=warm["bucket"], Key=warm["prefix"] + row.storage_key)
            assert head.get("StorageClass", "STANDARD") == "STANDARD_IA"
    assert not list(get_storage("warm").keys()) and not list(get_storage("cold").keys())


def test_an_s3_outage_pauses_moves_and_they_resume_when_it_is_back(
    warm: dict[str, str], tmp_path: Path, settings: Any
) -> None:
    raws = store(tmp_path, 2)
    batch, _ = plan_moves(Instance.objects.all(), "warm")
    settings.PACS_TIERS = {"warm": warm | {"endpoint_url": "http://127.0.0.1:9"}}  # nothing listens there
    registry.forget()
    report = Mover(batch).run()
    assert report.moved == 0 and report.paused and report.paused[0].startswith("warm:")
    assert set(TierMove.objects.values_list("state", flat=True)) == {MoveState.PENDING}
    assert_whole(raws)
    settings.PACS_TIERS = {"warm": warm}
    registry.forget()
    TierMove.objects.update(lease_until=None)  # the back-off is over
    assert Mover(batch).run().moved == 2
    assert_whole(raws)
