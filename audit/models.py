"""Audit records and the chain head.

Each :class:`AuditEvent` stores the SHA-256 of its own canonical content plus
the hash of the record before it, so editing or deleting any row breaks the
chain from that point on (:func:`audit.trail.verify_chain`). The model refuses
updates and deletes through the ORM; the database itself is the last line and
the verifier the proof.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone


class AppendOnlyError(RuntimeError):
    """Audit records cannot be changed or removed."""


class AuditQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError("audit records cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit records cannot be deleted")


class AuditEvent(models.Model):
    """Who did what, to which patient and study, from where, when, with what outcome."""

    timestamp = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, blank=True, default="", db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, default="success")
    source_ip = models.CharField(max_length=64, blank=True, default="")
    user_agent = models.CharField(max_length=256, blank=True, default="")
    patient_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    study_instance_uid = models.CharField(max_length=64, blank=True, default="", db_index=True)
    detail = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.actor or '-'} {self.action} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("audit records cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("audit records cannot be deleted")


class ChainHead(models.Model):
    """One row holding the newest hash; locking it serialises appends."""

    last_hash = models.CharField(max_length=64)
    count = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.count} records, head {self.last_hash[:12]}…"


class AuditForwardCursor(models.Model):
    """The id of the last audit record a syslog target has been sent (at-least-once delivery)."""

    target = models.CharField(max_length=255, unique=True)
    last_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "portal_auditforwardcursor"  # created by the portal app before the model moved here

    def __str__(self) -> str:
        return f"{self.target}: up to record {self.last_id}"
