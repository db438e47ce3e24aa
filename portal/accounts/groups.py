"""Creating the role groups and giving them their permissions.

Used by the data migration (with historical models) and by
``manage.py setup_roles`` (with the live ones). Idempotent: groups that exist
are brought back to the permissions of :data:`portal.accounts.roles.ROLE_PERMISSIONS`;
permissions an administrator added by hand to a non-administrator role are
removed, so the table in ``portal/accounts/roles.py`` stays the one truth.
"""

from __future__ import annotations

from typing import Any

from portal.accounts.roles import ROLE_PERMISSIONS, STAFF_ROLES, Role, roles_of


def ensure_roles(group_model: Any, permission_model: Any) -> dict[str, int]:
    """Create or update one group per role; return each group's permission count."""
    counts: dict[str, int] = {}
    for role, wanted in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=role.value)
        if "*" in wanted:
            perms = list(permission_model.objects.all())
        else:
            perms = []
            for dotted in sorted(wanted):
                app_label, codename = dotted.split(".", 1)
                perm = permission_model.objects.filter(content_type__app_label=app_label, codename=codename).first()
                if perm is None:
                    raise LookupError(f"permission {dotted} for role {role.value!r} does not exist")
                perms.append(perm)
        group.permissions.set(perms)
        counts[role.value] = len(perms)
    return counts


def sync_staff_flag(user: Any) -> bool:
    """Give Staff status (admin site access) exactly to superusers and staff roles."""
    if hasattr(user, "_pacs_roles"):
        del user._pacs_roles
    wanted = bool(user.is_superuser or (roles_of(user) & STAFF_ROLES))
    if user.is_staff != wanted:
        user.is_staff = wanted
        user.save(update_fields=["is_staff"])
    return wanted


def add_role(user: Any, role: Role) -> None:
    """Put a user in a role's group (creating the group if setup has not run)."""
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name=role.value)
    user.groups.add(group)
    if hasattr(user, "_pacs_roles"):
        del user._pacs_roles
