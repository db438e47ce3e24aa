"""The mover: copy → verify → switch → delete, with a crash injected at every step, and reads that never fail."""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from archive.dicom.synthetic import StudySpec, make_instance
from archive.ingest.mover import MAX_ATTEMPTS, STEPS, Mover, plan_moves
from archive.ingest.store import Outcome, store_instances
from archive.ingest.tasks import run_moves
from archive.models import Instance, MoveState, TierMove
from archive.storage import registry
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


class Crash(BaseException):
    """A simulated kill: nothing after the injection point runs, not even the mover's own error handling."""


@pytest.fixture(autouse=True)
def mover_settings(settings: Any) -> None:
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    settings.PACS_TIER_MOVE_LEASE_SECONDS = 0  # a "killed" worker's lease is over at once
    settings.PACS_TIER_MOVE_CONCURRENCY = 1
    settings.PACS_TIER_MOVE_BYTES_PER_SECOND = 0
    settings.PACS_TIER_MOVE_GROUP = 3  # several groups per batch: some moves a step ahead of others at a crash


def store(tmp_path: Path, count: int = 3, frames: int = 1, spec: StudySpec | None = None) -> list[bytes]:
    spec = spec or StudySpec(study_uid=f"2.25.{uuid.uuid4().int}")
    raws = [
        make_instance(spec, instance_number=n + 1, size=64, frames=frames, modality="US" if frames > 1 else "CT")
        for n in range(count)
    ]
    items = []
    for raw in raws:
        path = tmp_path / f"{uuid.uuid4().hex}.dcm"
        path.write_bytes(raw)
        items.append(stage_file(get_storage("hot"), path))
    assert [r.outcome for r in store_instances(items)] == [Outcome.STORED] * count
    return raws


def where(instance: Instance) -> list[str]:
    """The tiers holding a copy of the instance's object."""
    return [t for t in ("hot", "cold") if get_storage(t).exists(instance.storage_key)]


def assert_whole(raws: list[bytes]) -> None:
    """Every instance readable, byte for byte, from the tier its row names."""
    digests = {hashlib.sha256(raw).hexdigest(): raw for raw in raws}
    rows = list(Instance.objects.all())
    assert len(rows) == len(raws)
    for row in rows:
        with row.open_stored() as fh:
            data = fh.read()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert data == digests[row.sha256]


def move_all(target: str, fault: Any = None) -> str:
    batch, _ = plan_moves(Instance.objects.all(), target)
    Mover(batch, fault=fault).run()
    return batch


def test_hot_to_cold_and_back_keeps_every_sha256_and_leaves_one_copy(tmp_path: Path) -> None:
    raws = store(tmp_path)
    move_all("cold")
    assert set(Instance.objects.values_list("tier", flat=True)) == {"cold"}
    assert all(where(row) == ["cold"] for row in Instance.objects.all())
    assert_whole(raws)
    move_all("hot")
    assert all(where(row) == ["hot"] for row in Instance.objects.all())
    assert_whole(raws)
    assert TierMove.objects.filter(state=MoveState.DONE).count() == 2 * len(raws)


def test_the_cold_copy_is_smaller_and_frames_read_from_it_are_byte_identical(tmp_path: Path) -> None:
    store(tmp_path, count=1, frames=12)
    row = Instance.objects.get()
    hot_frames = [row.read_stored_ranges(ranges) for ranges in row.frames]
    move_all("cold")
    row.refresh_from_db()
    assert row.tier == "cold"
    assert get_storage("cold").stored_size(row.storage_key) < row.size
    assert [row.read_stored_ranges(ranges) for ranges in row.frames] == hot_frames


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_loses_nothing_and_a_restart_finishes_the_move(tmp_path: Path, step: str) -> None:
    raws = store(tmp_path, count=2)

    def crash(at: str, move: TierMove) -> None:
        if at == step:
            raise Crash(at)

    batch, _ = plan_moves(Instance.objects.all(), "cold")
    with pytest.raises(Crash):
        Mover(batch, fault=crash).run()
    # Killed: every instance is still readable where its row says, and its row names a tier holding it.
    assert_whole(raws)
    for row in Instance.objects.all():
        assert row.tier in where(row)
    Mover(batch).run()
    assert_whole(raws)
    assert all(where(row) == ["cold"] and row.tier == "cold" for row in Instance.objects.all())
    assert set(TierMove.objects.values_list("state", flat=True)) == {MoveState.DONE}


