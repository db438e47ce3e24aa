"""DICOM wildcard matching in SQL: a ``wildcard`` lookup and person-name group transforms.

PS3.4 C.2.2.2.4 wildcards (``*`` any sequence, ``?`` one character, every other
character literal and case-sensitive) compile to the database's own pattern
matcher instead of a regular expression: ``GLOB`` on SQLite (case-sensitive,
character-wise on UTF-8; its matcher stops retrying a ``*`` once a later
``*`` has run out of text, which bounds it by value length times pattern
length) and ``LIKE ... ESCAPE '\\'`` elsewhere (PostgreSQL's ``MatchText``
has the same early abort). A Python ``re`` pattern such as
``^.*A.*A.*A.*B$`` backtracks exponentially in the number of ``*``; neither
engine does. Runs of ``*`` are collapsed first.

``pn_ideographic`` and ``pn_phonetic`` pick the second and third component
group of a person name stored as ``Alphabetic=Ideographic=Phonetic`` (NULL when
the value has no such group), so that a group is matched on its own and a
``*`` cannot run across ``=``. :func:`register` installs all three on
``CharField`` and ``TextField``; :class:`archive.apps.ArchiveConfig` calls it.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import CharField, Lookup, TextField, Transform
from django.db.models.sql.compiler import SQLCompiler

_STARS = re.compile(r"\*{2,}")
_GLOB = {"*": "*", "?": "?", "[": "[[]"}
_LIKE = {"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\"}


def glob_pattern(value: str) -> str:
    """A DICOM wildcard value as an SQLite GLOB pattern (``[`` is the only other special character)."""
    return "".join(_GLOB.get(ch, ch) for ch in _STARS.sub("*", value))


def like_pattern(value: str) -> str:
    """A DICOM wildcard value as a LIKE pattern with ``\\`` as the escape character."""
    return "".join(_LIKE.get(ch, ch) for ch in _STARS.sub("*", value))


SQL = tuple[str, list[Any]]


class Wildcard(Lookup):  # type: ignore[type-arg]
    """``field__wildcard="D?E^*"``: the whole value matches the DICOM wildcard pattern."""

    lookup_name = "wildcard"
    can_use_none_as_rhs = False

    def _lhs(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> SQL:
        if not isinstance(self.rhs, str):
            raise TypeError("the wildcard lookup takes a literal pattern string")
        sql, params = self.process_lhs(compiler, connection)
        return sql, list(params)

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> SQL:  # type: ignore[override]
        lhs, params = self._lhs(compiler, connection)
        return f"{lhs} LIKE %s ESCAPE '\\'", [*params, like_pattern(self.rhs)]

    def as_sqlite(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> SQL:
        lhs, params = self._lhs(compiler, connection)
        return f"{lhs} GLOB %s", [*params, glob_pattern(self.rhs)]


class NameGroup(Transform):
    """Component group ``index`` (0 alphabetic, 1 ideographic, 2 phonetic) of a PN value, or NULL."""

    index = 0

    def as_sql(  # type: ignore[override]
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> SQL:
        # PostgreSQL: an array subscript past the end is NULL.
        lhs, params = compiler.compile(self.lhs)
        return f"(string_to_array({lhs}, '='))[{self.index + 1}]", list(params)

    def as_sqlite(  # type: ignore[override]
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> SQL:
        sql, params = compiler.compile(self.lhs)
        rest: SQL = (sql, list(params))
        for _ in range(self.index):  # drop one group; NULL when there is no '=' left
            s, p = rest
            rest = (f"substr({s}, nullif(instr({s}, '='), 0) + 1)", p * 2)
        s, p = rest  # then keep up to the next '=' (NULL stays NULL)
        return f"substr({s}, 1, instr({s} || '=', '=') - 1)", p * 2


class IdeographicGroup(NameGroup):
    lookup_name = "pn_ideographic"
    index = 1


class PhoneticGroup(NameGroup):
    lookup_name = "pn_phonetic"
    index = 2


def register() -> None:
    """Make ``__wildcard``, ``__pn_ideographic`` and ``__pn_phonetic`` available on text fields."""
    for field in (CharField, TextField):
        for lookup in (Wildcard, IdeographicGroup, PhoneticGroup):
            field.register_lookup(lookup)
