"""Staging: incoming bytes streamed to a local temporary file, hashed as they come.

:class:`StagingWriter` is how every ingest (STOW-RS, C-STORE, imports) writes an
object before a backend places it; the digest and fsync run in the background.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import BinaryIO

from archive.storage.base import CHUNK, StagedObject, Storage, background, fsync_then_close

#: Objects up to this size are hashed after :meth:`StagingWriter.finish`, in the background
#: (from the page cache, while the caller parses them); larger ones as their bytes arrive.
HASH_LATER_MAX = 8 * 1024 * 1024


class StagingWriter:
    """Streams bytes into a staging file, counting them and computing their SHA-256.

    :meth:`finish` returns at once: the fsync, and the digest of an object of
    at most :data:`HASH_LATER_MAX` bytes, run on the durability pool while the
    caller parses the object; :class:`StagedObject` waits for them where they
    are needed (the digest to name the object, the fsync to place it).
    """

    def __init__(self, storage: Storage, max_bytes: int) -> None:
        self.fh, self.path = storage.stage()
        self.digest: hashlib._Hash | None = None  # set once the object outgrows HASH_LATER_MAX
        self.size = 0
        self.max_bytes = max_bytes
        self.fsync = storage.fsync

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise ValueError("object exceeds the maximum size")
        if self.digest is None and self.size > HASH_LATER_MAX:
            self.digest = _hash_fd(self.fh.fileno(), self.size - len(data))  # the bytes so far, then inline
        if self.digest is not None:
            self.digest.update(data)
        _write_all(self.fh, data)

    def finish(self) -> StagedObject:
        self.fh.flush()
        fd = self.fh.fileno()
        on_disk = os.fstat(fd).st_size
        if on_disk != self.size:
            self.abort()
            raise OSError(f"the staging file holds {on_disk} bytes, but {self.size} were written to it")
        if self.digest is not None:
            sha256: str | Future[str] = self.digest.hexdigest()
        else:
            sha256 = background(partial(_hexdigest_then_close, os.dup(fd), self.size))
        pending = background(partial(fsync_then_close, os.dup(fd))) if self.fsync else None
        self.fh.close()
        return StagedObject(self.path, sha256, self.size, pending)

    def abort(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


def _write_all(fh: BinaryIO, data: bytes | memoryview) -> None:
    """Write every byte of ``data``: an unbuffered write may take only part of it (a disk filling up)."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            written = fh.write(view[done:])
            if not written:
                raise OSError("the staging file took no more bytes")
            done += written


def _hash_fd(fd: int, size: int) -> hashlib._Hash:
    """SHA-256 of the first ``size`` bytes of the open file ``fd``."""
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            raise OSError("staging file is shorter than what was written to it")
        digest.update(chunk)
        offset += len(chunk)
    return digest


def _hexdigest_then_close(fd: int, size: int) -> str:
    try:
        return _hash_fd(fd, size).hexdigest()
    finally:
        os.close(fd)


def stage_file(storage: Storage, source: Path | str) -> StagedObject:
    """Copy an existing file into staging (used by imports and tests)."""
    writer = StagingWriter(storage, max_bytes=1 << 62)
    with open(source, "rb") as fh:
        while chunk := fh.read(CHUNK):
            writer.write(chunk)
    return writer.finish()
