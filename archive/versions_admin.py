"""Earlier versions of instances in the admin: listed read-only, each retrievable as its original Part 10 bytes.

A correction (:mod:`archive.ingest.correct`) keeps every object it replaced as
an :class:`~archive.models.InstanceVersion`. Only a user with the view
permission of that model (administrators) lists them and downloads one
(``/admin/archive/instanceversion/<id>/download``), and only of studies the
access policy lets them see; every download is audited (``version_retrieve``).
Registered from :mod:`archive.admin`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponseNotFound
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from archive.access import visible_studies
from archive.models import InstanceVersion
from audit.adminlog import AuditedModelAdmin
from audit.trail import record


@admin.register(InstanceVersion)
class InstanceVersionAdmin(AuditedModelAdmin):
    list_display = ("sop_instance_uid", "version", "replaced_at", "replaced_by", "reason", "size", "download")
    list_filter = ("tier",)
    search_fields = ("=sop_instance_uid", "=correction", "=instance__series__study__study_instance_uid")
    readonly_fields = (
        "instance",
        "version",
        "sop_instance_uid",
        "tier",
        "storage_key",
        "sha256",
        "size",
        "replaced_at",
        "replaced_by",
        "reason",
        "correction",
        "download",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a version goes only with its study (purge, deletion), behind the retention guard

    def get_queryset(self, request: HttpRequest) -> QuerySet[InstanceVersion]:
        visible = visible_studies(request.user)
        return super().get_queryset(request).filter(instance__series__study__in=visible)

    @admin.display(description="Original object")
    def download(self, obj: InstanceVersion) -> str:
        url = reverse("admin:archive_instanceversion_download", args=[obj.pk])
        return format_html('<a href="{}" download>Download (application/dicom)</a>', url)

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "<int:pk>/download",
                self.admin_site.admin_view(self.download_view),
                name="archive_instanceversion_download",
            )
        ]
        return extra + super().get_urls()

    def download_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """The earlier version's Part 10 bytes, to a user who may view versions of a study they may see."""
        version = self.get_queryset(request).select_related("instance__series__study__patient").filter(pk=pk).first()
        if version is None or not self.has_view_permission(request, version):
            record("version_retrieve", request, outcome="denied", detail={"version": pk})
            return HttpResponseNotFound("No such earlier version.", content_type="text/plain")
        study = version.instance.series.study
        record(
            "version_retrieve",
            request,
            patient_id=study.patient.patient_id,
            study_instance_uid=study.study_instance_uid,
            detail={"sop_instance_uid": version.sop_instance_uid, "version": version.version, "sha256": version.sha256},
        )
        response = FileResponse(version.open_stored(), content_type="application/dicom")
        response["Content-Disposition"] = f'attachment; filename="version-{version.pk}.dcm"'
        response["Cache-Control"] = "no-store"
        return response
