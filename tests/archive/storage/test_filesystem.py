"""FileSystemStorage: keys that cannot escape the root, and durable placement (and indexing) in the right order."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.store import Outcome, StoreResult, store_instances
from archive.models import Instance
from archive.storage import registry, staging
from archive.storage.base import StagedObject
from archive.storage.filesystem import FileSystemStorage
from archive.storage.keys import check_key, log_name, object_key
from archive.storage.staging import StagingWriter

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
DATA = b"DICM" * 5000


def key_for(data: bytes, sop: str = SOP) -> str:
    return object_key(STUDY, SERIES, sop, hashlib.sha256(data).hexdigest())


def staged(backend: FileSystemStorage, data: bytes, chunk: int = 4096) -> StagedObject:
    writer = StagingWriter(backend, max_bytes=len(data))
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    return writer.finish()


@pytest.fixture
def durable(tmp_path: Path) -> FileSystemStorage:
    """A tier that really fsyncs (the test suite's default storage does not)."""
    return FileSystemStorage(tmp_path / "tier", fsync=True)


@pytest.mark.parametrize(
    "key",
    [
        "../outside.0123456789abcdef.dcm",
        "/etc/passwd",
        "1.2/../../1.2.0123456789abcdef.dcm",
        "1.2/1.3/../1.4.0123456789abcdef.dcm",
        ".staging/1.2/1.3.0123456789abcdef.dcm",
        "1.2/1.3/1.4.0123456789ABCDEF.dcm",  # digests are lowercase
        "1.2/1.3/1.4.0123456789abcdef.dcm\n",
        "1.2/1.3/1.4.0123456789abcdef.dcm/..",
        "1.2//1.4.0123456789abcdef.dcm",
        "1.2/1.3/1.4.0123456789abcde.dcm",  # a digest prefix of 15 digits
        f"1.2/1.3/{'1' * 65}.0123456789abcdef.dcm",  # a UID over 64 characters
        "1.2/1.3/sub/1.4.0123456789abcdef.dcm",
        "",
    ],
)
def test_it_refuses_every_key_that_is_not_an_object_key(durable: FileSystemStorage, key: str) -> None:
    with pytest.raises(ValueError, match="not an object key"):
        durable.path(key)
    with pytest.raises(ValueError):
        durable.open(key)
    with pytest.raises(ValueError):
        durable.exists(key)


def test_it_resolves_an_object_key_to_a_file_two_levels_below_the_root(durable: FileSystemStorage) -> None:
    key = key_for(DATA)
    assert check_key(key) == key
    path = durable.path(key)
    assert path.parent.parent.parent == durable.root == durable.root.resolve()


def test_it_lists_only_files_named_like_objects(durable: FileSystemStorage) -> None:
    durable.put(key_for(DATA), staged(durable, DATA))
    stray = durable.root / STUDY / "notes.dcm"
    stray.write_bytes(b"not an object")
    (durable.root / STUDY / SERIES / "README").write_bytes(b"nor this")
    assert list(durable.keys()) == [key_for(DATA)]


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 20_000, 70_000])
@pytest.mark.parametrize("limit", [10_000, staging.HASH_LATER_MAX])
def test_the_digest_is_right_whether_computed_while_receiving_or_afterwards(
    durable: FileSystemStorage, monkeypatch: pytest.MonkeyPatch, size: int, limit: int
) -> None:
    monkeypatch.setattr(staging, "HASH_LATER_MAX", limit)
    data = os.urandom(size)
    item = staged(durable, data, chunk=3000)
    assert (item.sha256, item.size) == (hashlib.sha256(data).hexdigest(), size)
    assert item.path.read_bytes() == data
    item.discard()
    assert not item.path.exists()


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every fsync and link, in order, with the path it concerned."""
    events: list[tuple[str, str]] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def link(src: str | Path, dst: str | Path) -> None:
        real_link(src, dst)
        events.append(("link", str(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    yield events


def test_put_links_only_durable_bytes_then_makes_every_new_entry_durable(
    durable: FileSystemStorage, journal: list[tuple[str, str]]
) -> None:
    item = staged(durable, DATA)
    staging_file = str(item.path)
    key = key_for(DATA)
    durable.put(key, item)
    target = str(durable.path(key))
    linked = journal.index(("link", target))
    assert ("fsync", staging_file) in journal[:linked], "the bytes were linked before they were durable"
    synced_after = {path for event, path in journal[linked:] if event == "fsync"}
    # the object's entry, the new series directory's entry, the new study directory's entry
    assert synced_after == {str(durable.root / STUDY / SERIES), str(durable.root / STUDY), str(durable.root)}
    assert Path(target).read_bytes() == DATA


def test_every_object_makes_its_whole_folder_chain_durable_even_in_a_known_series(
    durable: FileSystemStorage, journal: list[tuple[str, str]]
) -> None:
    durable.put(key_for(DATA), staged(durable, DATA))
    journal.clear()
    other = DATA + b"x"
    durable.put(key_for(other, sop="1.2.3.4.6"), staged(durable, other))
    dirs = {path for event, path in journal if event == "fsync" and os.path.isdir(path)}
    assert dirs == {str(durable.root / STUDY / SERIES), str(durable.root / STUDY), str(durable.root)}


def test_folders_another_process_just_created_are_made_durable_by_whoever_uses_them(
    tmp_path: Path, journal: list[tuple[str, str]]
) -> None:
    """Process B created the study and series folders and has not fsynced them yet; A's object lands there."""
    process_a = FileSystemStorage(tmp_path / "objects")
    process_b = FileSystemStorage(tmp_path / "objects")
    process_b.put(key_for(DATA), staged(process_b, DATA), sync=False)
    journal.clear()
    other = DATA + b"a"
    key = key_for(other, sop="1.2.3.4.7")
    process_a.put(key, staged(process_a, other))
    linked = journal.index(("link", str(process_a.path(key))))
    after = {path for event, path in journal[linked:] if event == "fsync"}
    assert {str(process_a.root / STUDY / SERIES), str(process_a.root / STUDY), str(process_a.root)} <= after


