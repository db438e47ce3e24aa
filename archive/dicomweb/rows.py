"""The instance lookups of the WADO resources: rows of one study, series or instance the user may see.

Retrieve, metadata and frame requests run these on every call, and building
the ORM query cost more than running it. When the access policy states the
user's reach as plain values (:class:`~archive.access.Visibility`) the
SQL string is built once per shape, cached, and run as one parameterised
query (the database parses it each time: it is not a server-side prepared
statement); otherwise the ORM builds it from the policy's queryset
(:func:`instances`). Both forms return the same rows in the same order.
Callers name what they read as a :class:`~typing.NamedTuple` (:func:`named_rows`)
so no row is indexed by position.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from django.db import connections, router
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from archive.access import visibility, visible_studies
from archive.models import Instance, Patient, Series, Study

#: The one column of another table a lookup may name, as ``values_list`` names it.
PATIENT_ID = "series__study__patient__patient_id"
#: The columns of named-row fields whose names are not the instance's own fields.
COLUMNS = {"patient_id": PATIENT_ID}

#: A NamedTuple class: its field names say which columns to read, in order.
R = TypeVar("R", bound=tuple[Any, ...])


def instances(
    request: HttpRequest, study: str, series: str | None = None, instance: str | None = None
) -> QuerySet[Instance]:
    """The instances under a URL the user may see, in series then instance order."""
    studies: QuerySet[Study] = visible_studies(request.user).filter(study_instance_uid=study)
    qs = Instance.objects.filter(series__study__in=studies.values("pk"))
    if series is not None:
        qs = qs.filter(series__series_instance_uid=series)
    if instance is not None:
        qs = qs.filter(sop_instance_uid=instance)
    return qs.order_by("series__series_number", "series_id", "instance_number", "pk")


def named_rows(request: HttpRequest, study: str, series: str | None, instance: str | None, row: type[R]) -> list[R]:
    """The rows of :func:`instance_rows` as ``row`` NamedTuples, one column per field (see :data:`COLUMNS`)."""
    named: Any = row  # a NamedTuple class; mypy cannot bound a type variable by one
    fields = tuple(COLUMNS.get(name, name) for name in named._fields)
    return list(map(named._make, instance_rows(request, study, series, instance, fields)))


def instance_rows(
    request: HttpRequest, study: str, series: str | None, instance: str | None, fields: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """``instances(...).values_list(*fields)``, as one cached SQL string when the policy allows.

    ``fields`` are plain columns of the instance (no JSON) or :data:`PATIENT_ID`.
    """
    seen = visibility(request.user)
    if seen is None:
        return list(instances(request, study, series, instance).values_list(*fields))
    alias = router.db_for_read(Instance) or "default"
    connection = connections[alias]
    where, where_params = seen.where("st", connection.ops.quote_name)
    select = tuple(column_sql(alias, name) for name in fields)
    sql = rows_sql(alias, select, series is not None, instance is not None, where)
    keys = [key for key in (study, series, instance) if key is not None]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*keys, *where_params])
        return cursor.fetchall()


@functools.lru_cache(maxsize=64)
def column_sql(alias: str, name: str) -> str:
    """The SQL of one plain column of the instance (alias ``i``), or of :data:`PATIENT_ID` (alias ``pa``)."""
    if name == PATIENT_ID:
        return f"pa.{_column(alias, Patient, 'patient_id')}"
    field = Instance._meta.get_field(name)
    if field.get_internal_type() == "JSONField" or field.is_relation:
        raise ValueError(f"{name} is not a plain column of the instance")
    return f"i.{_column(alias, Instance, name)}"


def _column(alias: str, model: type[Model], name: str) -> str:
    return connections[alias].ops.quote_name(str(model._meta.get_field(name).column))  # type: ignore[union-attr]


@functools.lru_cache(maxsize=256)
def rows_sql(alias: str, select: tuple[str, ...], by_series: bool, by_instance: bool, where: str) -> str:
    """SELECT ``select`` from the instances of one study (series, instance) the condition ``where`` lets through.

    Parameters, in order: those of ``select``, the study UID, the series UID
    and the SOP Instance UID (when asked for), then those of ``where``. Rows
    come in :func:`instances`'s order.
    """
    quote = connections[alias].ops.quote_name
    column = functools.partial(_column, alias)
    i, se, st, pa = (quote(m._meta.db_table) for m in (Instance, Series, Study, Patient))
    keys = [f"st.{column(Study, 'study_instance_uid')} = %s"]
    if by_series:
        keys.append(f"se.{column(Series, 'series_instance_uid')} = %s")
    if by_instance:
        keys.append(f"i.{column(Instance, 'sop_instance_uid')} = %s")
    # Only model metadata and the policy's fixed condition text are interpolated; values are parameters.
    return (
        f"SELECT {', '.join(select)} "  # noqa: S608
        f"FROM {i} i JOIN {se} se ON se.{column(Series, 'id')} = i.{column(Instance, 'series')} "
        f"JOIN {st} st ON st.{column(Study, 'id')} = se.{column(Series, 'study')} "
        f"JOIN {pa} pa ON pa.{column(Patient, 'id')} = st.{column(Study, 'patient')} "
        f"WHERE {' AND '.join(keys)} AND {where} "
        f"ORDER BY se.{column(Series, 'series_number')}, i.{column(Instance, 'series')}, "
        f"i.{column(Instance, 'instance_number')}, i.{column(Instance, 'id')}"
    )
