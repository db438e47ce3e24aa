"""A storage tier as plain files under a root folder (the embedded default).

Writes are atomic: bytes go to a staged temporary file in the same file system,
are fsynced, then hard-linked into place and the directory fsynced, so a reader
or a crash never sees half an object and an existing object is never replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from archive.storage.base import StagedObject, Storage, background
from archive.storage.keys import check_key, is_object_key


class FileSystemStorage(Storage):
    """Objects as plain files under a root directory."""

    def __init__(self, root: Path | str, fsync: bool = True, create: bool = True) -> None:
        """``create``: make the root folder if missing; else a missing root stays missing (:meth:`check` says so).

        A configured root is never created: a disk that is not mounted must
        not turn into a folder on the system disk that silently fills up.
        """
        self.root = Path(root).resolve()
        self._root = str(self.root)
        self.fsync = fsync
        self.staging_dir = self.root / ".staging"
        try:
            self.staging_dir.mkdir(parents=create, exist_ok=True)
        except FileNotFoundError:
            pass

    @classmethod
    def from_config(cls, config: Mapping[str, Any], tier: str, root: Path, fsync: bool = True) -> FileSystemStorage:
        """A folder: the entry's ``root`` (which must exist), else ``PACS_STORAGE_DIR/<tier>`` (created)."""
        return cls(config.get("root") or root / tier, fsync=fsync, create=not config.get("root"))

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

    def stored_size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def check(self) -> None:
        """The root must be a folder this process can create a file in."""
        if not self.root.is_dir():
            raise OSError(f"the tier's folder {self.root} does not exist")
        fh, path = self.stage()
        fh.close()
        path.unlink()

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
