"""Template filters of the worklist: person names and ages as people read them; the viewer's claim heartbeat."""

from __future__ import annotations

from typing import Any

from django import template

from portal.worklist import claims

register = template.Library()


@register.filter
def reads(user: Any) -> bool:
    """May ``user`` claim studies (and so keep a claim alive from the viewer)?"""
    return claims.may_claim(user)


@register.simple_tag
def heartbeat_seconds() -> int:
    """How often the viewer page beats (:func:`portal.worklist.claims.heartbeat_seconds`)."""
    return claims.heartbeat_seconds()


@register.simple_tag
def claim_idle_seconds() -> int:
    """The claim's idle limit: an open viewer stops beating once its reader did nothing for this long."""
    return int(claims.idle_limit().total_seconds())


@register.filter
def person(value: str) -> str:
    """``DOE^JANE^^DR`` as ``DOE, JANE``: the first component group, family name first (escaped by the template)."""
    alphabetic = (value or "").split("=")[0]
    parts = [p.strip() for p in alphabetic.split("^")]
    family, given = (parts + ["", ""])[:2]
    return f"{family}, {given}" if family and given else family or given


@register.filter
def age(value: str) -> str:
    """(0010,1010) ``045Y`` as ``45 y``; days, weeks and months likewise."""
    units = {"Y": "y", "M": "mo", "W": "wk", "D": "d"}
    if len(value or "") == 4 and value[:3].isdigit() and value[3] in units:
        return f"{int(value[:3])} {units[value[3]]}"
    return value or ""


@register.filter
def isodate(value: str) -> str:
    """A DA value ``20240115`` as ``2024-01-15``."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value or "") == 8 and value.isdigit() else value or ""
