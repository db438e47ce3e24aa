"""The archive in the admin: patients, studies, series, instances (read-only), API tokens, DICOM devices.

Lists start from :func:`archive.access.visible_studies`, so a staff member sees
in the admin exactly the studies the access policy lets them see. Index rows
are derived from the stored files and are therefore read-only here, except a
study's site (to place a study whose institution was not recognised).
Deleting a study moves it to the recoverable trash
(:func:`archive.ingest.trash.trash_study`), behind the one guard of legal
holds and retention policies: a refusal is shown as an error, never as done.
Retention policies, legal holds (placed and released with a reason, never
deleted), recorded dates of death and the trash (restore, purge) are here too.
Opening a study or patient page is recorded in the
audit trail (``admin-view``). API tokens are issued here: the plain token is
shown exactly once and only its hash is kept. DICOM devices (the peers of the
DICOM node, archive/dimse/) are edited here; every change is audited.
Storage tiers and lifecycle rules are edited here too (a tier that cannot be
reached, or a rule to a tier that does not exist, is refused when saved);
the mover's ledger (TierMove) is read-only. Budgets are edited here, and
their page has the storage cost page beside it (``/admin/archive/budget/costs/``:
usage, projection, five-year table, budget alerts; archive/costs/).

Site administration (with memberships and grants) lives in ``portal/admin.py``
because memberships are a portal concept and the archive never imports the portal.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from archive.access import policy, visible_studies
from archive.costs.budgets import check_budgets
from archive.costs.charts import page_context
from archive.costs.usage import cost_report
from archive.ingest.lifecycle import apply_rules
from archive.ingest.retention import DeletionRefused
from archive.ingest.tasks import run_moves
from archive.ingest.trash import TrashError, purge_study, restore_study, trash_series, trash_study
from archive.models import (
    LOCATION_FIELDS,
    ApiToken,
    Budget,
    DicomDevice,
    Instance,
    LegalHold,
    LifecycleRule,
    Patient,
    PatientDeath,
    RetentionPolicy,
    Series,
    Study,
    Tier,
    TierMove,
    TrashEntry,
)
from audit.adminlog import AuditedModelAdmin
from audit.trail import record


class ReadOnlyAdmin(AuditedModelAdmin):
    """Viewable by those with the view permission; nobody adds or edits here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def audit_trail_link(patient_id: str) -> str:
    url = reverse("admin:audit_auditevent_changelist") + "?" + urlencode({"patient_id": patient_id})
    return format_html('<a href="{}">Who accessed this patient</a>', url)


def _is_pk(object_id: str) -> bool:
    """A primary key as the admin's URL carries it: ASCII digits ('²' is a digit to str.isdigit, not to int)."""
    return object_id.isascii() and object_id.isdigit()


@admin.register(Patient)
class PatientAdmin(ReadOnlyAdmin):
    list_display = ("patient_id", "patient_name", "patient_birth_date", "patient_sex")
    search_fields = ("=patient_id", "patient_name_search")
    fields = ("patient_id", "issuer_of_patient_id", "patient_name", "patient_birth_date", "patient_sex", "accesses")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Patient]:
        visible = visible_studies(request.user).values("patient_id")
        return super().get_queryset(request).filter(pk__in=visible)

    @admin.display(description="Audit trail")
    def accesses(self, obj: Patient) -> str:
        return audit_trail_link(obj.patient_id)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        response = super().change_view(request, object_id, form_url, extra_context)
        patient = self.get_queryset(request).filter(pk=object_id).first() if _is_pk(object_id) else None
        if patient is not None and request.method == "GET":
            record("admin-view", request, patient_id=patient.patient_id, detail={"model": "archive.patient"})
        return response


