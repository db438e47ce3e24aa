"""Bearer tokens: the user an ``Authorization: Bearer`` header names, for every machine-facing API.

DICOMweb (:mod:`archive.dicomweb.auth`) and FHIR (:mod:`archive.fhir.http`)
accept the archive's API tokens (:class:`archive.models.ApiToken`, stored
only as a hash) this one way. Tokens are never accepted in a URL.

Other kinds of bearer token (a SMART access token issued by an EHR's
authorization server) are accepted by the validators named in
``settings.PACS_BEARER_VALIDATORS`` (dotted paths of :class:`BearerValidator`
subclasses, like ``PACS_ACCESS_POLICY``), so the archive imports none of
them: :func:`authenticate_bearer` tries the API tokens first, then each
validator; the first that recognises the token decides (a user, or a 401/403
with a reason). Only the ``Bearer`` scheme ever reaches a validator (never
``Basic`` credentials), and never one of the archive's own API tokens (by
its ``pacs_`` prefix or its stored hash), even a revoked or expired one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import BooleanField, Field
from django.http import HttpRequest
from django.utils import timezone
from django.utils.module_loading import import_string

from archive.models import ApiToken, hash_token
from pacs.lib.sql import per_vendor


@dataclass(frozen=True)
class Bearer:
    """What a bearer token is worth: a ``user``, or a refusal (``status`` 401 or 403 and why)."""

    user: Any | None
    status: int = 200
    detail: str = ""


class BearerValidator:
    """One more kind of bearer token; override :meth:`authenticate`."""

    def authenticate(self, request: HttpRequest, token: str) -> Bearer | None:
        """None if the token is not of this kind; else the user it stands for, or a refusal."""
        raise NotImplementedError


@cache
def _validators(paths: tuple[str, ...]) -> tuple[BearerValidator, ...]:
    return tuple(import_string(path)() for path in paths)


def authenticate_bearer(request: HttpRequest) -> Bearer:
    """The user of the request's bearer token (an API token, or one a configured validator accepts), or a refusal."""
    user = user_from_bearer(request)
    if user is not None:
        return Bearer(user)
    scheme, _, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    raw = raw.strip()
    if scheme.lower() == "bearer" and raw and not _is_archive_token(raw):
        for validator in _validators(tuple(getattr(settings, "PACS_BEARER_VALIDATORS", ()))):
            answer = validator.authenticate(request, raw)
            if answer is not None:
                return answer
    return Bearer(None, 401, "Invalid or expired token")


#: Every API token this archive issues starts so (:meth:`archive.models.ApiToken.issue`).
ARCHIVE_TOKEN_PREFIX = "pacs_"


def _is_archive_token(raw: str) -> bool:
    """Whether ``raw`` is (or looks like) one of this archive's API tokens, usable or not.

    Such a token, even revoked or expired, is never shown to a validator: a
    validator may send what it is given to another server (an EHR's token
    introspection endpoint).
    """
    return raw.startswith(ARCHIVE_TOKEN_PREFIX) or ApiToken.objects.filter(token_hash=hash_token(raw)).exists()


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
