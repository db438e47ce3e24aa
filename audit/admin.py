"""The audit trail in the admin: read-only, filterable, and verifiable.

Nobody — superusers included — may add, change or delete records here; people
with ``audit.view_auditevent`` (auditors, administrators) may list and read
them. Filters cover actor, action, outcome, patient, study and date; the
search box answers "who accessed this patient" (search a Patient ID) and "what
did this user do". The *Verify the chain* page walks the whole chain and shows
either "intact" or the first record that does not fit.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from audit.models import AuditEvent
from audit.trail import record, verify_chain


class FieldValueFilter(admin.SimpleListFilter):
    """A filter listing the most frequent values of one field (links are ``?field=value``)."""

    field_name = ""
    limit = 30

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from django.db.models import Count

        values = (
            AuditEvent.objects.exclude(**{self.field_name: ""})
            .values_list(self.field_name)
            .annotate(n=Count("id"))
            .order_by("-n")[: self.limit]
        )
        return [(v, v) for v, _ in values]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        return queryset.filter(**{self.field_name: value}) if value else queryset


class ActorFilter(FieldValueFilter):
    title = "actor"
    parameter_name = field_name = "actor"


class PatientFilter(FieldValueFilter):
    title = "patient ID"
    parameter_name = field_name = "patient_id"


class StudyFilter(FieldValueFilter):
    title = "study"
    parameter_name = field_name = "study_instance_uid"


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("timestamp", "actor", "action", "outcome", "patient_id", "study_instance_uid", "source_ip")
    list_filter = ("action", "outcome", ActorFilter, PatientFilter, StudyFilter, "timestamp")
    date_hierarchy = "timestamp"
    search_fields = ("actor", "=patient_id", "=study_instance_uid", "=source_ip", "action")
    ordering = ("-id",)
    list_per_page = 100
    show_full_result_count = False
    readonly_fields = (
        "timestamp",
        "actor",
        "actor_id",
        "action",
        "outcome",
        "source_ip",
        "user_agent",
        "patient_id",
        "study_instance_uid",
        "detail",
        "prev_hash",
        "hash",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        verify = path("verify/", self.admin_site.admin_view(self.verify_view), name="audit_auditevent_verify")
        return [verify, *super().get_urls()]

    def verify_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        result = verify_chain()
        record(
            "audit-verify",
            request,
            outcome="success" if result.ok else "failure",
            detail={"checked": result.checked, "first_broken_id": result.first_broken_id},
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Audit chain verification",
            "result": result,
        }
        return TemplateResponse(request, "admin/audit/auditevent/verify.html", context)
