"""Duplicates and conflicts on the one store path: against the index, and within one request.

The same data set under other File Meta Information is a duplicate wherever
the earlier copy is: already indexed, or earlier in the same request.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import pydicom
import pytest

from archive.dicom.synthetic import StudySpec, make_instance
from archive.ingest.duplicates import data_set_digest
from archive.ingest.store import Outcome, StoreResult, store_instances
from archive.models import Instance
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file

pytestmark = pytest.mark.django_db


def under_other_file_meta(raw: bytes) -> bytes:
    """The same data set as ``raw`` under the File Meta Information another gateway writes."""
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.file_meta.ImplementationVersionName = "OTHER_GATEWAY"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert out.getvalue() != raw
    return out.getvalue()


def store(tmp_path: Path, parts: list[bytes]) -> list[StoreResult]:
    items = []
    for raw in parts:
        path = tmp_path / f"{uuid.uuid4().hex}.dcm"
        path.write_bytes(raw)
        items.append(stage_file(get_storage("hot"), path))
    audited: list[StoreResult] = []
    results = store_instances(items, audit=audited.extend)
    assert sorted(map(id, audited)) == sorted(map(id, results))  # each result audited exactly once
    return results


def test_a_repeat_of_the_same_data_set_under_other_file_meta_in_one_request_is_a_duplicate(tmp_path: Path) -> None:
    first = make_instance(StudySpec(), sop_uid="2.25.901")
    results = store(tmp_path, [first, under_other_file_meta(first)])
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.DUPLICATE]
    (row,) = Instance.objects.all()
    assert row.sha256 == hashlib.sha256(first).hexdigest()
    assert list(get_storage("hot").keys()) == [row.storage_key]


def test_a_repeat_with_another_data_set_in_one_request_is_a_conflict(tmp_path: Path) -> None:
    spec = StudySpec()
    first = make_instance(spec, sop_uid="2.25.902")
    other = make_instance(spec, sop_uid="2.25.902", extra={"SeriesDescription": "OTHER"})
    results = store(tmp_path, [first, other])
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.CONFLICT]
    assert Instance.objects.get().sha256 == hashlib.sha256(first).hexdigest()


def test_the_same_data_set_under_other_file_meta_is_a_duplicate_of_the_indexed_copy(tmp_path: Path) -> None:
    first = make_instance(StudySpec(), sop_uid="2.25.903")
    assert [r.outcome for r in store(tmp_path, [first])] == [Outcome.STORED]
    results = store(tmp_path, [under_other_file_meta(first), first])
    assert [r.outcome for r in results] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert Instance.objects.count() == 1


def test_the_data_set_digest_skips_the_file_meta_and_needs_its_group_length() -> None:
    raw = make_instance(StudySpec())
    assert data_set_digest(io.BytesIO(raw)) == data_set_digest(io.BytesIO(under_other_file_meta(raw)))
    assert data_set_digest(io.BytesIO(raw[:128] + b"DICM" + raw[144:])) is None
    assert data_set_digest(io.BytesIO(b"")) is None


def with_group_length(raw: bytes, length: int, preamble: bytes = b"\x00" * 128) -> bytes:
    """``raw`` with its (0002,0000) File Meta Information Group Length set to ``length`` and another preamble."""
    assert raw[128:136] == b"DICM\x02\x00\x00\x00"
    return preamble + raw[128:140] + length.to_bytes(4, "little") + raw[144:]


@pytest.mark.parametrize("length", [0xFFFFFFF0, 1 << 20, 4])
def test_another_data_set_under_a_false_group_length_is_a_conflict_never_a_duplicate(
    tmp_path: Path, length: int
) -> None:
    spec = StudySpec()
    first = with_group_length(make_instance(spec, sop_uid="2.25.904"), length)
    other = make_instance(spec, sop_uid="2.25.904", extra={"PatientName": "SOMEONE^ELSE"})
    other = with_group_length(other, length, preamble=b"\x01" * 128)
    assert [r.outcome for r in store(tmp_path, [first, other])][1] is not Outcome.DUPLICATE
    later = with_group_length(make_instance(spec, sop_uid="2.25.904", extra={"SeriesDescription": "X"}), length)
    assert [r.outcome for r in store(tmp_path, [later])] != [Outcome.DUPLICATE]
    assert Instance.objects.filter(sop_instance_uid="2.25.904").count() <= 1


def test_the_data_set_digest_finds_the_file_meta_end_by_its_elements_not_by_the_group_length() -> None:
    raw = make_instance(StudySpec())
    assert data_set_digest(io.BytesIO(with_group_length(raw, 0xFFFFFFF0))) is None
    assert data_set_digest(io.BytesIO(with_group_length(raw, 4))) is None
    truncated_meta = raw[:150]
    assert data_set_digest(io.BytesIO(truncated_meta)) is None
