"""A queue for SQLite writers: concurrent ingests wait in the kernel, not in SQLite's busy sleep.

SQLite lets one writer in at a time and makes the others retry with sleeps
of up to 100 ms (``busy_timeout``), so a few concurrent STOW requests spend
most of their time asleep. :func:`write_lock` wraps a write transaction in
an exclusive ``flock`` on a file beside the database: waiters are woken the
moment the holder is done. Other databases (PostgreSQL) queue on row locks
already, and there it does nothing.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

_local = threading.local()


def _lock_fd(path: str) -> int:
    fds: dict[str, int] = _local.__dict__.setdefault("fds", {})
    fd = fds.get(path)
    if fd is None:
        fd = fds[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return fd


@contextmanager
def write_lock(using: str = "default") -> Iterator[None]:
    """Hold the writers' queue of the SQLite database ``using`` (a no-op elsewhere)."""
    connection = connections[using]
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or not name or name == ":memory:" or "mode=memory" in name:
        yield
        return
    if connection.in_atomic_block:  # an outer transaction already holds the write lock or waits for it
        yield
        return
    fd = _lock_fd(name + ".writers")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
