"""A queue for SQLite writers, and group commit: concurrent writers share one WAL sync.

SQLite lets one writer in at a time and makes the others retry with sleeps
of up to 100 ms (``busy_timeout``), so a few concurrent STOW requests spend
most of their time asleep. :func:`write_lock` wraps a write transaction in
an exclusive ``flock`` on a file beside the database: waiters are woken the
moment the holder is done. Other databases (PostgreSQL) queue on row locks
already, and there it does nothing.

Durability. With ``PACS_FSYNC`` on (the default), every SQLite connection
runs with ``synchronous=FULL`` (``pacs/settings.py``): each commit syncs the
write-ahead log before it returns, so a committed row survives a power cut.
A transaction under :func:`write_lock` commits the same guarantee more
cheaply: it runs with ``synchronous=NORMAL`` (the commit appends its frames
to the WAL without syncing) and, once the writers' queue is released, the
WAL file is ``fdatasync``-ed before :func:`write_lock` returns. While one
writer waits for the disk the next one already appends its transaction, and
the next sync covers every frame appended before it: concurrent requests
share syncs instead of queueing behind each other's. A sync of the WAL also
covers any earlier commit, which a later one may depend on (the audit
chain); a checkpoint in between syncs the WAL and the database itself
(SQLite's ``NORMAL`` contract), so nothing committed is left unsynced. The
caller answers its client only after :func:`write_lock` has returned.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections

_local = threading.local()


def _lock_fd(path: str) -> int:
    fds: dict[str, int] = _local.__dict__.setdefault("fds", {})
    fd = fds.get(path)
    if fd is None:
        fd = fds[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return fd


def sync_wal(database: str) -> None:
    """Make every transaction committed to the SQLite ``database`` so far durable (``fdatasync`` of its WAL).

    The file is opened by name each time: the WAL is removed when the last
    connection closes (after a checkpoint that synced everything) and a new
    one created, and an old descriptor would sync the removed file. The
    caller's own connection is open, so the name is the WAL it committed to.
    """
    try:
        fd = os.open(database + "-wal", os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL: everything is checkpointed into the (synced) database
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


@contextmanager
def write_lock(using: str = "default", durable: bool = True) -> Iterator[None]:
    """Hold the writers' queue of the SQLite database ``using`` (a no-op elsewhere).

    On SQLite with ``settings.PACS_FSYNC``, the transaction the block commits
    is durable when the block exits (see the module docstring). With
    ``durable=False`` (rows derived from others and rebuilt from them, such as
    the worklist's) the commit is not synced here: the next durable commit's
    sync covers it, and a power cut before that may lose it, never corrupt it.
    """
    connection = connections[using]
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or not name or name == ":memory:" or "mode=memory" in name:
        yield
        return
    if connection.in_atomic_block:  # an outer transaction already holds the write lock or waits for it
        yield
        return
    fsync = bool(settings.PACS_FSYNC)
    fd = _lock_fd(name + ".writers")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=NORMAL")  # the sync comes below, outside the queue
        try:
            yield
        except BaseException:
            if fsync:
                with suppress(DatabaseError):  # the error that got us here is the one to report
                    _full(connection)
            raise
        if fsync:
            _full(connection)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    if fsync and durable:
        sync_wal(name)


def _full(connection: Any) -> None:
    """Back to the connection's own ``synchronous=FULL`` for commits outside :func:`write_lock`."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous=FULL")
