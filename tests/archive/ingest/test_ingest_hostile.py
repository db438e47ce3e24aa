"""Hostile input on the one ingest path: every bad part is refused on its own, nothing is left half-stored.

Values the index cannot hold, objects cut short, parse failures of every
kind and deflate bombs are answered per part (0xC000 "Cannot understand"),
audited, and leave neither an index row nor an object behind; the good parts
of the same request are kept. Errors of the database itself (or of storage)
fail the uncommitted instances as "unavailable", by name, after every placed
object without a row has been removed.
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.db import OperationalError
from django.test import Client
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from archive.dicom.part10 import ParsedInstance, parse_instance
from archive.dicom.synthetic import StudySpec, make_instance
from archive.ingest import duplicates
from archive.ingest import store as ingest
from archive.ingest.duplicates import Verdict
from archive.ingest.store import Outcome, store_instance, store_instances
from archive.models import Instance, Patient, Series, Study
from archive.storage.registry import get_storage
from archive.storage.staging import stage_file
from audit.models import AuditEvent
from tests.archive.dicomweb.test_stow import sops
from tests.conftest import stow

pytestmark = pytest.mark.django_db


def variant(fn: Callable[[Dataset], Any], size: int = 16, spec: StudySpec | None = None) -> bytes:
    """A synthetic instance changed by ``fn`` and written again as a Part 10 file."""
    ds = pydicom.dcmread(io.BytesIO(make_instance(spec or StudySpec(), size=size)))
    fn(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def respelled(raw: bytes, tag: int, vr: str, old: bytes, new: bytes) -> bytes:
    """``raw`` with the value of one Explicit VR element replaced byte for byte (values pydicom refuses to write)."""
    header = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode())
    element = header + struct.pack("<H", len(old)) + old
    assert raw.count(element) == 1
    return raw.replace(element, header + struct.pack("<H", len(new)) + new)


def nested_sequences(depth: int) -> bytes:
    """``depth`` sequences of undefined length, each in the only item of the one before, as a last element."""
    sequence = struct.pack("<HH2sHI", 0x7FE1, 0x1010, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (sequence + item) * depth + ends * depth


def sop_of(raw: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID)


def object_bytes(row: Instance) -> bytes:
    with get_storage(row.tier).open(row.storage_key) as fh:
        return fh.read()


def stored_objects() -> list[str]:
    return list(get_storage("hot").keys())


def store_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="store").order_by("id"))


def assert_only_good_parts_kept(response: Any, good: list[bytes], bad: list[bytes], identified: bool = True) -> None:
    """The good parts are stored and audited, each bad one refused with 0xC000 and gone without a trace.

    ``identified``: the refusals name the bad instances (their UIDs were read before they were refused).
    """
    ok, failed = sops(response)
    assert sorted(ok) == sorted(sop_of(g) for g in good)
    assert sorted(failed) == sorted((sop_of(b) if identified else "", 0xC000) for b in bad)
    assert response.status_code == (202 if good else 409)
    assert Instance.objects.count() == len(good) == len(stored_objects())
    assert not list(get_storage("hot").staging_dir.iterdir())
    events = store_events()
    assert sum(e.detail["stored"] for e in events) == len(good)
    assert sum(e.detail["failed"] for e in events) == len(bad)


def deflated(private_bytes: int, spec: StudySpec | None = None) -> bytes:
    """A Deflated Explicit VR Little Endian instance holding a zero-filled private OB value of ``private_bytes``."""

    def add_private(ds: Dataset) -> None:
        block = ds.private_block(0x0009, "HOSTILE TEST", create=True)
        block.add_new(0x10, "OB", bytes(private_bytes))
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    return variant(add_private, spec=spec)


# --- 1. Values the index cannot hold ---


@pytest.mark.parametrize("value", ["9" * 30, "3000000000", "-2147483649"])
def test_an_instance_or_series_number_beyond_32_bits_is_stored_but_not_indexed(
    upload_client: Client, value: str
) -> None:
    raw = make_instance(StudySpec(), extra={"InstanceNumber": value, "SeriesNumber": value})
    response = stow(upload_client, [raw])
    assert response.status_code == 200, response.content
    row = Instance.objects.get()
    assert row.instance_number is None and Series.objects.get().series_number is None
    assert json.loads(row.metadata)["00200013"]["Value"] == [int(value)]  # the DICOM JSON keeps the value


def test_the_upper_cased_search_names_stay_within_their_columns(upload_client: Client) -> None:
    spec = StudySpec(patient_name="ß" * 600, referring="ﬃ" * 400)
    response = stow(upload_client, [make_instance(spec)])
    assert response.status_code == 200, response.content
    patient, study = Patient.objects.get(), Study.objects.get()
    assert patient.patient_name == "ß" * 600
    assert patient.patient_name_search == "SS" * 512
    assert study.referring_physician_search == ("FFI" * 400)[:1024]


def test_nul_characters_never_reach_index_columns_and_the_object_keeps_its_bytes(upload_client: Client) -> None:
    def with_nul(ds: Dataset) -> None:
        ds.PatientID, ds.StudyDescription = "A\x00B", "CT\x00 CHEST"

    raw = variant(with_nul)
    response = stow(upload_client, [raw])
    assert response.status_code == 200, response.content
    study = Study.objects.select_related("patient").get()
    assert (study.patient.patient_id, study.study_description) == ("AB", "CT CHEST")
    attributes = json.dumps([study.attributes, Series.objects.get().attributes])
    assert "\\u0000" not in attributes and "AB" in attributes
    row = Instance.objects.get()
    assert object_bytes(row) == raw


def test_non_finite_numbers_become_null_so_the_stored_json_is_strict(upload_client: Client) -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in stored JSON")

    weight = variant(lambda ds: ds.add_new(0x00101030, "FD", float("nan")))
    size = respelled(variant(lambda ds: setattr(ds, "PatientSize", "1.5")), 0x00101020, "DS", b"1.5 ", b"inf ")
    # "1e400" reads as a decimal, so it takes the fast encoder, and is infinite as a float.
    huge = respelled(variant(lambda ds: setattr(ds, "PatientSize", "1.5")), 0x00101020, "DS", b"1.5 ", b"1e400 ")
    response = stow(upload_client, [weight, size, huge])
    assert response.status_code == 200, response.content
    for row in Instance.objects.all():
        json.loads(row.metadata, parse_constant=refuse)
    for study in Study.objects.all():
        json.loads(json.dumps(study.attributes), parse_constant=refuse)
    metadata = json.loads(Instance.objects.get(sop_instance_uid=sop_of(weight)).metadata)
    assert metadata["00101030"] == {"vr": "FD", "Value": [None]}
    huge_metadata = json.loads(Instance.objects.get(sop_instance_uid=sop_of(huge)).metadata)
    assert huge_metadata["00101020"] == {"vr": "DS", "Value": [None]}


def frames_of(value: bytes) -> bytes:
    """A single-frame instance whose (0028,0008) Number of Frames reads ``value``."""
    return respelled(variant(lambda ds: setattr(ds, "NumberOfFrames", "1")), 0x00280008, "IS", b"1 ", value)


PIXEL_ATTRIBUTES_OUT_OF_RANGE = {
    "rows as UL 4e9": lambda: variant(lambda ds: ds.add_new(0x00280010, "UL", 4_000_000_000)),
    "rows as SL -5": lambda: variant(lambda ds: ds.add_new(0x00280010, "SL", -5)),
    "rows as FD inf": lambda: variant(lambda ds: ds.add_new(0x00280010, "FD", float("inf"))),
    "columns not a number": lambda: variant(lambda ds: ds.add_new(0x00280011, "CS", "WIDE")),
    "frames -1": lambda: variant(lambda ds: setattr(ds, "NumberOfFrames", "-1")),
    "frames inf": lambda: frames_of(b"inf "),
    "frames 1e400": lambda: frames_of(b"1e400 "),
    "frames 3e9": lambda: frames_of(b"3000000000"),
    "bits allocated 4096": lambda: variant(lambda ds: setattr(ds, "BitsAllocated", 4096)),
}


@pytest.mark.parametrize("make_bad", PIXEL_ATTRIBUTES_OUT_OF_RANGE.values(), ids=PIXEL_ATTRIBUTES_OUT_OF_RANGE)
def test_a_pixel_attribute_out_of_range_refuses_that_part_only(
    upload_client: Client, make_bad: Callable[[], bytes]
) -> None:
    good, bad = make_instance(StudySpec()), make_bad()
    assert_only_good_parts_kept(stow(upload_client, [good, bad]), [good], [bad])


# --- 1(b), (c). The index refuses a value: only that instance is refused ---


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Callable[[ParsedInstance], None]], None]:
    """Makes the parse of one SOP Instance UID yield a value the index refuses (as a parse bug would)."""

    def poison(sop: str, change: Callable[[ParsedInstance], None]) -> None:
        def parse(path: Any, **options: Any) -> ParsedInstance:
            parsed = parse_instance(path, **options)
            if parsed.sop_instance_uid == sop:
                change(parsed)
            return parsed

        monkeypatch.setattr(ingest, "parse_instance", parse)

    return poison


def beyond_64_bits(parsed: ParsedInstance) -> None:
    parsed.index = replace(parsed.index, instance_number=10**30)  # SQLite: OverflowError; PostgreSQL: DataError


def negative_frames(parsed: ParsedInstance) -> None:
    parsed.number_of_frames = -1  # a CHECK constraint: an IntegrityError that is not a duplicate


@pytest.mark.parametrize("change", [beyond_64_bits, negative_frames])
@pytest.mark.parametrize("count", [1, 3, 51], ids=["alone", "among-three", "across-batches"])
def test_a_value_the_index_refuses_refuses_only_its_instance(
    upload_client: Client, poisoned: Any, change: Callable[[ParsedInstance], None], count: int
) -> None:
    spec = StudySpec()
    parts = [make_instance(spec, instance_number=n + 1, size=8) for n in range(count)]
    bad = parts[count // 2]
    poisoned(sop_of(bad), change)
    response = stow(upload_client, parts)
    assert_only_good_parts_kept(response, [p for p in parts if p is not bad], [bad])
    if count > 1:
        assert Study.objects.get().number_of_instances == count - 1


def test_a_real_duplicate_at_the_index_is_still_a_conflict_or_a_duplicate(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = StudySpec()
    first = make_instance(spec, sop_uid="2.25.77")
    same, changed = first, make_instance(spec, sop_uid="2.25.77", extra={"SeriesDescription": "OTHER"})
    assert stow(upload_client, [first]).status_code == 200
    real = duplicates.stored_hashes
    calls: list[int] = []

    def racing(uids: list[str]) -> dict[str, str]:
        calls.append(1)
        return {} if len(calls) % 2 else real(uids)  # the first look misses what "another request" just indexed

    monkeypatch.setattr(duplicates, "stored_hashes", racing)
    assert sops(stow(upload_client, [changed]))[1] == [("2.25.77", 0x0111)]
    assert stow(upload_client, [same]).status_code == 200
    assert Instance.objects.count() == 1 and len(stored_objects()) == 1


def staged(tmp_path: Path, parts: list[bytes]) -> list[Any]:
    items = []
    for n, raw in enumerate(parts):
        path = tmp_path / f"part{n}.dcm"
        path.write_bytes(raw)
        items.append(stage_file(get_storage("hot"), path))
    return items


@pytest.mark.parametrize("count", [1, 3])
def test_a_database_failure_fails_the_instances_as_unavailable_by_name_and_leaves_no_object_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    def locked(*args: Any) -> int:
        raise OperationalError("database is locked")

    monkeypatch.setattr(ingest.IndexWriter, "add", locked)
    instances = [make_instance(StudySpec(), size=8) for _ in range(count)]
    results = store_instances(staged(tmp_path, instances))
    assert [r.outcome for r in results] == [Outcome.UNAVAILABLE] * count
    named = [str(pydicom.dcmread(io.BytesIO(i)).SOPInstanceUID) for i in instances]
    assert [r.sop_instance_uid for r in results] == named
    assert {r.detail for r in results} == {ingest.INDEX_UNAVAILABLE}
    assert stored_objects() == [] and not Instance.objects.exists()
    assert not list(get_storage("hot").staging_dir.iterdir())


def test_an_error_after_some_objects_are_placed_removes_them_but_keeps_an_identical_indexed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = StudySpec()
    kept = make_instance(spec)
    assert store_instance(staged(tmp_path, [kept])[0]).ok
    real_put = get_storage("hot").put
    puts: list[str] = []

    def failing_put(key: str, *args: Any, **kw: Any) -> None:
        puts.append(key)
        if len(puts) == 3:
            raise OSError("disk full")
        real_put(key, *args, **kw)

    monkeypatch.setattr(get_storage("hot"), "put", failing_put)
    # "kept" looks new: its key is shared
    monkeypatch.setattr(ingest, "classify_known", lambda arrivals: [(Verdict.NEW, None)] * len(arrivals))
    results = store_instances(staged(tmp_path, [kept, make_instance(spec), make_instance(spec)]))
    assert [r.outcome for r in results] == [Outcome.UNAVAILABLE] * 3
    assert {r.detail for r in results} == {ingest.STORAGE_UNAVAILABLE}
    (row,) = Instance.objects.all()
    assert stored_objects() == [row.storage_key]


# --- 2. Exceptions inside the parse ---


@pytest.mark.parametrize("keyword", ["PatientName", "ReferringPhysicianName"])
def test_a_long_name_of_another_vr_is_read_while_the_file_is_open(upload_client: Client, keyword: str) -> None:
    tag = int(pydicom.datadict.tag_for_keyword(keyword) or 0)
    raw = variant(lambda ds: ds.add_new(tag, "UT", "<script>" * 1000))
    response = stow(upload_client, [raw])
    assert response.status_code == 200, response.content
    study = Study.objects.select_related("patient").get()
    name = study.patient.patient_name if keyword == "PatientName" else study.referring_physician_name
    assert name == ("<script>" * 1000)[:1024]


def test_sequences_nested_too_deeply_refuse_that_part_only(upload_client: Client) -> None:
    good, bad = make_instance(StudySpec()), make_instance(StudySpec()) + nested_sequences(1000)
    assert_only_good_parts_kept(stow(upload_client, [good, bad]), [good], [bad], identified=False)


def test_sequences_nested_a_little_are_stored(upload_client: Client) -> None:
    assert stow(upload_client, [make_instance(StudySpec()) + nested_sequences(20)]).status_code == 200


# --- 3. Objects cut short ---


CUTS: dict[str, Callable[[bytes], int]] = {
    "inside short pixel data": lambda raw: len(raw) - 1000,
    "inside deferred pixel data": lambda raw: len(raw) - 1,
    "inside a text value": lambda raw: raw.index(b"CT CHEST") + 3,
    "inside the pixel data header": lambda raw: raw.rindex(b"\xe0\x7f\x10\x00OW") + 6,
}


@pytest.mark.parametrize("cut", CUTS.values(), ids=CUTS)
def test_an_object_cut_short_is_refused_and_nothing_is_stored(
    upload_client: Client, cut: Callable[[bytes], int]
) -> None:
    good = make_instance(StudySpec(), size=32)
    whole = make_instance(StudySpec(), size=32 if cut is not CUTS["inside deferred pixel data"] else 64)
    bad = whole[: cut(whole)]
    response = stow(upload_client, [good, bad])
    ok, failed = sops(response)
    assert ok == [sop_of(good)] and [reason for _, reason in failed] == [0xC000]
    assert Instance.objects.count() == 1 == len(stored_objects())


@pytest.mark.parametrize("padding", [b"\x00", b"\x00" * 7])
def test_zero_bytes_after_the_last_element_are_padding_not_a_cut(upload_client: Client, padding: bytes) -> None:
    raw = make_instance(StudySpec(), size=32) + padding
    response = stow(upload_client, [raw])
    assert response.status_code == 200, response.content
    (key,) = stored_objects()
    with get_storage("hot").open(key) as fh:
        assert fh.read() == raw


def test_a_truncated_object_alone_gets_a_clear_reason(tmp_path: Path) -> None:
    raw = make_instance(StudySpec(), size=32)
    result = store_instance(staged(tmp_path, [raw[:-1000]])[0])
    assert result.outcome is Outcome.INVALID
    assert "truncated" in result.detail and "(7FE0,0010)" in result.detail
    assert stored_objects() == []


# --- 4. Deflate bombs ---


def test_a_deflated_data_set_beyond_the_inflate_limit_is_refused(
    upload_client: Client, settings: Any, tmp_path: Path
) -> None:
    settings.PACS_INFLATE_MAX_BYTES = 1024 * 1024
    bomb = deflated(2 * 1024 * 1024)
    assert len(bomb) < 20_000
    good = make_instance(StudySpec())
    assert_only_good_parts_kept(stow(upload_client, [good, bomb]), [good], [bomb], identified=False)
    result = store_instance(staged(tmp_path, [bomb])[0])
    assert result.outcome is Outcome.INVALID and "inflates to more than 1048576 bytes" in result.detail


def test_a_deflated_data_set_within_the_limit_is_stored_as_sent(upload_client: Client, settings: Any) -> None:
    settings.PACS_INFLATE_MAX_BYTES = 4 * 1024 * 1024
    raw = deflated(2 * 1024 * 1024)
    assert stow(upload_client, [raw]).status_code == 200
    row = Instance.objects.get()
    assert row.transfer_syntax_uid == DeflatedExplicitVRLittleEndian and row.rows == 16
    assert object_bytes(row) == raw
    assert json.loads(row.metadata)["00100020"]["Value"] == ["PAT-0001"]


def test_a_deflated_data_set_is_inflated_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "deflated.dcm"
    path.write_bytes(deflated(64 * 1024 * 1024))
    tracemalloc.start()
    try:
        parsed = parse_instance(path, max_inflated=128 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.rows == 16
    assert peak < 8 * 1024 * 1024, f"parsing a 64 MiB deflated data set took {peak} bytes"
    assert not [p for p in tmp_path.iterdir() if p != path]  # the inflated copy is gone


def test_a_deflated_stream_cut_short_is_refused(upload_client: Client) -> None:
    raw = deflated(4096)
    meta_end = 144 + int.from_bytes(raw[140:144], "little")
    stream = zlib.decompressobj(-zlib.MAX_WBITS)
    assert stream.decompress(raw[meta_end:]) and stream.eof  # the whole stream is there ...
    cut = raw[: meta_end + (len(raw) - meta_end) // 2]  # ... and here only its first half
    assert_only_good_parts_kept(stow(upload_client, [cut]), [], [cut], identified=False)


def test_a_second_transfer_syntax_in_the_file_meta_does_not_hide_a_deflate_bomb(
    upload_client: Client, settings: Any, tmp_path: Path
) -> None:
    settings.PACS_INFLATE_MAX_BYTES = 1024 * 1024
    bomb = deflated(2 * 1024 * 1024)
    value = DeflatedExplicitVRLittleEndian.encode()
    element = b"\x02\x00\x10\x00UI" + struct.pack("<H", len(value)) + value
    assert bomb.count(element) == 1
    decoy = b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"  # Explicit VR Little Endian, read first
    hidden = bomb.replace(element, decoy + element)  # pydicom keeps the last (0002,0010)
    assert_only_good_parts_kept(stow(upload_client, [hidden]), [], [hidden], identified=False)
    result = store_instance(staged(tmp_path, [hidden])[0])
    assert "inflates to more than" in result.detail