def test_a_hundred_crash_restart_cycles_hot_to_cold_to_hot_lose_nothing(tmp_path: Path) -> None:
    raws = store(tmp_path, count=4)
    before = dict(Instance.objects.values_list("sop_instance_uid", "sha256"))
    rng = random.Random(10)
    cycles = 0
    for target in ("cold", "hot", "cold", "hot"):
        batch, _ = plan_moves(Instance.objects.all(), target)
        while TierMove.objects.filter(batch=batch).exclude(state__in=[MoveState.DONE, MoveState.FAILED]).exists():
            cut = rng.choice(STEPS)
            chance = rng.random()

            def crash(at: str, move: TierMove, cut: str = cut, chance: float = chance) -> None:
                if at == cut and rng.random() < chance:
                    raise Crash(at)

            try:
                Mover(batch, fault=crash).run()
            except Crash:
                cycles += 1
            for row in Instance.objects.all():
                assert row.tier in where(row)  # never unreadable, at any cut
        assert set(Instance.objects.values_list("tier", flat=True)) == {target}
    while cycles < 100:  # more cycles on a fresh round trip until a hundred kills have landed
        target = "cold" if Instance.objects.filter(tier="hot").exists() else "hot"
        batch, _ = plan_moves(Instance.objects.all(), target)
        cut = rng.choice(STEPS)
        try:
            Mover(batch, fault=lambda at, move, cut=cut: (_ for _ in ()).throw(Crash(at)) if at == cut else None).run()
        except Crash:
            cycles += 1
        Mover(batch).run()
        assert all(where(row) == [target] for row in Instance.objects.all())
    assert cycles >= 100
    assert dict(Instance.objects.values_list("sop_instance_uid", "sha256")) == before
    assert_whole(raws)
    assert not TierMove.objects.filter(state=MoveState.FAILED).exists()


def test_a_copy_that_does_not_verify_is_made_again_then_given_up_with_the_source_kept(tmp_path: Path) -> None:
    raws = store(tmp_path, count=1)
    cold = get_storage("cold")

    def damage(at: str, move: TierMove) -> None:
        if at == "copied":
            path = cold.path(move.source_key)  # type: ignore[attr-defined]
            data = bytearray(path.read_bytes())
            data[100] ^= 0xFF
            path.write_bytes(bytes(data))

    batch = move_all("cold", fault=damage)
    move = TierMove.objects.get(batch=batch)
    assert move.state == MoveState.FAILED and move.attempts == MAX_ATTEMPTS - 1
    row = Instance.objects.get()
    assert row.tier == "hot" and where(row) == ["hot"]
    assert_whole(raws)
    assert AuditEvent.objects.filter(action="tier-move", outcome="failure").exists()


def test_a_source_that_no_longer_matches_its_sha256_is_not_moved(tmp_path: Path) -> None:
    store(tmp_path, count=1)
    row = Instance.objects.get()
    path = get_storage("hot").path(row.storage_key)  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    batch = move_all("cold")
    move = TierMove.objects.get(batch=batch)
    assert move.state == MoveState.FAILED and "SHA-256" in move.error
    assert where(Instance.objects.get()) == ["hot"]


def test_an_unreachable_target_pauses_the_moves_and_they_finish_once_it_is_back(tmp_path: Path, settings: Any) -> None:
    raws = store(tmp_path, count=2)
    warm_root = tmp_path / "warm"
    warm_root.mkdir()
    settings.PACS_TIERS = {"warm": {"backend": "filesystem", "root": str(warm_root)}}
    registry.forget()
    batch, planned = plan_moves(Instance.objects.all(), "warm")
    assert planned == 2
    warm_root.rename(tmp_path / "unplugged")  # the disk goes away
    report = Mover(batch).run()
    assert report.moved == 0 and report.paused and report.paused[0].startswith("warm:")
    assert set(TierMove.objects.values_list("state", flat=True)) == {MoveState.PENDING}
    assert_whole(raws)
    (tmp_path / "unplugged").rename(warm_root)
    TierMove.objects.update(lease_until=None)  # the back-off is over
    assert Mover(batch).run().moved == 2
    assert set(Instance.objects.values_list("tier", flat=True)) == {"warm"}
    assert_whole(raws)


