"""A cold tier as plain files compressed with zstd, in the seekable format, so frames stay ranged reads.

Each object is kept as ``<root>/<key>.zst``: a sequence of independent zstd
frames, each holding :data:`BLOCK` bytes of the Part 10 file (the last one
less) and its own content checksum, followed by a seek table in a zstd
*skippable* frame, exactly as the zstd project's seekable format specifies
(``contrib/seekable_format/zstd_seekable_compression_format.md``). So:

- it is a standard zstd file: ``zstd -d < object.dcm.zst`` gives back the
  Part 10 file byte for byte (decoders skip the seek table); no proprietary
  wrapper, ever;
- a ranged read (a frame of an image) decompresses only the blocks that
  hold the range: :class:`SeekableZstdReader` finds them in the seek table;
- a corrupted block fails its zstd content checksum when it is read, so a
  damaged cold object raises :class:`OSError` instead of being served. The
  SHA-256 of the whole object is checked where the whole object is read
  anyway: by the mover before the index points to a copy, and by ``manage.py
  tiers verify`` (a frame read cannot hash the object it is a part of).

Writes are those of :class:`~archive.storage.filesystem.FileSystemStorage`:
compressed into a staging file, fsynced, hard-linked into place, directory
fsynced; an existing object is never replaced.
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from archive.storage.base import CHUNK, StagedObject, Storage, fsync_then_close
from archive.storage.filesystem import FileSystemStorage
from archive.storage.keys import check_key, is_object_key, log_name

#: Bytes of the Part 10 file per zstd frame: a frame read decompresses at most two blocks more than it needs.
BLOCK = 256 * 1024
SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
FOOTER = struct.Struct("<IBI")  # Number_Of_Frames, Seek_Table_Descriptor, Seekable_Magic_Number
ENTRY = struct.Struct("<II")  # Compressed_Size, Decompressed_Size (no per-entry checksum: frames carry theirs)
SUFFIX = ".zst"


class CorruptObject(OSError):
    """A stored object is not what it should be (bad seek table, a block that fails its checksum)."""


def compress_file(source: BinaryIO, target: BinaryIO, level: int = 3, block: int = BLOCK) -> int:
    """Write ``source`` to ``target`` as seekable zstd; return the compressed size."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    entries = []
    written = 0
    while data := source.read(block):
        frame = compressor.compress(data)
        target.write(frame)
        entries.append(ENTRY.pack(len(frame), len(data)))
        written += len(frame)
    table = b"".join(entries) + FOOTER.pack(len(entries), 0, SEEKABLE_MAGIC)
    target.write(struct.pack("<II", SKIPPABLE_MAGIC, len(table)) + table)
    return written + 8 + len(table)


class SeekTable:
    """Where each block starts, compressed and decompressed, from an object's seek table."""

    def __init__(self, compressed: list[int], decompressed: list[int]) -> None:
        self.compressed = compressed  # start offsets, one more than blocks (the end)
        self.decompressed = decompressed

    @property
    def size(self) -> int:
        return self.decompressed[-1]

    @classmethod
    def read(cls, fh: BinaryIO) -> SeekTable:
        end = fh.seek(0, io.SEEK_END)
        if end < FOOTER.size + 8:
            raise CorruptObject("too short to be a seekable zstd object")
        fh.seek(end - FOOTER.size)
        count, descriptor, magic = FOOTER.unpack(fh.read(FOOTER.size))
        entry_size = ENTRY.size + (4 if descriptor & 0x80 else 0)
        table_size = count * entry_size + FOOTER.size
        if magic != SEEKABLE_MAGIC or descriptor & 0x7C or table_size + 8 > end:
            raise CorruptObject("no seek table at the end of the object")
        fh.seek(end - table_size - 8)
        skippable, frame_size = struct.unpack("<II", fh.read(8))
        if skippable != SKIPPABLE_MAGIC or frame_size != table_size:
            raise CorruptObject("the seek table's frame header is damaged")
        raw = fh.read(count * entry_size)
        compressed, decompressed = [0], [0]
        for i in range(count):
            c_size, d_size = ENTRY.unpack_from(raw, i * entry_size)
            compressed.append(compressed[-1] + c_size)
            decompressed.append(decompressed[-1] + d_size)
        if compressed[-1] != end - table_size - 8:
            raise CorruptObject("the seek table does not add up to the object's size")
        return cls(compressed, decompressed)


