"""The lease that makes a migration job run once at a time, across processes and machines.

A run takes the job's lease (owner and expiry on the :class:`~migration.models.Job`
row, under a row lock) and renews it as it works; another run of the same job
is refused (:class:`JobBusy`) until the lease expires, or at once when the
owner ran on this machine and its process is gone (killed, crashed).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from migration.models import Job
from pacs.lib.dblock import write_lock

LEASE = timedelta(seconds=60)


class JobBusy(Exception):
    """Another process holds the job's lease."""


def new_owner() -> str:
    """A lease owner naming this machine and process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _gone(owner: str) -> bool:
    """Whether the process that holds a lease is known to be gone (it ran on this machine and has exited)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(job: Job, owner: str) -> None:
    """Take the job's lease for ``owner``; :class:`JobBusy` when a live process holds it."""
    now = timezone.now()
    with write_lock(), transaction.atomic():
        row = Job.objects.select_for_update().get(pk=job.pk)
        held = row.lease_owner and row.lease_until is not None and row.lease_until > now
        if held and not _gone(row.lease_owner):
            raise JobBusy(f"migration job #{job.pk} is running (lease held until {row.lease_until:%H:%M:%S})")
        Job.objects.filter(pk=job.pk).update(lease_owner=owner, lease_until=now + LEASE)