def test_a_move_to_an_unknown_tier_is_refused_before_anything_is_planned(tmp_path: Path) -> None:
    store(tmp_path, count=1)
    with pytest.raises(registry.UnknownTier):
        plan_moves(Instance.objects.all(), "glacier")
    assert not TierMove.objects.exists()


def test_an_instance_moves_once_at_a_time(tmp_path: Path) -> None:
    store(tmp_path, count=2)
    assert plan_moves(Instance.objects.all(), "cold")[1] == 2
    assert plan_moves(Instance.objects.all(), "cold")[1] == 0  # already moving
    Mover().run()
    assert plan_moves(Instance.objects.all(), "cold")[1] == 0  # already there


def test_the_source_stays_through_the_grace_period_for_reads_already_under_way(tmp_path: Path) -> None:
    raws = store(tmp_path, count=1)
    batch, _ = plan_moves(Instance.objects.all(), "cold")
    Mover(batch, grace=3600).run()
    row = Instance.objects.get()
    assert row.tier == "cold" and where(row) == ["hot", "cold"]
    assert TierMove.objects.get().state == MoveState.SWITCHED
    Mover(batch, grace=0).run()
    assert where(Instance.objects.get()) == ["cold"]
    assert_whole(raws)


def test_a_row_read_before_the_switch_still_reads_after_the_source_is_gone(tmp_path: Path) -> None:
    raws = store(tmp_path, count=1)
    stale = Instance.objects.get()  # a read looked the row up...
    move_all("cold")  # ...the move finished, source deleted, before it opened the object
    with stale.open_stored() as fh:
        assert fh.read() == raws[0]
    assert stale.tier == "cold"


def test_moves_are_throttled_to_the_configured_bytes_per_second(tmp_path: Path, settings: Any) -> None:
    store(tmp_path, count=3, frames=8)
    total = sum(Instance.objects.values_list("size", flat=True))
    settings.PACS_TIER_MOVE_BYTES_PER_SECOND = total  # a second for all of it: the last object waits for the first two
    started = time.monotonic()
    move_all("cold")
    assert time.monotonic() - started >= 0.6


def test_the_task_runs_the_moves_of_a_batch(tmp_path: Path) -> None:
    raws = store(tmp_path, count=2)
    batch, _ = plan_moves(Instance.objects.all(), "cold")
    result = run_moves.call(batch)
    assert result["moved"] == 2 and result["deleted"] == 2 and result["failed"] == 0
    assert_whole(raws)


@pytest.mark.django_db(transaction=True)
def test_reads_during_moves_back_and_forth_always_succeed(tmp_path: Path, settings: Any) -> None:
    settings.PACS_TIER_MOVE_CONCURRENCY = 2
    raws = store(tmp_path, count=4, frames=4)
    expected = {row.pk: [row.read_stored_ranges(r) for r in row.frames] for row in Instance.objects.all()}
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        from django.db import connection

        try:
            while not stop.is_set():
                for row in Instance.objects.all():
                    for index, ranges in enumerate(row.frames):
                        assert row.read_stored_ranges(ranges) == expected[row.pk][index]
                        reads[0] += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for target in ("cold", "hot", "cold", "hot", "cold"):
            move_all(target)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert reads[0] > 0
    assert_whole(raws)


@pytest.mark.parametrize("cut", ["copied", "switched-in-grace"])
def test_deleting_a_study_mid_move_removes_both_copies_so_sweep_cannot_bring_it_back(tmp_path: Path, cut: str) -> None:
    from datetime import timedelta

    from archive.ingest.delete import remove_study
    from archive.ingest.sweep import sweep_orphans
    from archive.models import Study

    store(tmp_path, count=2)
    batch, _ = plan_moves(Instance.objects.all(), "cold")
    if cut == "copied":
        with pytest.raises(Crash):
            Mover(batch, fault=lambda at, move: (_ for _ in ()).throw(Crash(at)) if at == "verify" else None).run()
    else:
        Mover(batch, grace=3600).run()
    assert all(where(row) == ["hot", "cold"] for row in Instance.objects.all())
    with django_capture_on_commit():
        assert remove_study(Study.objects.get()) == 2
    for tier in ("hot", "cold"):
        assert list(get_storage(tier).keys()) == []
        sweep_orphans(tier, min_age=timedelta(0))
    assert not Instance.objects.exists()


def django_capture_on_commit() -> Any:
    from django.test import TestCase

    return TestCase.captureOnCommitCallbacks(execute=True)
