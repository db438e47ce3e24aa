"""The access policy: which studies a user may see and what they may do.

Every DICOMweb view, the study search, the worklist and the viewer ask this
module and nothing else. The implementation is chosen by dotted path in
``settings.PACS_ACCESS_POLICY`` so the portal can supply site-based rules
without the archive importing the portal. The default here lets any active
signed-in user read everything and leaves writes to permission holders.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from archive.models import Site, Study


class AccessPolicy:
    """Base class: override :meth:`studies`; the rest have sensible defaults."""

    def studies(self, user: Any) -> QuerySet[Study]:
        raise NotImplementedError

    def can_search(self, user: Any) -> bool:
        """May the user search across the archive (QIDO without a study UID)?"""
        return bool(user and user.is_active)

    def can_store(self, user: Any) -> bool:
        return bool(user and user.is_active and user.has_perm("archive.add_instance"))

    def can_delete(self, user: Any) -> bool:
        return bool(user and user.is_active and user.has_perm("archive.delete_study"))

    def sender_site(self, user: Any) -> Site | None:
        """The site a new study sent by ``user`` belongs to, if the sender decides it."""
        return None


class AuthenticatedPolicy(AccessPolicy):
    """Every active, authenticated user sees every study."""

    def studies(self, user: Any) -> QuerySet[Study]:
        if user is None or not user.is_authenticated or not user.is_active:
            return Study.objects.none()
        return Study.objects.all()


@cache
def policy() -> AccessPolicy:
    cls = import_string(settings.PACS_ACCESS_POLICY)
    return cls()


def visible_studies(user: Any) -> QuerySet[Study]:
    """The studies ``user`` may see: the one queryset every read starts from."""
    return policy().studies(user)


def can_see_study(user: Any, study_instance_uid: str) -> bool:
    return visible_studies(user).filter(study_instance_uid=study_instance_uid).exists()
