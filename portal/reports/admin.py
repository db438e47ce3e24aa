"""Admin of the reports: templates are managed here; reports and their versions are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from portal.reports.models import Report, ReportTemplate, ReportVersion


@admin.register(ReportTemplate)
class ReportTemplateAdmin(admin.ModelAdmin[ReportTemplate]):
    list_display = ("name", "modality", "body_part", "enabled")
    list_filter = ("enabled", "modality")
    search_fields = ("name", "modality", "body_part")


class ReportVersionInline(admin.TabularInline[ReportVersion, Report]):
    model = ReportVersion
    extra = 0
    can_delete = False
    fields = ("number", "status", "signer_name", "signed_at", "sr_sop_instance_uid", "pdf_sop_instance_uid")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin[Report]):
    list_display = ("study_instance_uid", "status", "version", "critical", "updated_at")
    list_filter = ("status", "critical")
    search_fields = ("study_instance_uid",)
    readonly_fields = [f.name for f in Report._meta.fields]
    inlines = [ReportVersionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