class SeekableZstdReader(io.RawIOBase):
    """A seekable, read-only view of the decompressed object; each read decompresses only its block."""

    def __init__(self, fh: BinaryIO, name: str = "object") -> None:
        self.fh = fh
        self.name = name
        try:
            self.table = SeekTable.read(fh)
        except (OSError, struct.error) as exc:
            fh.close()
            raise CorruptObject(
                f"{log_name(name)}: {exc if isinstance(exc, CorruptObject) else 'damaged seek table'}"
            ) from exc
        self.pos = 0
        self.block_index = -1
        self.block = b""
        self.decompressor = zstandard.ZstdDecompressor()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.table.size}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self.pos = base + offset
        return self.pos

    def _load(self, index: int) -> None:
        start, end = self.table.compressed[index], self.table.compressed[index + 1]
        self.fh.seek(start)
        frame = self.fh.read(end - start)
        expected = self.table.decompressed[index + 1] - self.table.decompressed[index]
        try:
            block = self.decompressor.decompress(frame)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"{log_name(self.name)}: block {index} does not decompress ({exc})") from exc
        if len(block) != expected:
            raise CorruptObject(
                f"{log_name(self.name)}: block {index} holds {len(block)} bytes, its seek table says {expected}"
            )
        self.block_index, self.block = index, block

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.table.size:
            return 0
        index = bisect.bisect_right(self.table.decompressed, self.pos) - 1
        if index != self.block_index:
            self._load(index)
        offset = self.pos - self.table.decompressed[index]
        data = memoryview(self.block)[offset : offset + len(buffer)]
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.fh.close()
        super().close()


class ZstdFileSystemStorage(FileSystemStorage):
    """Objects as seekable zstd files under a root directory (the embedded cold tier)."""

    def __init__(self, root: Path | str, fsync: bool = True, create: bool = True, level: int = 1) -> None:
        super().__init__(root, fsync=fsync, create=create)
        self.level = level

    @classmethod
    def from_config(cls, config: Mapping[str, Any], tier: str, root: Path, fsync: bool = True) -> ZstdFileSystemStorage:
        """As :meth:`FileSystemStorage.from_config`; ``level`` is zstd's compression level (default 1)."""
        explicit = config.get("root")
        return cls(explicit or root / tier, fsync=fsync, create=not explicit, level=int(config.get("level", 1)))

    def path(self, key: str) -> Path:
        return Path(self._root, check_key(key) + SUFFIX)

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        with Storage.local_path(self, key) as path:  # decompressed into staging for as long as it is needed
            yield path

    def put(self, key: str, staged: StagedObject, sync: bool = True) -> None:
        """Compress ``staged`` into a staging file, make it durable, and place it as :class:`FileSystemStorage` does."""
        if self.path(key).exists():  # same key means same content hash: the object is already there
            if sync:
                self.sync([key])
            return
        fh, path = self.stage()
        try:
            with fh, open(staged.path, "rb") as source:
                compress_file(source, fh, level=self.level)
                fh.flush()
                if self.fsync:
                    fsync_then_close(os.dup(fh.fileno()))
            super().put(key, StagedObject(path, staged.sha256, staged.size), sync=sync)
        finally:
            path.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return io.BufferedReader(SeekableZstdReader(open(self.path(key), "rb"), name=key), buffer_size=CHUNK)

    def keys(self) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.endswith(".dcm" + SUFFIX):
                    key = os.path.relpath(os.path.join(dirpath, name), self.root)[: -len(SUFFIX)]
                    if is_object_key(key):
                        yield key
