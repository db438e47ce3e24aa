"""Routing of arriving studies to reader groups by the administrators' :class:`RoutingRule` rows."""

from __future__ import annotations

from django.contrib.auth.models import Group

from portal.worklist.models import RoutingRule


def route(site_id: int | None, modalities: str, body_part: str) -> Group | None:
    """The group of the first enabled rule (lowest order) that matches, or None."""
    for rule in RoutingRule.objects.filter(enabled=True).select_related("group"):
        if rule.matches(site_id, modalities, body_part):
            return rule.group
    return None
