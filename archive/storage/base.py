"""Object storage for Part 10 files: named tiers over pluggable backends.

A backend stores opaque objects under keys the archive builds from validated
UIDs only (:func:`object_key`). :class:`FileSystemStorage` writes atomically:
the bytes go to a temporary file in the same file system, are fsynced, and are
then hard-linked into place, so a reader or a crash never sees half an object
and an existing object is never overwritten. Keys carry a prefix of the
object's SHA-256, so two different objects that claim the same SOP Instance
UID can never replace each other's bytes. A key must have exactly the shape
:func:`object_key` gives it (:func:`check_key`), which is what keeps a key
inside the storage root: no path resolution is needed on reads.

Digests and fsyncs run on a small thread pool (:func:`background`): a staged
file is hashed and fsynced while the caller parses it, and the directories
of a batch are fsynced together while its index rows are written; but
:meth:`Storage.put` never links an object whose bytes are not yet durable,
and the wait of :meth:`Storage.begin_sync` (which ingest calls before its
commit) returns only once every new directory entry is. :class:`S3Storage` (in
:mod:`archive.storage.s3`) keeps a tier in an S3-compatible bucket; whatever the
backend, uploads are staged on the local file system first. Tiers are
configured by ``settings.PACS_TIERS``; a tier not named there is a folder
under ``PACS_STORAGE_DIR``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

CHUNK = 1024 * 1024
T = TypeVar("T")


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def background(fn: Callable[[], T]) -> Future[T]:
    """Run ``fn`` (an fsync or a digest: both release the GIL) on the durability pool.

    The pool is created on first use in each process, so a forked server
    worker never inherits a pool whose threads did not survive the fork.
    """
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pacs-durable")
            _pool_pid = os.getpid()
        return _pool.submit(fn)


def fsync_then_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedObject:
    """A complete object written to a temporary file, with its digest and size.

    Right after :meth:`StagingWriter.finish` the SHA-256 of a small object
    and the file's fsync may still be under way on the durability pool:
    :attr:`sha256` waits for the digest, :meth:`wait_durable` for the fsync.
    """

    def __init__(self, path: Path, sha256: str | Future[str], size: int, pending: Future[None] | None = None) -> None:
        self.path = path
        self.size = size
        self.pending = pending
        self._sha256 = sha256

    @property
    def sha256(self) -> str:
        """The object's SHA-256 (lowercase hex), once computed."""
        if not isinstance(self._sha256, str):
            self._sha256 = self._sha256.result()
        return self._sha256

    def wait_durable(self) -> None:
        """Block until the staged bytes are durable (re-raises a failed fsync)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def discard(self) -> None:
        if self.pending is not None:
            try:
                self.wait_durable()  # no fsync left running for an object already thrown away
            except OSError:
                pass
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def read_ranges_from(fh: BinaryIO, ranges: list[list[int]], key: str) -> bytes:
    """The concatenation of the ``[offset, length]`` ranges of the open object ``key``."""
    parts = []
    for offset, length in ranges:
        fh.seek(offset)
        data = fh.read(length)
        if len(data) != length:
            raise OSError(f"object {key} is shorter than its index says")
        parts.append(data)
    return b"".join(parts)


class Storage:
    """Base class of storage backends; one method per operation.

    Every backend stages incoming bytes in ``staging_dir``, a local directory
    (see :class:`StagingWriter`), before :meth:`put` places them.
    """

    staging_dir: Path
    fsync: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any], tier: str, root: Path, fsync: bool = True) -> Storage:
        """The backend of ``tier`` built from its ``PACS_TIERS`` entry; ``root`` is ``PACS_STORAGE_DIR``."""
        raise NotImplementedError

    def stage(self) -> tuple[BinaryIO, Path]:
        """An open temporary file in the staging directory, for streaming writes (unbuffered)."""
        fd, name = tempfile.mkstemp(dir=self.staging_dir, suffix=".part")
        return os.fdopen(fd, "wb", buffering=0), Path(name)

    def modified(self, key: str) -> float:
        """When the object under ``key`` was written (POSIX timestamp)."""
        raise NotImplementedError

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """A local file holding the object's bytes, for as long as the context lasts."""
        fh, path = self.stage()
        try:
            with fh, self.open(key) as source:
                while chunk := source.read(CHUNK):
                    fh.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def put(self, key: str, staged: StagedObject, sync: bool = True) -> None:
        """Place ``staged`` under ``key``; with ``sync=False`` it is durable only after :meth:`sync`."""
        raise NotImplementedError

    def sync(self, keys: list[str]) -> None:
        """Make the objects placed with ``sync=False`` under ``keys`` durable."""

    def begin_sync(self, keys: list[str]) -> Callable[[], None]:
        """Start :meth:`sync` of ``keys``; the returned function waits for it (and may be called again)."""
        done = False

        def wait() -> None:
            nonlocal done
            if not done:
                self.sync(keys)
                done = True

        return wait

    def open(self, key: str) -> BinaryIO:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def keys(self) -> Iterator[str]:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def read_ranges(self, key: str, ranges: list[list[int]]) -> bytes:
        """The concatenation of the ``[offset, length]`` ranges of an object."""
        with self.open(key) as fh:
            return read_ranges_from(fh, ranges, key)
