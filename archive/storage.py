"""Object storage for Part 10 files: named tiers over pluggable backends.

A backend stores opaque objects under keys the archive builds from validated
UIDs only (:func:`object_key`). :class:`FileSystemStorage` writes atomically:
the bytes go to a temporary file in the same file system, are fsynced, and are
then hard-linked into place, so a reader or a crash never sees half an object
and an existing object is never overwritten. Keys carry a prefix of the
object's SHA-256, so two different objects that claim the same SOP Instance
UID can never replace each other's bytes. :class:`S3Storage` (in
:mod:`archive.s3`) keeps a tier in an S3-compatible bucket; whatever the
backend, uploads are staged on the local file system first. Tiers are
configured by ``settings.PACS_TIERS``; a tier not named there is a folder
under ``PACS_STORAGE_DIR``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from archive.uid import validate_uid

CHUNK = 1024 * 1024


def object_key(study: str, series: str, sop: str, sha256: str) -> str:
    """``study/series/sop.<hash prefix>.dcm`` built from validated UIDs."""
    validate_uid(study)
    validate_uid(series)
    validate_uid(sop)
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    return f"{study}/{series}/{sop}.{sha256[:16]}.dcm"


@dataclass
class StagedObject:
    """A complete object written to a temporary file, with its digest and size."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
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
        """An open temporary file in the staging directory, for streaming writes."""
        fd, name = tempfile.mkstemp(dir=self.staging_dir, suffix=".part")
        return os.fdopen(fd, "wb"), Path(name)

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
        self.root = Path(root)
        self.fsync = fsync
        self.staging_dir = self.root / ".staging"
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError("key escapes the storage root")
        return path

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        yield self.path(key)

    def modified(self, key: str) -> float:
        return self.path(key).stat().st_mtime

    def put(self, key: str, staged: StagedObject, sync: bool = True) -> None:
        target = self.path(key)
        if not target.parent.is_dir():
            self._make_dirs(target.parent)
        try:
            os.link(staged.path, target)
        except FileExistsError:
            pass  # same key means same content hash: the object is already there
        if sync:
            self.sync([key])

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents, making each new entry durable."""
        if directory.is_dir():
            return
        self._make_dirs(directory.parent)
        try:
            directory.mkdir()
        except FileExistsError:
            return
        if self.fsync:
            _fsync_dir(directory.parent)

    def sync(self, keys: list[str]) -> None:
        """One directory fsync per directory that received new entries."""
        if self.fsync:
            for directory in {self.path(key).parent for key in keys}:
                _fsync_dir(directory)

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
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.endswith(".dcm"):
                    yield os.path.relpath(os.path.join(dirpath, name), self.root)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StagingWriter:
    """Streams bytes into a staging file while computing SHA-256 and size."""

    def __init__(self, storage: Storage, max_bytes: int) -> None:
        self.fh, self.path = storage.stage()
        self.digest = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes
        self.fsync = storage.fsync

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise ValueError("object exceeds the maximum size")
        self.digest.update(data)
        self.fh.write(data)

    def finish(self) -> StagedObject:
        self.fh.flush()
        if self.fsync:
            os.fsync(self.fh.fileno())
        self.fh.close()
        return StagedObject(self.path, self.digest.hexdigest(), self.size)

    def abort(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


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
