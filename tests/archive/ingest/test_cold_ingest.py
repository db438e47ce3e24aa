"""Ingest, reindex and sweep with instances on the cold tier."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from archive.dicom.synthetic import StudySpec, make_instance
from archive.ingest.mover import Mover, plan_moves
from archive.ingest.reindex import reindex
from archive.ingest.store import Outcome, store_instances
from archive.ingest.sweep import sweep_orphans
from archive.models import Instance
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def mover_settings(settings: Any) -> None:
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    settings.PACS_TIER_MOVE_CONCURRENCY = 1


def send(tmp_path: Path, raw: bytes) -> Outcome:
    path = tmp_path / f"{uuid.uuid4().hex}.dcm"
    path.write_bytes(raw)
    return store_instances([stage_file(get_storage("hot"), path)])[0].outcome


def to_cold() -> None:
    batch, _ = plan_moves(Instance.objects.all(), "cold")
    Mover(batch).run()


def test_sending_again_an_instance_kept_on_cold_is_a_duplicate_and_leaves_no_copy_on_hot(tmp_path: Path) -> None:
    raw = make_instance(StudySpec(), sop_uid="2.25.77")
    assert send(tmp_path, raw) == Outcome.STORED
    to_cold()
    assert send(tmp_path, raw) == Outcome.DUPLICATE
    assert Instance.objects.get().tier == "cold"
    assert list(get_storage("hot").keys()) == []


def test_a_different_object_under_a_sop_instance_uid_kept_on_cold_is_a_conflict(tmp_path: Path) -> None:
    spec = StudySpec()
    assert send(tmp_path, make_instance(spec, sop_uid="2.25.78")) == Outcome.STORED
    to_cold()
    assert send(tmp_path, make_instance(spec, sop_uid="2.25.78", instance_number=9)) == Outcome.CONFLICT
    assert list(get_storage("hot").keys()) == []


def test_the_index_is_rebuilt_from_the_cold_tier_alone(tmp_path: Path) -> None:
    for n in range(3):
        send(tmp_path, make_instance(StudySpec(), sop_uid=f"2.25.79{n}"))
    to_cold()
    before = sorted(Instance.objects.values_list("sop_instance_uid", "sha256", "storage_key", "frames"))
    reindex(wipe=True)  # every tier, the built-in cold one included
    assert sorted(Instance.objects.values_list("sop_instance_uid", "sha256", "storage_key", "frames")) == before
    assert set(Instance.objects.values_list("tier", flat=True)) == {"cold"}


def test_sweep_of_the_cold_tier_keeps_indexed_objects(tmp_path: Path) -> None:
    send(tmp_path, make_instance(StudySpec(), sop_uid="2.25.80"))
    to_cold()
    report = sweep_orphans("cold", min_age=timedelta(0))
    assert (report.recovered, report.removed, report.kept) == (0, 0, [])
    assert len(list(get_storage("cold").keys())) == 1
