"""The worklist in the admin: routing rules, and the rows themselves (read mostly) for support."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from audit.adminlog import AuditedModelAdmin
from portal.worklist.models import RoutingRule, SavedWorklist, WorklistItem


@admin.register(RoutingRule)
class RoutingRuleAdmin(AuditedModelAdmin):
    list_display = ["order", "site", "modality", "body_part", "group", "enabled"]
    list_editable = ["enabled"]
    list_filter = ["enabled", "site", "group"]


@admin.register(WorklistItem)
class WorklistItemAdmin(AuditedModelAdmin):
    """Priority and the assigned reader are set here; status and claims change only through the worklist (audited)."""

    list_display = ["study_instance_uid", "status", "priority", "modality", "site_code", "reader_name", "arrived_at"]
    list_filter = ["status", "priority", "site"]
    search_fields = ["study_instance_uid", "accession_number"]
    fields = [
        "study_instance_uid",
        "status",
        "priority",
        "assigned_group",
        "assigned_reader",
        "claimed_by",
        "claimed_at",
    ]
    readonly_fields = ["study_instance_uid", "status", "claimed_by", "claimed_at"]

    def audit_subject(self, obj: Any) -> dict[str, str]:
        return {"patient_id": obj.patient_id, "study_instance_uid": obj.study_instance_uid}

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: WorklistItem, form: Any, change: bool) -> None:
        """Keep the shown reader in step and let open worklists see the change."""
        if obj.claimed_by_id is None:
            reader = obj.assigned_reader.get_username() if obj.assigned_reader else ""
            obj.reader_name = (reader or (obj.assigned_group.name if obj.assigned_group else ""))[:150]
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(SavedWorklist)
class SavedWorklistAdmin(AuditedModelAdmin):
    list_display = ["name", "owner", "shared_with", "created_at"]
    list_filter = ["shared_with"]
