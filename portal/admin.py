"""Administration of people and places: users, roles, sites, memberships, grants, lockouts.

* Users get their roles (groups), sites and DICOM person name on one page;
  "sign out everywhere" ends all of a user's sessions. Staff status follows
  the roles (administrators and auditors use the admin site).
* Roles are Django groups (created by ``setup_roles``); they can be edited
  here, and every change is audited like all admin changes.
* Grants record who gave what to whom, why, and until when.
* SSO identities (issuer, subject) are listed and can be unlinked (deleted):
  the person's next SSO sign-in is then treated as a first one. They cannot
  be added or edited here: binding happens only through a real sign-in.
* The admin has no sign-in form of its own: it sends people to the portal
  sign-in, so the lockout, MFA and SSO apply there too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from archive.models import Site
from audit.adminlog import AuditedModelAdmin
from audit.trail import record
from portal.accounts import lockout
from portal.accounts.groups import sync_staff_flag
from portal.accounts.sessions import sign_out_everywhere
from portal.models import AccessGrant, OIDCIdentity, SignInFailure, SiteMembership, UserProfile


def portal_login(request: HttpRequest, extra_context: Any = None) -> HttpResponse:
    """The admin's sign-in: the portal's, or a refusal for signed-in non-staff (no redirect loop)."""
    if request.user.is_authenticated:
        if request.user.is_active and request.user.is_staff:
            return HttpResponseRedirect(reverse("admin:index"))
        raise PermissionDenied
    target = request.GET.get(REDIRECT_FIELD_NAME) or reverse("admin:index")
    return HttpResponseRedirect(reverse("login") + "?" + urlencode({REDIRECT_FIELD_NAME: target}))


admin.site.login = portal_login  # type: ignore[method-assign]
admin.site.site_header = "Cloud PACS administration"
admin.site.site_title = "Cloud PACS"


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = SiteMembership
    extra = 1
    raw_id_fields = ("user",)


class SiteGrantInline(admin.TabularInline):  # type: ignore[type-arg]
    model = AccessGrant
    fk_name = "site"
    fields = ("user", "reason", "expires_at", "granted_by")
    readonly_fields = ("granted_by",)
    raw_id_fields = ("user",)
    extra = 0


@admin.register(Site)
class SiteAdmin(AuditedModelAdmin):
    list_display = ("name", "code", "institutions", "members")
    search_fields = ("name", "code", "institution_names")
    prepopulated_fields = {"code": ("name",)}
    inlines = (MembershipInline, SiteGrantInline)

    @admin.display(description="Institution names")
    def institutions(self, obj: Site) -> str:
        return ", ".join(obj.institution_name_list())

    @admin.display(description="Members")
    def members(self, obj: Site) -> int:
        return obj.memberships.count()

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        for instance in formset.save(commit=False):
            if isinstance(instance, AccessGrant) and instance.granted_by_id is None:
                instance.granted_by = request.user  # type: ignore[assignment]
            instance.save()
        for obj in formset.deleted_objects:
            obj.delete()
        formset.save_m2m()


@admin.register(AccessGrant)
class AccessGrantAdmin(AuditedModelAdmin):
    list_display = ("user", "site", "study", "expires_at", "active", "granted_by", "reason")
    list_filter = ("site", "expires_at")
    list_select_related = ("user", "site", "study", "granted_by")
    search_fields = ("user__username", "reason", "=study__study_instance_uid")
    raw_id_fields = ("user", "study")
    readonly_fields = ("granted_by", "created_at")
    fields = ("user", "site", "study", "reason", "expires_at", "granted_by", "created_at")

    @admin.display(boolean=True, description="Active")
    def active(self, obj: AccessGrant) -> bool:
        return obj.is_active

    def save_model(self, request: HttpRequest, obj: AccessGrant, form: Any, change: bool) -> None:
        if obj.granted_by_id is None:
            obj.granted_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def audit_subject(self, obj: Any) -> dict[str, str]:
        if obj.study_id:
            return {"study_instance_uid": obj.study.study_instance_uid}
        return {}


class ProfileInline(admin.StackedInline):  # type: ignore[type-arg]
    model = UserProfile
    can_delete = False
    fields = ("dicom_person_name",)
    verbose_name_plural = "DICOM identity"


class UserMembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = SiteMembership
    extra = 1


class UserAdmin(AuditedModelAdmin, DjangoUserAdmin):
    inlines = (ProfileInline, UserMembershipInline)
    actions = ("sign_out_everywhere",)
    list_display = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "role_names")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # Staff status follows the roles (see portal.accounts.groups.sync_staff_flag).
        return (*super().get_readonly_fields(request, obj), "is_staff", "last_login", "date_joined")

    @admin.display(description="Roles")
    def role_names(self, obj: User) -> str:
        return ", ".join(g.name for g in obj.groups.all())

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return super().get_queryset(request).prefetch_related("groups")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        sync_staff_flag(form.instance)

    @admin.action(description="Sign out everywhere (end all their sessions)", permissions=["change"])
    def sign_out_everywhere(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            sign_out_everywhere(user)
            record("sign-out-everywhere", request, detail={"user": user.get_username(), "by": "administrator"})
        messages.success(request, f"{queryset.count()} user(s) signed out on every device.")


class GroupAdmin(AuditedModelAdmin, DjangoGroupAdmin):
    """Roles: Django groups, their permissions edited here and audited."""


for model, model_admin in ((User, UserAdmin), (Group, GroupAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)


@admin.register(SignInFailure)
class SignInFailureAdmin(AuditedModelAdmin):
    list_display = ("username", "source_ip", "at")
    search_fields = ("username", "=source_ip")
    date_hierarchy = "at"
    actions = ("unlock",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Unlock these user names (forget their failures)", permissions=["delete"])
    def unlock(self, request: HttpRequest, queryset: QuerySet[SignInFailure]) -> None:
        names = sorted(set(queryset.values_list("username", flat=True)))
        for name in names:
            lockout.clear(name)
            record("sign-in-unlock", request, detail={"username": name})
        messages.success(request, f"Unlocked: {', '.join(names)}")


@admin.register(OIDCIdentity)
class OIDCIdentityAdmin(AuditedModelAdmin):
    list_display = ("user", "subject", "issuer", "linked_by", "email_at_link", "created_at", "last_used_at")
    list_filter = ("issuer", "linked_by")
    search_fields = ("user__username", "=subject", "email_at_link")
    list_select_related = ("user",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