@admin.register(Study)
class StudyAdmin(AuditedModelAdmin):
    list_display = ("study_instance_uid", "patient_name", "study_date", "modalities_in_study", "site", "instances")
    list_filter = ("site", "modalities_in_study")
    list_select_related = ("patient", "site")
    search_fields = ("=study_instance_uid", "=accession_number", "=patient__patient_id", "patient__patient_name_search")
    date_hierarchy = "created_at"
    readonly_fields = (
        "study_instance_uid",
        "patient",
        "patient_name",
        "study_date",
        "study_time",
        "accession_number",
        "study_id",
        "study_description",
        "referring_physician_name",
        "institution_name",
        "modalities_in_study",
        "number_of_series",
        "number_of_instances",
        "created_at",
        "updated_at",
        "last_accessed_at",
        "accesses",
    )
    fields = ("site", *readonly_fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Study]:
        return visible_studies(request.user).select_related("patient", "site")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return policy().can_delete(request.user)

    def audit_subject(self, obj: Any) -> dict[str, str]:
        return {"patient_id": obj.patient.patient_id, "study_instance_uid": obj.study_instance_uid}

    @admin.display(description="Patient name", ordering="patient__patient_name")
    def patient_name(self, obj: Study) -> str:
        return obj.patient.patient_name

    @admin.display(description="Instances", ordering="number_of_instances")
    def instances(self, obj: Study) -> int:
        return obj.number_of_instances

    @admin.display(description="Audit trail")
    def accesses(self, obj: Study) -> str:
        return audit_trail_link(obj.patient.patient_id)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # Series and instances go with their study (to the trash); deleting them
        # needs no permission of their own, only the right to delete the study.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        return None  # the trash records each deletion, or its refusal, as a "delete" event

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # its "deleted" message would hide refusals
        return actions

    actions = ("move_to_trash",)

    def has_move_to_trash_permission(self, request: HttpRequest) -> bool:
        return policy().can_delete(request.user)

    def _trash(self, request: HttpRequest, obj: Study) -> bool:
        try:
            trash_study(obj, request=request, via="admin")
        except DeletionRefused as exc:
            self.message_user(request, f"{obj.study_instance_uid} was not deleted: {exc}", messages.ERROR)
            return False
        except TrashError as exc:
            self.message_user(request, f"{obj.study_instance_uid}: {exc}", messages.ERROR)
            return False
        return True

    def delete_model(self, request: HttpRequest, obj: Study) -> None:
        request._pacs_delete_refused = not self._trash(request, obj)  # type: ignore[attr-defined]

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        if getattr(request, "_pacs_delete_refused", False):
            return HttpResponseRedirect(reverse("admin:archive_study_change", args=[obj_id]))
        self.message_user(request, f"{obj_display} is in the trash; it can be restored until it is purged.")
        return HttpResponseRedirect(reverse("admin:archive_study_changelist"))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        for study in queryset.select_related("patient"):
            self._trash(request, study)

    @admin.action(description="Move the selected studies to the trash", permissions=["move_to_trash"])
    def move_to_trash(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        moved = sum(self._trash(request, study) for study in queryset.select_related("patient"))
        if moved:
            self.message_user(request, f"{moved} studies moved to the trash.")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        response = super().change_view(request, object_id, form_url, extra_context)
        study = self.get_queryset(request).filter(pk=object_id).first() if _is_pk(object_id) else None
        if study is not None and request.method == "GET":
            record("admin-view", request, detail={"model": "archive.study"}, **self.audit_subject(study))
        return response


@admin.register(Series)
class SeriesAdmin(ReadOnlyAdmin):
    list_display = ("series_instance_uid", "modality", "series_number", "series_description", "study", "patient_name")
    list_select_related = ("study__patient",)
    search_fields = ("=series_instance_uid", "=study__study_instance_uid")
    exclude = ("attributes",)

    actions = ("move_to_trash",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Series]:
        return super().get_queryset(request).filter(study__in=visible_studies(request.user))

    @admin.display(description="Patient name")
    def patient_name(self, obj: Series) -> str:
        return obj.study.patient.patient_name

    def has_move_to_trash_permission(self, request: HttpRequest) -> bool:
        return policy().can_delete(request.user)

    @admin.action(description="Move the selected series to the trash", permissions=["move_to_trash"])
    def move_to_trash(self, request: HttpRequest, queryset: QuerySet[Series]) -> None:
        """Each series to the recoverable trash, behind the guard (refusals are shown, and audited there)."""
        moved = 0
        for series in queryset.select_related("study"):
            try:
                trash_series(series, request=request, via="admin")
            except (DeletionRefused, TrashError) as exc:
                self.message_user(request, f"{series.series_instance_uid} was not deleted: {exc}", messages.ERROR)
            else:
                moved += 1
        if moved:
            self.message_user(request, f"{moved} series moved to the trash; they can be restored until purged.")


@admin.register(Instance)
class InstanceAdmin(ReadOnlyAdmin):
    list_display = ("sop_instance_uid", "instance_number", "series", "tier", "availability", "size")
    list_select_related = ("series",)
    list_filter = ("tier", "availability")
    search_fields = ("=sop_instance_uid", "=series__series_instance_uid")
    exclude = ("metadata", "frames")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Instance]:
        return super().get_queryset(request).filter(series__study__in=visible_studies(request.user))


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "expires_at", "last_used_at", "revoked")
    list_filter = ("revoked",)
    search_fields = ("prefix", "user__username", "name")
    actions = ("revoke",)
    raw_id_fields = ("user",)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["user", "name", "expires_at"]
        return ["prefix", "user", "name", "created_at", "expires_at", "last_used_at", "revoked"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["prefix", "user", "created_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = ApiToken.issue(obj.user, obj.name, obj.expires_at)
        obj.pk, obj.prefix, obj.token_hash, obj.created_at = token.pk, token.prefix, token.token_hash, token.created_at
        obj._state.adding = False
        request.pacs_issued_token = raw  # type: ignore[attr-defined]
        record("token-issue", request, detail={"token": token.prefix, "for": obj.user.get_username(), "via": "admin"})

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        raw = getattr(request, "pacs_issued_token", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Token issued",
            "token": obj,
            "raw": raw,
        }
        response = TemplateResponse(request, "admin/archive/apitoken/issued.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        tokens = list(queryset.filter(revoked=False).select_related("user"))
        for token in tokens:
            token.revoked = True
            token.save(update_fields=["revoked"])
            record("token-revoke", request, detail={"token": token.prefix, "for": token.user.get_username()})
        messages.success(request, f"{len(tokens)} token(s) revoked.")


@admin.register(DicomDevice)
class DicomDeviceAdmin(AuditedModelAdmin):
    list_display = (
        "ae_title",
        "host_or_any",
        "port",
        "site",
        "may_store",
        "may_query",
        "may_retrieve",
        "is_move_destination",
        "enabled",
        "description",
    )
    list_filter = ("enabled", "site", "may_store", "may_query", "may_retrieve", "is_move_destination")
    list_select_related = ("site",)
    search_fields = ("ae_title", "host", "description")
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("ae_title", "host", "port", "site", "enabled", "description")}),
        ("What it may do", {"fields": ("may_store", "may_query", "may_retrieve", "is_move_destination")}),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="Host", ordering="host")
    def host_or_any(self, obj: DicomDevice) -> str:
        return obj.host or "any address"


