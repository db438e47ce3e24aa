"""The access policy: which studies a user may see and what they may do.

Every DICOMweb view, the study search, the worklist and the viewer ask this
module and nothing else. The implementation is chosen by dotted path in
``settings.PACS_ACCESS_POLICY`` so the portal can supply site-based rules
without the archive importing the portal. The default here lets any active
signed-in user read everything and leaves writes to permission holders.

A policy may also describe a user's reach as a :class:`Visibility`: plain
values (sites, studies, referring names) that a hot path such as a frame read
tests in one SQL statement instead of building an ORM query. When a policy
does, its :meth:`AccessPolicy.studies` is derived from that same description,
so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils.module_loading import import_string

from archive.models import Site, Study


@dataclass(frozen=True)
class Visibility:
    """The studies one user may see right now, as plain values.

    Studies in the trash (:attr:`Study.trashed_at`) are never part of it.
    Either ``everything``, or the union of the studies of ``site_ids``, the
    studies ``study_ids`` and the studies whose referring physician's name
    (search form, ``Study.referring_physician_search``) is one of
    ``referring_names``. Computed per request, so expiring grants and
    membership changes take effect on the next request.
    """

    everything: bool = False
    site_ids: frozenset[int] = frozenset()
    study_ids: frozenset[int] = frozenset()
    referring_names: frozenset[str] = frozenset()

    def studies(self) -> QuerySet[Study]:
        """The same set as a queryset."""
        allowed = self.condition()
        return Study.objects.filter(allowed) if allowed is not None else Study.objects.none()

    def condition(self, study: str = "") -> Q | None:
        """The same set as a filter on the study reached by the relation path ``study`` (``""``: the study itself).

        None when nothing is visible; for everything, only "not in the trash". A model that
        points to its study (the worklist's rows) filters by a join this way, instead of an
        ``IN (subquery)`` that some databases materialise in full.
        """
        prefix = f"{study}__" if study else ""
        kept = Q(**{f"{prefix}trashed_at__isnull": True})
        if self.everything:
            return kept
        allowed = Q()
        if self.site_ids:
            allowed |= Q(**{f"{prefix}site_id__in": sorted(self.site_ids)})
        if self.study_ids:
            allowed |= Q(**{f"{prefix}pk__in": sorted(self.study_ids)})
        if self.referring_names:
            allowed |= Q(**{f"{prefix}referring_physician_search__in": sorted(self.referring_names)})
        return (kept & allowed) if allowed else None

    def where(self, alias: str, quote: Callable[[str], str]) -> tuple[str, list[Any]]:
        """The same set as a SQL condition on the study table named ``alias``, with its parameters."""
        column = {f.name: quote(str(f.column)) for f in Study._meta.concrete_fields}
        kept = f"{alias}.{column['trashed_at']} IS NULL"
        if self.everything:
            return kept, []
        parts: list[str] = []
        params: list[Any] = []
        for name, values in (
            ("site", self.site_ids),
            ("id", self.study_ids),
            ("referring_physician_search", self.referring_names),
        ):
            if values:
                parts.append(f"{alias}.{column[name]} IN ({', '.join(['%s'] * len(values))})")
                params += sorted(values)
        return (f"{kept} AND (" + " OR ".join(parts) + ")", params) if parts else ("1 = 0", [])


class AccessPolicy:
    """Base class: override :meth:`studies` (or :meth:`visibility`); the rest have sensible defaults."""

    def visibility(self, user: Any) -> Visibility | None:
        """The user's reach as plain values, or None if this policy cannot say it that way."""
        return None

    def studies(self, user: Any) -> QuerySet[Study]:
        seen = self.visibility(user)
        if seen is None:
            raise NotImplementedError("an access policy overrides studies() or visibility()")
        return seen.studies()

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

    def visibility(self, user: Any) -> Visibility:
        return Visibility(everything=bool(user is not None and user.is_authenticated and user.is_active))


@cache
def policy() -> AccessPolicy:
    cls = import_string(settings.PACS_ACCESS_POLICY)
    return cls()


def visible_studies(user: Any) -> QuerySet[Study]:
    """The studies ``user`` may see: the one queryset every read starts from (never a study in the trash)."""
    return policy().studies(user).filter(trashed_at__isnull=True)


def visibility(user: Any) -> Visibility | None:
    """The studies ``user`` may see as plain values, when the policy can say so (see :class:`Visibility`).

    None when the policy's class overrides :meth:`AccessPolicy.studies`: then
    that queryset is the rule (a subclass may narrow it), and a
    :class:`Visibility` inherited from a parent class could say more.
    """
    chosen = policy()
    if type(chosen).studies is not AccessPolicy.studies:
        return None
    return chosen.visibility(user)


def site_studies(site: Site) -> QuerySet[Study]:
    """The studies of ``site``: what a DICOM device of that site may see (a device is no user of the policy)."""
    return Visibility(site_ids=frozenset({site.pk})).studies()


def can_see_study(user: Any, study_instance_uid: str) -> bool:
    return visible_studies(user).filter(study_instance_uid=study_instance_uid).exists()
