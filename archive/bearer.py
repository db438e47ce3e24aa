"""Bearer tokens: the user an ``Authorization: Bearer`` header names, for every machine-facing API.

DICOMweb (:mod:`archive.dicomweb.auth`) and FHIR (:mod:`archive.fhir.http`)
accept the archive's API tokens (:class:`archive.models.ApiToken`, stored
only as a hash) this one way. Tokens are never accepted in a URL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import BooleanField, Field
from django.http import HttpRequest
from django.utils import timezone

from archive.models import ApiToken, hash_token
from pacs.lib.sql import per_vendor


def user_from_bearer(request: HttpRequest) -> Any | None:
    """The active user of a usable bearer token in the Authorization header, or None.

    One statement reads the token's state and its user together; the user is
    built without the ORM's query machinery (this runs on every DICOMweb
    request). Nothing is cached: a revoked or expired token, or a deactivated
    user, is refused from the next request on.
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return None
    connection = connections[router.db_for_read(ApiToken)]
    lookup = _token_lookup(connection)
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(lookup.sql, [adapt(now), adapt(now - TOUCH_EVERY), hash_token(raw.strip())])
        row = cursor.fetchone()
    if row is None:
        return None
    token_pk, revoked, expired, stale, *values = row
    if revoked or expired:
        return None
    user = lookup.build(connection.alias, values)
    if not user.is_active:
        return None
    if stale:
        ApiToken.objects.filter(pk=token_pk).update(last_used_at=now)
    return user


#: ``ApiToken.last_used_at`` is refreshed at most this often (it is informational).
TOUCH_EVERY = timedelta(seconds=60)
#: User fields read with the token: plain values that need no database converter.
_PLAIN_TYPES = {"AutoField", "BigAutoField", "IntegerField", "CharField", "EmailField", "TextField", "BooleanField"}


@dataclass(frozen=True)
class _TokenLookup:
    sql: str
    fields: tuple[Field[Any, Any], ...]

    def build(self, alias: str, values: list[Any]) -> Any:
        values = [
            bool(v) if isinstance(f, BooleanField) and v is not None else v
            for f, v in zip(self.fields, values, strict=True)
        ]
        user_model = get_user_model()
        return user_model.from_db(alias, [f.attname for f in self.fields], values)


@per_vendor
def _token_lookup(q: Callable[[str], str]) -> _TokenLookup:
    user_model = get_user_model()
    fields = tuple(
        f for f in user_model._meta.concrete_fields if f.get_internal_type() in _PLAIN_TYPES and f.attname != "password"
    )
    token = {f.attname: q(str(f.column)) for f in ApiToken._meta.concrete_fields}
    columns = ", ".join(f"u.{q(str(f.column))}" for f in fields)
    # Only model metadata is interpolated (quoted names); values are parameters.
    sql = (
        f"SELECT t.{token['id']}, t.{token['revoked']}, "  # noqa: S608
        f"(t.{token['expires_at']} IS NOT NULL AND t.{token['expires_at']} <= %s), "
        f"(t.{token['last_used_at']} IS NULL OR t.{token['last_used_at']} < %s), {columns} "
        f"FROM {q(ApiToken._meta.db_table)} t JOIN {q(user_model._meta.db_table)} u "
        f"ON u.{q(str(user_model._meta.pk.column))} = t.{token['user_id']} "  # type: ignore[union-attr]
        f"WHERE t.{token['token_hash']} = %s"
    )
    return _TokenLookup(sql, fields)
