"""The site-based access policy (``PACS_ACCESS_POLICY = "portal.access.SitePolicy"``).

Who sees which studies:

* **Superusers and administrators** see every study, including studies that
  belong to no site (an unrecognised (0008,0080) Institution Name). Nobody
  else sees site-less studies unless given one by an explicit study grant:
  an administrator first assigns such a study to a site in the admin.
* **Radiologists, technologists**, and signed-in users who hold no role but
  were made members of a site, see the studies of their sites, plus what an
  unexpired :class:`~portal.models.AccessGrant` gives them (a whole site, or
  one study).
* **Referring clinicians** see only the studies granted to them and the
  studies whose (0008,0090) Referring Physician's Name is their DICOM person
  name; site membership does not widen that. They cannot search the archive.
* **Auditors** see no images at all, not even by a grant (the audit trail is
  in the admin).

**A session limited to a grant scope** (an EHR launch, see
:func:`portal.accounts.sessions.limit_session`) sees the studies of that scope's unexpired grants and
nothing else, whoever the user is: no sites, no other grants, no referring
name, not even an administrator's everything; it cannot search. Grants with a
scope serve only that session: ordinary sessions and bearer tokens never see
them.

A user holding a site-reading role keeps it even when also holding a
restricted one. Grants are compared with the current time at every request,
so an expired grant stops working at once. Inactive and anonymous users see
nothing.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from archive.access import AccessPolicy, Visibility
from archive.dicom.part10 import person_name_search
from archive.models import Site
from portal.accounts.roles import RESTRICTED, SITE_READERS, Role, roles_of
from portal.accounts.sessions import session_scope
from portal.models import AccessGrant, SiteMembership, UserProfile


def _signed_in(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def is_administrator(user: Any) -> bool:
    return _signed_in(user) and (user.is_superuser or Role.ADMINISTRATOR in roles_of(user))


def reads_sites(user: Any) -> bool:
    """Does the user see their sites' studies (not only what was given to them)?"""
    roles = roles_of(user)
    return bool(roles & SITE_READERS) or not (roles & RESTRICTED)


def referring_name(user: Any) -> str:
    """The user's DICOM person name as stored in ``Study.referring_physician_search``."""
    name = UserProfile.objects.filter(user=user).values_list("dicom_person_name", flat=True).first() or ""
    return person_name_search(name.strip()).rstrip("^ ")


class SitePolicy(AccessPolicy):
    """Sites, grants and roles decide; see the module docstring."""

    def visibility(self, user: Any) -> Visibility:
        if not _signed_in(user):
            return Visibility()
        scope = session_scope(user)
        if scope:
            scoped = AccessGrant.objects.filter(
                user=user, scope=scope, study__isnull=False, expires_at__gt=timezone.now()
            ).values_list("study_id", flat=True)
            return Visibility(study_ids=frozenset(s for s in scoped if s is not None))
        if is_administrator(user):
            return Visibility(everything=True)
        roles = roles_of(user)
        if Role.AUDITOR in roles and not (roles - {Role.AUDITOR}):
            return Visibility()
        grants = list(
            AccessGrant.objects.filter(user=user, scope="", expires_at__gt=timezone.now()).values_list(
                "study_id", "site_id"
            )
        )
        study_ids = {study for study, _ in grants if study is not None}
        site_ids: set[int] = set()
        if reads_sites(user):
            site_ids.update(SiteMembership.objects.filter(user=user).values_list("site_id", flat=True))
            site_ids.update(site for _, site in grants if site is not None)
        names: set[str] = set()
        if Role.REFERRING_CLINICIAN in roles:
            name = referring_name(user)
            if name:
                # Trailing empty components ("SMITH^JOHN^^") are the same name.
                names = {name + "^" * n for n in range(4)}
        return Visibility(False, frozenset(site_ids), frozenset(study_ids), frozenset(names))

    def can_search(self, user: Any) -> bool:
        """Archive-wide search is for administrators and site readers, not referring clinicians or auditors."""
        if session_scope(user):
            return False
        return _signed_in(user) and (is_administrator(user) or reads_sites(user))

    def sender_site(self, user: Any) -> Site | None:
        """A sender that belongs to exactly one site stores into that site."""
        if not _signed_in(user):
            return None
        sites = list(SiteMembership.objects.filter(user=user).values_list("site_id", flat=True)[:2])
        return Site.objects.filter(pk=sites[0]).first() if len(sites) == 1 else None
