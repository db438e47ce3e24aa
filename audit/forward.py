"""Streaming the audit trail to a SIEM: ship new records over syslog as they are written.

``manage.py audit_forward --follow`` (one long-running process next to the web
processes) polls the trail every second or so and sends the records after its
cursor as RFC 5424 lines (:func:`audit.export.to_syslog`) to
``PACS_AUDIT_SYSLOG``. Requests pay nothing for it: they append to the trail
exactly as before, and the forwarder reads it afterwards.

Delivery is at-least-once. The cursor (:class:`audit.models.AuditForwardCursor`,
one per target) moves only after a batch has been handed to the network, so
a crash or a dropped TCP connection re-sends at most that batch. Each line
carries the record's ``id`` and ``hash`` as structured data, which a SIEM uses to
drop the duplicates. Record ids grow in commit order (appends are serialised on
the chain head), so an id cursor never skips a record. UDP gives no delivery
guarantee at all; use ``tcp://`` where losing a line matters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from audit.export import SyslogSender, to_syslog
from audit.models import AuditEvent, AuditForwardCursor

logger = logging.getLogger(__name__)


def cursor(target: str, from_now: bool = False) -> AuditForwardCursor:
    """The target's cursor; a new one starts at the beginning, or at the newest record."""
    start = 0
    if from_now:
        start = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    position, _ = AuditForwardCursor.objects.get_or_create(target=target, defaults={"last_id": start})
    return position


def forward_batch(sender: SyslogSender, target: str, batch: int = 500, hostname: str | None = None) -> int:
    """Send the next ``batch`` records after the target's cursor, then move the cursor.

    Returns how many were sent. An ``OSError`` from the socket leaves the cursor
    where it was, so the next attempt sends the batch again.
    """
    position = cursor(target)
    events = list(AuditEvent.objects.filter(id__gt=position.last_id).order_by("id")[:batch])
    if not events:
        return 0
    for event in events:
        sender.send(to_syslog(event, hostname))
    with transaction.atomic():
        AuditForwardCursor.objects.filter(pk=position.pk, last_id__lt=events[-1].pk).update(
            last_id=events[-1].pk, updated_at=timezone.now()
        )
    return len(events)


def forward_all(target: str, batch: int = 500, hostname: str | None = None) -> int:
    """Send everything after the cursor, batch by batch; return how many records were sent."""
    total = 0
    with SyslogSender(target) as sender:
        while sent := forward_batch(sender, target, batch, hostname):
            total += sent
    return total


def follow(
    target: str,
    stop: Callable[[], bool],
    interval: float = 1.0,
    batch: int = 500,
    hostname: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Keep forwarding until ``stop()`` says so: drain, wait ``interval``, repeat.

    A lost connection (collector restarted) is re-opened with a growing pause
    (up to a minute); the records since the cursor are sent again.
    """
    total = 0
    sender: SyslogSender | None = None
    backoff = interval
    try:
        while not stop():
            try:
                if sender is None:
                    sender = SyslogSender(target)
                while sent := forward_batch(sender, target, batch, hostname):
                    total += sent
                backoff = interval
                sleep(interval)
            except OSError as exc:
                logger.warning("audit forwarding to %s interrupted: %s; retrying in %.0f s", target, exc, backoff)
                if sender is not None:
                    sender.close()
                    sender = None
                sleep(backoff)
                backoff = min(60.0, backoff * 2)
    finally:
        if sender is not None:
            sender.close()
    return total
