"""The base of every storage backend, and what backends share: staged objects, ranged reads, the durability pool.

:class:`Storage` is the one base class with one method per operation (put,
sync, open, delete, keys, exists, ranged reads); a backend overrides them and
never weakens the contract: :meth:`Storage.put` places only an object whose
bytes are durable, and the wait returned by
:meth:`Storage.begin_sync` (which ingest calls before its commit) returns only
once every new object is durable. :class:`StagedObject` is a complete object
in a local temporary file, with its SHA-256 and size, as
:class:`~archive.storage.staging.StagingWriter` leaves it. Digests and fsyncs
run on a small thread pool (:func:`background`), so a staged file is hashed
and fsynced while the caller parses it.

The rest lives beside this module: object keys built from validated UIDs and
checked on every use in :mod:`archive.storage.keys`, the local-file backend
in :mod:`archive.storage.filesystem`, the S3-compatible one in
:mod:`archive.storage.s3`, staging in :mod:`archive.storage.staging`, and the
choice of a tier's backend (``settings.PACS_TIERS``) in
:mod:`archive.storage.registry`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
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

    Right after :meth:`~archive.storage.staging.StagingWriter.finish` the SHA-256 of a small object
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


def reason(exc: OSError) -> str:
    """What went wrong, without the file name an :class:`OSError` carries (it holds UIDs: no PHI in logs)."""
    if exc.strerror and exc.filename is not None:
        return exc.strerror
    return str(exc)


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


class NotRestored(OSError):
    """The object sits in an archive storage class and has no readable (restored) copy now."""


@dataclass(frozen=True)
class RestoreStatus:
    """Whether an object can be read now, and if not whether a restore of it is under way.

    ``expiry`` is when a restored temporary copy goes away again (the object stays in its archive class).
    """

    readable: bool
    ongoing: bool = False
    expiry: datetime | None = None


class Storage:
    """Base class of storage backends; one method per operation.

    Every backend stages incoming bytes in ``staging_dir``, a local directory
    (see :class:`~archive.storage.staging.StagingWriter`), before :meth:`put` places them.
    """

    staging_dir: Path
    fsync: bool = True
    #: Objects are kept in an archive class: reading one needs a restore first (S3 GLACIER, DEEP_ARCHIVE).
    archival: bool = False

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

    def stored_size(self, key: str) -> int:
        """How many bytes the object takes on this tier (less than its Part 10 size when compressed)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`OSError` saying why, unless the tier can be written and read now."""
        raise NotImplementedError

    def read_ranges(self, key: str, ranges: list[list[int]]) -> bytes:
        """The concatenation of the ``[offset, length]`` ranges of an object."""
        with self.open(key) as fh:
            return read_ranges_from(fh, ranges, key)

    # ------------------------------------------------------------------ archive classes

    def restore(self, key: str, days: int) -> None:
        """Ask for a readable temporary copy of an archived object, kept ``days`` days (idempotent).

        Nothing to do on a tier whose objects are always readable.
        """

    def restore_status(self, key: str) -> RestoreStatus:
        """Whether the object can be read now; on an immediate tier, always."""
        return RestoreStatus(readable=True)

    def stored_digest(self, key: str) -> tuple[str | None, int]:
        """The SHA-256 the tier recorded for the object when it was placed, and its size, without reading it.

        Only archival tiers need it (their objects cannot be read back to verify a
        copy); the default reads the object.
        """
        digest = hashlib.sha256()
        size = 0
        with self.open(key) as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size
