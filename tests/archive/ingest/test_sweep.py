"""Sweep: an object without an index row is indexed (and audited as recovered), never deleted; junk goes."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.reindex import wipe_index
from archive.ingest.store import Outcome, store_instances
from archive.ingest.sweep import sweep_orphans
from archive.models import Instance
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def store(data: bytes) -> str:
    """Store ``data`` through ingest; its key."""
    writer = StagingWriter(get_storage("hot"), max_bytes=len(data))
    writer.write(data)
    [result] = store_instances([writer.finish()])
    assert result.outcome is Outcome.STORED
    return str(Instance.objects.get(sop_instance_uid=result.sop_instance_uid).storage_key)


def age(path: Path, seconds: float = 7200) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_sweep_indexes_an_acknowledged_object_whose_row_was_lost_instead_of_deleting_it() -> None:
    data = make_series(StudySpec(), "CT", count=1)[0]
    key = store(data)
    wipe_index()  # the commit of its row did not survive (a power cut on an unsynced database)
    hot = get_storage("hot")
    age(hot.path(key))
    report = sweep_orphans("hot")
    assert (report.recovered, report.removed, report.kept) == (1, 0, [])
    assert hot.path(key).read_bytes() == data
    row = Instance.objects.get(storage_key=key)
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    record = AuditEvent.objects.filter(action="store", study_instance_uid=row.series.study.study_instance_uid).last()
    assert record is not None
    assert record.actor == "sweep" and record.detail["via"] == "sweep" and record.detail["stored"] == 1


def test_sweep_leaves_an_object_without_a_row_alone_within_the_grace_period() -> None:
    key = store(make_series(StudySpec(), "CT", count=1)[0])
    wipe_index()
    report = sweep_orphans("hot", min_age=timedelta(hours=1))
    assert (report.recovered, report.removed) == (0, 0)
    assert get_storage("hot").exists(key) and not Instance.objects.exists()


def test_sweep_removes_an_old_object_whose_bytes_are_not_what_its_key_names() -> None:
    hot = get_storage("hot")
    data = make_series(StudySpec(), "CT", count=1)[0]
    key = store(data)
    wipe_index()
    hot.path(key).unlink()
    hot.path(key).write_bytes(data[:-10])  # a damaged copy under the good object's key
    age(hot.path(key))
    report = sweep_orphans("hot")
    assert (report.recovered, report.removed) == (0, 1)
    assert not hot.exists(key) and not Instance.objects.exists()


def test_sweep_keeps_an_unreadable_object_whose_bytes_match_its_key(isolated_storage: Path) -> None:
    data = b"not a DICOM file, but named after its own hash"
    key = f"1.2.3/1.2.3.4/1.2.3.4.5.{hashlib.sha256(data).hexdigest()[:16]}.dcm"
    path = isolated_storage / "hot" / key
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    age(path)
    report = sweep_orphans("hot")
    assert (report.recovered, report.removed, len(report.kept)) == (0, 0, 1)
    assert path.read_bytes() == data


def test_sweep_removes_stale_staging_files_and_keeps_fresh_ones() -> None:
    hot = get_storage("hot")
    stale, fresh = hot.staging_dir / "old.part", hot.staging_dir / "new.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    age(stale)
    assert sweep_orphans("hot").removed == 1
    assert not stale.exists() and fresh.exists()
