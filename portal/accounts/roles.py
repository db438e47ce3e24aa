"""The product's roles, as Django groups.

Roles are named here once; the groups, their permissions and who needs MFA
are derived from this table (``manage.py setup_roles`` creates the groups).
"""

from __future__ import annotations

import enum


class Role(str, enum.Enum):
    ADMINISTRATOR = "administrator"
    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    REFERRING_CLINICIAN = "referring clinician"
    AUDITOR = "auditor"


#: Roles that must pass a second factor before reaching any page or API.
MFA_REQUIRED = {Role.ADMINISTRATOR, Role.RADIOLOGIST}

#: Model permissions of each role ("app_label.codename"); ``"*"`` is every permission.
#: Which *studies* a role sees is the access policy's business (portal/access.py);
#: these permissions decide what a role may do: store, delete, use the admin, read the audit trail.
ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.ADMINISTRATOR: frozenset({"*"}),
    Role.RADIOLOGIST: frozenset(
        {"archive.view_patient", "archive.view_study", "archive.view_series", "archive.view_instance"}
    ),
    Role.TECHNOLOGIST: frozenset(
        {
            "archive.add_instance",
            "archive.view_patient",
            "archive.view_study",
            "archive.view_series",
            "archive.view_instance",
        }
    ),
    Role.REFERRING_CLINICIAN: frozenset(),
    Role.AUDITOR: frozenset({"audit.view_auditevent"}),
}

#: Roles that read images of their sites (and of what they were granted).
SITE_READERS = frozenset({Role.RADIOLOGIST, Role.TECHNOLOGIST})
#: Roles that, on their own, see no site's studies: referring clinicians see
#: only what was given to them, auditors see no images at all.
RESTRICTED = frozenset({Role.REFERRING_CLINICIAN, Role.AUDITOR})
#: Roles that need the admin site (Staff status is kept in step with them).
STAFF_ROLES = frozenset({Role.ADMINISTRATOR, Role.AUDITOR})


def roles_of(user: object) -> frozenset[Role]:
    """The roles a user holds, from their group names; cached on the user object."""
    cached = getattr(user, "_pacs_roles", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    if user is None or not getattr(user, "is_authenticated", False):
        return frozenset()
    values = {r.value: r for r in Role}
    names = user.groups.values_list("name", flat=True)  # type: ignore[attr-defined]
    roles = frozenset(values[n] for n in names if n in values)
    user._pacs_roles = roles  # type: ignore[attr-defined]
    return roles