class PartialWriter:
    """A file that takes at most ``most`` bytes per write, as a disk filling up or a signal can make it."""

    def __init__(self, most: int) -> None:
        self.most, self.data = most, bytearray()

    def write(self, data: Any) -> int:
        taken = bytes(data[: self.most])
        self.data += taken
        return len(taken)


def test_a_write_that_takes_only_part_of_the_bytes_is_continued_until_all_are_written() -> None:
    target = PartialWriter(most=1000)
    staging._write_all(target, memoryview(DATA * 30))  # type: ignore[arg-type]
    assert bytes(target.data) == DATA * 30


def test_a_write_that_takes_nothing_is_an_error() -> None:
    with pytest.raises(OSError, match="no more bytes"):
        staging._write_all(PartialWriter(most=0), DATA)  # type: ignore[arg-type]


def test_a_staging_file_shorter_than_what_was_written_is_refused_and_removed(durable: FileSystemStorage) -> None:
    writer = StagingWriter(durable, max_bytes=1 << 30)
    writer.write(DATA * 10)
    os.ftruncate(writer.fh.fileno(), len(DATA))  # the bytes the disk lost
    with pytest.raises(OSError, match="holds"):
        writer.finish()
    assert not writer.path.exists()


def test_directories_placed_without_sync_are_made_durable_by_sync(
    durable: FileSystemStorage, journal: list[tuple[str, str]]
) -> None:
    keys = [key_for(DATA), key_for(DATA + b"2", sop="1.2.3.4.6")]
    for key, data in zip(keys, [DATA, DATA + b"2"], strict=True):
        durable.put(key, staged(durable, data), sync=False)
    assert not [p for e, p in journal if e == "fsync" and os.path.isdir(p)]
    durable.sync(keys)
    dirs = {p for e, p in journal if e == "fsync" and os.path.isdir(p)}
    assert dirs == {str(durable.root / STUDY / SERIES), str(durable.root / STUDY), str(durable.root)}


def test_a_failed_fsync_fails_the_put_and_places_nothing(
    durable: FileSystemStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    item = staged(durable, DATA)
    key = key_for(DATA)
    with pytest.raises(OSError, match="Input/output"):
        durable.put(key, item)
    assert not durable.path(key).exists()
    item.discard()
    assert not item.path.exists()


@pytest.mark.django_db
def test_ingest_commits_rows_and_audit_only_after_every_entry_is_durable(
    settings: Any, journal: list[tuple[str, str]]
) -> None:
    settings.PACS_FSYNC = True
    registry.get_storage.cache_clear()
    hot = registry.get_storage("hot")
    assert isinstance(hot, FileSystemStorage)
    spec = StudySpec()
    raw = make_series(spec, "CT", count=2)
    seen_before_commit: list[set[str]] = []

    def audit(results: list[StoreResult]) -> None:  # the last statements before the commit
        seen_before_commit.append({path for event, path in journal if event == "fsync"})

    results = store_instances([staged(hot, data) for data in raw], audit=audit)
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.STORED]
    (synced,) = seen_before_commit
    rows = Instance.objects.order_by("id")
    for row in rows:
        path = hot.path(row.storage_key)
        assert path.read_bytes() in raw
        assert {str(path.parent), str(path.parent.parent), str(hot.root)} <= synced


def test_a_log_names_an_object_by_its_hash_suffix_never_by_its_uids() -> None:
    key = object_key("1.2.3", "1.2.3.4", "1.2.3.4.5", "ab" * 32)
    assert log_name(key) == "*.abababababababab.dcm"
    assert "1.2.3" not in log_name(key)
    assert log_name("../../etc/passwd") == "an object with a malformed key"
