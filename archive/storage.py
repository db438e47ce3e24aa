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
:mod:`archive.s3`) keeps a tier in an S3-compatible bucket; whatever the
backend, uploads are staged on the local file system first. Tiers are
configured by ``settings.PACS_TIERS``; a tier not named there is a folder
under ``PACS_STORAGE_DIR``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache, partial
from pathlib import Path
from typing import BinaryIO, TypeVar

from django.conf import settings

from archive.uid import validate_uid

CHUNK = 1024 * 1024
T = TypeVar("T")


def object_key(study: str, series: str, sop: str, sha256: str) -> str:
    """``study/series/sop.<hash prefix>.dcm`` built from validated UIDs."""
    validate_uid(study)
    validate_uid(series)
    validate_uid(sop)
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return f"{study}/{series}/{sop}.{sha256[:16]}.dcm"


_UID = r"[0-9]+(?:\.[0-9]+)*"
_KEY_RE = re.compile(rf"({_UID})/({_UID})/({_UID})\.[0-9a-f]{{16}}\.dcm")


def log_name(key: str) -> str:
    """How a log line names a stored object: by its content-hash suffix, never by its UIDs.

    Logs carry no UIDs (docs/security.md); an operator finds the file with
    ``find <tier root> -name '<this>'``.
    """
    return "*." + key.rsplit(".", 2)[-2] + ".dcm" if _KEY_RE.fullmatch(key) else "an object with a malformed key"


def is_object_key(key: str) -> bool:
    """True if ``key`` has exactly the shape :func:`object_key` builds."""
    match = _KEY_RE.fullmatch(key)
    return match is not None and all(len(uid) <= 64 for uid in match.groups())


def check_key(key: str) -> str:
    """``key`` if it is an object key, else :class:`ValueError`.

    Three UIDs (digits and dots, no empty component) and a hex digest leave no
    room for ``..``, an absolute path, a separator or a hidden name, so a
    checked key always names a file two directories below the storage root.
    """
    if not is_object_key(key):
        raise ValueError("not an object key: it could escape the storage root")
    return key


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


def _fsync_fd_then_close(fd: int) -> None:
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


class FileSystemStorage(Storage):
    """Objects as plain files under a root directory."""

    def __init__(self, root: Path | str, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self.fsync = fsync
        self.staging_dir = self.root / ".staging"
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return Path(self._root, check_key(key))

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        yield self.path(key)

    def modified(self, key: str) -> float:
        return self.path(key).stat().st_mtime

    def put(self, key: str, staged: StagedObject, sync: bool = True) -> None:
        """Hard-link the staged file under ``key`` once its bytes are durable.

        New directories are created without waiting; :meth:`sync` makes their
        entries durable together with the object's own.
        """
        target = self.path(key)
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        staged.wait_durable()  # never link bytes that a power cut could still lose
        try:
            os.link(staged.path, target)
        except FileExistsError:
            pass  # same key means same content hash: the object is already there
        if sync:
            self.sync([key])

    def sync(self, keys: list[str]) -> None:
        """Make the entries of ``keys`` durable: their directories and those directories' parents."""
        self.begin_sync(keys)()

    def begin_sync(self, keys: list[str]) -> Callable[[], None]:
        """Start the directory fsyncs of :meth:`sync` on the durability pool; the caller waits when it must.

        Every directory from each object up to the root is fsynced, not only
        those this request created: another request, possibly in another
        server process, may have created the study or series folder a moment
        ago and not yet made that entry durable. Fsyncing a directory with
        nothing new to write costs a few tens of microseconds.
        """
        if not self.fsync or not keys:
            return _nothing
        directories: set[str] = set()
        for key in keys:
            directory = os.path.dirname(self.path(key))
            while len(directory) >= len(self._root):  # series, study, then the tier root
                directories.add(directory)
                directory = os.path.dirname(directory)
        futures = [background(partial(_fsync_dir, d)) for d in directories]

        def wait() -> None:
            while futures:
                futures[0].result()
                futures.pop(0)

        return wait

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def keys(self) -> Iterator[str]:
        """Every object key under the root (files not named like an object are not objects)."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.endswith(".dcm"):
                    key = os.path.relpath(os.path.join(dirpath, name), self.root)
                    if is_object_key(key):
                        yield key


def _fsync_dir(directory: Path | str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _nothing() -> None:
    return None


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
        pending = background(partial(_fsync_fd_then_close, os.dup(fd))) if self.fsync else None
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


@cache
def get_storage(tier: str = "hot") -> Storage:
    """The backend of a named tier, as ``settings.PACS_TIERS`` configures it (default: a local folder)."""
    config = settings.PACS_TIERS.get(tier, {"backend": "filesystem"})
    root = Path(settings.PACS_STORAGE_DIR)
    if config["backend"] == "s3":
        from archive.s3 import S3Storage  # boto3 is imported only when a tier needs it

        return S3Storage.from_config(config, staging_dir=root / ".staging" / tier, fsync=settings.PACS_FSYNC)
    return FileSystemStorage(config.get("root") or root / tier, fsync=settings.PACS_FSYNC)