@admin.register(Tier)
class TierAdmin(AuditedModelAdmin):
    list_display = (
        "name",
        "backend",
        "location",
        "storage_class",
        "retrieval",
        "cost_per_gb_month",
        "cost_per_gb_retrieved",
        "cost_per_1000_requests",
        "from_environment",
    )
    fieldsets = (
        (None, {"fields": ("name", "backend", "retrieval", "description")}),
        ("Where (filesystem: root; S3: bucket and the rest)", {"fields": LOCATION_FIELDS}),
        ("Cost", {"fields": ("cost_per_gb_month", "cost_per_gb_retrieved", "cost_per_1000_requests")}),
    )

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        Tier.sync_environment()  # the built-in tiers and PACS_TIERS, listed beside those added here
        return super().changelist_view(request, extra_context)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.from_environment:
            return ("name", "backend", *LOCATION_FIELDS)  # the environment defines them (PACS_TIERS)
        if obj is not None and Instance.objects.filter(tier=obj.name).exists():
            return ("name", "backend", *LOCATION_FIELDS)  # its objects would not follow a new location
        return ("name",) if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and (obj.from_environment or Instance.objects.filter(tier=obj.name).exists()):
            return False  # a tier holding objects, or defined by the environment, stays
        return super().has_delete_permission(request, obj)

    @admin.display(description="Location")
    def location(self, obj: Tier) -> str:
        if obj.backend == "s3":
            return f"s3://{obj.bucket}/{obj.prefix}"
        return obj.root or f"PACS_STORAGE_DIR/{obj.name}"


