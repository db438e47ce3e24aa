"""The zstd cold tier: lossless, seekable (ranged reads decompress only their blocks), standard, and damage-evident."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
import pytest
import zstandard

from archive.storage.keys import object_key
from archive.storage.staging import stage_file
from archive.storage.zstd import BLOCK, CorruptObject, SeekTable, ZstdFileSystemStorage


def noisy(size: int, seed: int = 1) -> bytes:
    """Bytes like CT pixel data: 12-bit values with noise (a flat phantom would flatter zstd)."""
    rng = np.random.default_rng(seed)
    return (1000 + rng.normal(0, 40, size // 2)).clip(0, 4095).astype("<u2").tobytes()


def put(storage: ZstdFileSystemStorage, tmp_path: Path, data: bytes, sop: str = "1.2.3.4") -> str:
    source = tmp_path / "source"
    source.write_bytes(data)
    staged = stage_file(storage, source)
    key = object_key("1.2", "1.2.3", sop, staged.sha256)
    storage.put(key, staged)
    staged.discard()
    return key


@pytest.fixture
def cold(tmp_path: Path) -> ZstdFileSystemStorage:
    return ZstdFileSystemStorage(tmp_path / "cold", fsync=False)


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345])
def test_an_object_comes_back_byte_identical_whatever_its_size(
    cold: ZstdFileSystemStorage, tmp_path: Path, size: int
) -> None:
    data = noisy(size + size % 2)[:size]
    key = put(cold, tmp_path, data)
    with cold.open(key) as fh:
        assert fh.read() == data
    with cold.local_path(key) as path:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert list(cold.keys()) == [key]


def test_random_ranged_reads_match_the_original_bytes(cold: ZstdFileSystemStorage, tmp_path: Path) -> None:
    data = noisy(5 * BLOCK + 777)
    key = put(cold, tmp_path, data)
    rng = random.Random(7)
    for _ in range(300):
        ranges = []
        for _ in range(rng.randint(1, 4)):
            offset = rng.randrange(len(data))
            ranges.append([offset, rng.randint(1, min(len(data) - offset, 2 * BLOCK))])
        assert cold.read_ranges(key, ranges) == b"".join(data[o : o + n] for o, n in ranges)
    with cold.open(key) as fh:  # seeks back and forth, as pydicom and the frame reader do
        fh.seek(-10, io.SEEK_END)
        assert fh.read() == data[-10:]
        fh.seek(BLOCK - 3)
        assert fh.read(6) == data[BLOCK - 3 : BLOCK + 3]


def test_a_frame_read_decompresses_only_the_blocks_that_hold_it(cold: ZstdFileSystemStorage, tmp_path: Path) -> None:
    data = noisy(8 * BLOCK)
    key = put(cold, tmp_path, data)
    with open(cold.path(key), "rb") as fh:
        table = SeekTable.read(fh)
    assert len(table.compressed) == 9  # eight blocks, each a zstd frame of its own
    loads: list[int] = []
    reader = cold.open(key)
    raw = reader.raw  # type: ignore[attr-defined]
    original = raw._load
    raw._load = lambda index: (loads.append(index), original(index))[1]
    raw.seek(5 * BLOCK + 100)
    buffer = bytearray(1000)
    raw.readinto(buffer)
    assert loads == [5] and bytes(buffer) == data[5 * BLOCK + 100 : 5 * BLOCK + 1100]
    reader.close()


def test_a_cold_object_is_a_standard_zstd_file_that_any_decoder_reads(
    cold: ZstdFileSystemStorage, tmp_path: Path
) -> None:
    data = noisy(3 * BLOCK + 5)
    key = put(cold, tmp_path, data)
    with open(cold.path(key), "rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        assert reader.read() == data  # the seek table is a skippable frame: decoders pass over it


def test_noisy_ct_like_data_takes_less_room_on_cold(cold: ZstdFileSystemStorage, tmp_path: Path) -> None:
    data = noisy(4 * BLOCK)
    key = put(cold, tmp_path, data)
    assert cold.stored_size(key) < 0.8 * len(data)


def test_a_damaged_block_is_an_error_never_wrong_bytes(cold: ZstdFileSystemStorage, tmp_path: Path) -> None:
    data = noisy(3 * BLOCK)
    key = put(cold, tmp_path, data)
    path = cold.path(key)
    damaged = bytearray(path.read_bytes())
    damaged[BLOCK // 2] ^= 0x55  # inside the first block's compressed bytes
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptObject):
        cold.read_ranges(key, [[10, 100]])
    assert cold.read_ranges(key, [[2 * BLOCK, 100]]) == data[2 * BLOCK : 2 * BLOCK + 100]  # other blocks still read


def test_a_truncated_object_is_refused_when_opened(cold: ZstdFileSystemStorage, tmp_path: Path) -> None:
    key = put(cold, tmp_path, noisy(BLOCK))
    path = cold.path(key)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CorruptObject):
        cold.open(key)


def test_putting_an_object_twice_keeps_the_first(cold: ZstdFileSystemStorage, tmp_path: Path) -> None:
    data = noisy(1000)
    key = put(cold, tmp_path, data)
    before = cold.path(key).stat().st_ino
    assert put(cold, tmp_path, data) == key
    assert cold.path(key).stat().st_ino == before
    assert sorted(p.name for p in cold.staging_dir.iterdir()) == []
