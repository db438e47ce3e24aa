"""Migration jobs in Django admin: create one, start or stop it (on the task worker), read its report.

Starting enqueues :func:`migration.tasks.run_job` after the transaction commits
and records ``migration_start`` (step ``queued``); stopping sets the job's stop
flag, which the run reads between two requests, and records ``migration_stop``
(step ``requested``). The reconciliation report is a page of its own (HTML)
and a CSV download; each view of it is a ``migration_report`` record.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from audit.adminlog import AuditedModelAdmin
from audit.trail import record
from migration import report, runner
from migration.models import Job, JobState
from migration.tasks import run_job


def _audit_report(request: HttpRequest, job: Job, fmt: str) -> None:
    record(
        "migration_report",
        request,
        detail={"job": job.pk, "legacy_ae": job.device.ae_title, "format": fmt},
    )


@admin.register(Job)
class JobAdmin(AuditedModelAdmin):
    list_display = ("id", "device", "date_from", "date_to", "modalities", "method", "state", "progress", "report")
    list_filter = ("state", "method")
    actions = ["start", "stop"]
    fields = (
        "device",
        "host",
        "port",
        "method",
        "destination_ae",
        ("date_from", "date_to"),
        "modalities",
        ("window_start", "window_end"),
        "rate_limit",
        "max_results",
        "state",
        "last_error",
        "received_instances",
        "received_bytes",
        "work_seconds",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    )
    readonly_fields = (
        "state",
        "last_error",
        "received_instances",
        "received_bytes",
        "work_seconds",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    )

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "device":
            from archive.models import DicomDevice

            kwargs["queryset"] = DicomDevice.objects.filter(may_store=True, enabled=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Job, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)

    @admin.display(description="progress")
    def progress(self, job: Job) -> str:
        total = job.instances.count()
        done = job.instances.exclude(state__in=("pending", "in_progress")).count()
        return f"{done}/{total}"

    @admin.display(description="report")
    def report(self, job: Job) -> str:
        return format_html(
            '<a href="{}">HTML</a> · <a href="{}">CSV</a>',
            reverse("admin:migration_job_report", args=[job.pk]),
            reverse("admin:migration_job_report_csv", args=[job.pk]),
        )

    @admin.action(description="Start or resume the selected jobs (on the task worker)")
    def start(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied
        actor = request.user.get_username()
        started = 0
        for job in queryset.select_related("device"):
            if job.state in (JobState.RUNNING, JobState.WAITING, JobState.QUEUED):
                continue
            with transaction.atomic():
                Job.objects.filter(pk=job.pk).update(state=JobState.QUEUED, stop_requested=False)
                record("migration_start", request, detail={**runner.job_detail(job), "step": "queued"})
                transaction.on_commit(partial(run_job.enqueue, job.pk, actor))
            started += 1
        self.message_user(request, f"{started} job(s) queued for the task worker.", messages.SUCCESS)

    @admin.action(description="Stop the selected jobs")
    def stop(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied
        for job in queryset.select_related("device"):
            runner.request_stop(job, request)
        self.message_user(request, "Stop requested: each job stops before its next request.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        views = [
            path(
                "<int:pk>/report/",
                self.admin_site.admin_view(self.report_view),
                name="migration_job_report",
            ),
            path(
                "<int:pk>/report.csv",
                self.admin_site.admin_view(self.report_csv_view),
                name="migration_job_report_csv",
            ),
        ]
        return views + super().get_urls()

    def _job(self, request: HttpRequest, pk: int) -> Job:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(Job.objects.select_related("device__site"), pk=pk)

    def report_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self._job(request, pk)
        built = report.build(job)
        _audit_report(request, job, "html")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Reconciliation report of migration job #{job.pk}",
            "opts": self.model._meta,
            "job": job,
            "report": built,
            "csv_url": reverse("admin:migration_job_report_csv", args=[job.pk]),
        }
        return TemplateResponse(request, "migration/report.html", context)

    def report_csv_view(self, request: HttpRequest, pk: int) -> StreamingHttpResponse:
        job = self._job(request, pk)
        _audit_report(request, job, "csv")

        response = StreamingHttpResponse(report.csv_lines(job), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="migration-{job.pk}.csv"'
        response["Cache-Control"] = "no-store"
        return response