class LifecycleRuleForm(forms.ModelForm):  # type: ignore[type-arg]
    target_tier = forms.ChoiceField(
        choices=lambda: [(t.name, str(t)) for t in Tier.objects.all()],
        help_text="The tier to move to: a slower one for rules that age data out, a faster one to promote back.",
    )

    class Meta:
        model = LifecycleRule
        fields = (
            "name",
            "enabled",
            "priority",
            "basis",
            "after_days",
            "site",
            "modality",
            "body_part",
            "description_pattern",
            "min_patient_age",
            "max_patient_age",
            "target_tier",
        )


@admin.register(LifecycleRule)
class LifecycleRuleAdmin(AuditedModelAdmin):
    form = LifecycleRuleForm
    list_display = (
        "name",
        "enabled",
        "priority",
        "basis",
        "after_days",
        "site",
        "modality",
        "body_part",
        "description_pattern",
        "min_patient_age",
        "max_patient_age",
        "target_tier",
    )
    list_filter = ("enabled", "basis", "target_tier")
    actions = ("apply_now",)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        Tier.sync_environment()
        return super().get_form(request, obj, change, **kwargs)

    @admin.action(description="Apply the enabled rules now (the task worker moves what they select)")
    def apply_now(self, request: HttpRequest, queryset: QuerySet[LifecycleRule]) -> None:
        try:
            plans = apply_rules(actor=request.user.get_username())
        except (OSError, ValueError) as exc:
            messages.error(request, f"A rule's tier cannot be used: {exc}")
            return
        for plan in plans:
            if plan.planned:
                run_moves.enqueue(plan.batch)
        messages.success(request, ", ".join(f"{p.rule.name}: {p.planned} to move" for p in plans) or "No rules.")


@admin.register(TierMove)
class TierMoveAdmin(ReadOnlyAdmin):
    list_display = ("id", "batch", "source_tier", "target_tier", "state", "size", "stored_size", "attempts", "error")
    list_filter = ("state", "target_tier", "source_tier")
    search_fields = ("=batch",)
    raw_id_fields = ("instance",)


@admin.register(Budget)
class BudgetAdmin(AuditedModelAdmin):
    list_display = ("name", "scope", "monthly_limit", "horizon_months", "enabled", "alerted_at", "alerted_cost")
    list_filter = ("enabled",)
    list_select_related = ("site",)
    fields = ("name", "site", "cost_tag", "monthly_limit", "horizon_months", "notify", "enabled")

    @admin.display(description="Covers")
    def scope(self, obj: Budget) -> str:
        return obj.scope

    def get_urls(self) -> list[URLPattern]:
        costs = path("costs/", self.admin_site.admin_view(self.costs_view), name="archive_budget_costs")
        return [costs, *super().get_urls()]

    def costs_view(self, request: HttpRequest) -> HttpResponse:
        """The storage cost page: measured usage, the projection, the five-year table, the budgets."""
        if not self.has_view_permission(request):
            record("cost-view", request, outcome="failure", detail={"why": "no permission"})
            raise PermissionDenied
        Tier.sync_environment()  # the built-in tiers and PACS_TIERS are listed, with nothing on them yet
        report = cost_report()
        statuses = check_budgets(report, actor=request.user.get_username())
        record("cost-view", request, detail={"budgets_over": sum(s.over for s in statuses)})
        context = {
            **self.admin_site.each_context(request),
            **page_context(report, statuses),
            "opts": self.model._meta,
            "title": "Storage costs",
        }
        return TemplateResponse(request, "admin/archive/budget/costs.html", context)


# --- Retention, legal holds, the trash ---------------------------------------------------------------------------


