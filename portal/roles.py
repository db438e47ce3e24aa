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
