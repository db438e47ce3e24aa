"""A ModelAdmin base class whose change log also goes to the audit trail.

Django's admin writes a ``LogEntry`` for each addition, change and deletion;
:class:`AuditedModelAdmin` keeps that and appends the same fact to the
hash-chained trail (action ``admin-add``, ``admin-change``, ``admin-delete``),
so changes to users, roles, sites, grants and tokens are tamper-evident.
Every admin class of the project derives from it. :func:`record_change` writes
the same record for a change made elsewhere (a management command), so one
search of the trail finds a change however it was made.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from audit.trail import record


def record_change(
    action: str,
    obj: Model,
    message: Any = "",
    request: HttpRequest | None = None,
    *,
    actor: str | None = None,
    subject: dict[str, str] | None = None,
) -> None:
    """The ``admin-<action>`` record (add, change, delete) of a change to ``obj``."""
    record(
        f"admin-{action}",
        request,
        actor=actor,
        detail={
            "model": obj._meta.label_lower,
            "object_id": str(obj.pk),
            "object": str(obj)[:200],
            "change": message,
        },
        **(subject or {}),
    )


class AuditedModelAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def audit_subject(self, obj: Any) -> dict[str, str]:
        """The ``patient_id`` / ``study_instance_uid`` an object is about (override per model)."""
        return {}

    def audit(self, request: HttpRequest, action: str, obj: Model, message: Any = "") -> None:
        record_change(action, obj, message, request, subject=self.audit_subject(obj))

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        self.audit(request, "add", obj, message)
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        self.audit(request, "change", obj, message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        for obj in queryset:
            self.audit(request, "delete", obj)
        return super().log_deletions(request, queryset)