class DeletionAdmin(AuditedModelAdmin):
    """Editable by those who may delete studies (administrators): who may delete decides what may be deleted."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return policy().can_delete(request.user)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return policy().can_delete(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return policy().can_delete(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return policy().can_delete(request.user)


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(DeletionAdmin):
    list_display = ("name", "enabled", "site", "modality", "basis", "years", "description")
    list_filter = ("enabled", "basis", "site")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return policy().can_delete(request.user)


@admin.register(PatientDeath)
class PatientDeathAdmin(DeletionAdmin):
    list_display = ("patient_id", "issuer_of_patient_id", "death_date", "source", "recorded_by", "recorded_at")
    search_fields = ("=patient_id",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: PatientDeath, form: Any, change: bool) -> None:
        obj.recorded_by = request.user.get_username()
        super().save_model(request, obj, form, change)


class LegalHoldForm(forms.ModelForm):
    class Meta:
        model = LegalHold
        fields = ("patient_id", "issuer_of_patient_id", "study_instance_uid", "reason", "release_reason")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.pk and self.instance.released_at is None and not data.get("release_reason", "").strip():
            raise forms.ValidationError("To release the hold, say why in the release reason.")
        return data


@admin.register(LegalHold)
class LegalHoldAdmin(DeletionAdmin):
    """Holds are placed with a reason and released with one (the only change a saved hold takes); never deleted."""

    form = LegalHoldForm
    list_display = ("__str__", "reason", "placed_by", "placed_at", "released_by", "released_at")
    list_filter = ("released_at",)
    search_fields = ("=patient_id", "=study_instance_uid")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and (obj is None or obj.released_at is None)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("patient_id", "issuer_of_patient_id", "study_instance_uid", "reason")
        return (
            "patient_id",
            "issuer_of_patient_id",
            "study_instance_uid",
            "reason",
            "placed_by",
            "placed_at",
            "release_reason",
            "released_by",
            "released_at",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        fixed = ("patient_id", "issuer_of_patient_id", "study_instance_uid", "reason", "placed_by", "placed_at")
        done = ("released_by", "released_at")
        return fixed + done + (("release_reason",) if obj.released_at else ())

    def save_model(self, request: HttpRequest, obj: LegalHold, form: Any, change: bool) -> None:
        subject = {"patient_id": obj.patient_id, "study_instance_uid": obj.study_instance_uid}
        if not change:
            obj.placed_by = request.user.get_username()
            super().save_model(request, obj, form, change)
            record("legal-hold", request, detail={"hold": obj.pk, "reason": obj.reason}, **subject)
            return
        obj.released_by = request.user.get_username()
        obj.released_at = timezone.now()
        super().save_model(request, obj, form, change)
        record("legal-hold-release", request, detail={"hold": obj.pk, "reason": obj.release_reason}, **subject)


@admin.register(TrashEntry)
class TrashEntryAdmin(DeletionAdmin):
    """Studies in the trash: restore them, or purge those whose retention allows it."""

    list_display = (
        "study_instance_uid",
        "patient_id",
        "trashed_at",
        "trashed_by",
        "purge_after",
        "instances",
        "bytes",
        "purging_at",
    )
    search_fields = ("=study_instance_uid", "=patient_id")
    actions = ("restore", "purge_now")
    readonly_fields = list_display + ("reason",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_trash_permission(self, request: HttpRequest) -> bool:
        return policy().can_delete(request.user)

    @admin.action(description="Restore the selected studies", permissions=["trash"])
    def restore(self, request: HttpRequest, queryset: QuerySet[TrashEntry]) -> None:
        for entry in queryset:
            try:
                restore_study(entry.study_instance_uid, request=request, via="admin")
            except TrashError as exc:
                self.message_user(request, f"{entry.study_instance_uid}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{entry.study_instance_uid} restored.")

    @admin.action(description="Purge the selected studies now (for good)", permissions=["trash"])
    def purge_now(self, request: HttpRequest, queryset: QuerySet[TrashEntry]) -> None:
        for entry in queryset:
            try:
                purge_study(entry.study_instance_uid, actor=request.user.get_username())
            except (DeletionRefused, TrashError) as exc:
                self.message_user(request, f"{entry.study_instance_uid} kept: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{entry.study_instance_uid} purged.")


from archive import versions_admin  # noqa: E402, F401  (registers InstanceVersion's admin)
