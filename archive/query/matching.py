"""Query matching for QIDO-RS and C-FIND: query keys into matchers, matchers into filters.

Matching follows PS3.4 C.2.2.2 as profiled by PS3.18 §8.3.4: single value,
``*``/``?`` wildcards, DA/TM ranges, UID lists, case-insensitive person names
and ``fuzzymatching``. :func:`parse_query` validates the query string (a
malformed value is a :class:`BadQuery` naming the parameter, answered with
400; an unsupported key is noted in ``Query.ignored``), and
:func:`search_queryset` turns the matchers into ``Q`` filters on indexed
columns, starting from :func:`archive.access.visible_studies`. C-FIND builds
the same :class:`Query` from its identifier (:func:`parse_query_values`) and
searches the studies its device may see (:func:`matching_queryset` on
:func:`archive.access.site_studies`). Wildcards
compile to the database's own GLOB / LIKE (:mod:`archive.query.lookups`), which take
polynomial time, never to a backtracking regular expression.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from pydicom.datadict import tag_for_keyword

from archive.access import visible_studies
from archive.dicom.uid import is_valid_uid
from archive.models import Instance, Patient, PersonNameWord, Series, Study


class Level(enum.IntEnum):
    """A level of the DICOM information model, from the top; a key matches at its own level and every one below.

    QIDO-RS searches at STUDY, SERIES and INSTANCE (PS3.18 §10.6). C-FIND
    shares this module: (0008,0052) Query/Retrieve Level names the same levels,
    INSTANCE as "IMAGE" (:meth:`from_query_retrieve_level`); the Study Root
    model starts at STUDY and the Patient Root model at PATIENT (PS3.4 C.6).
    The patient's attributes are PATIENT-level keys, so a search at STUDY or
    below (QIDO-RS, Study Root) matches them on each study's patient.
    """

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    INSTANCE = 3

    @classmethod
    def from_query_retrieve_level(cls, value: str) -> Level:
        """The level a (0008,0052) Query/Retrieve Level value names; ValueError for any other value."""
        if value == "IMAGE":
            return cls.INSTANCE
        if value in ("PATIENT", "STUDY", "SERIES"):
            return cls[value]
        raise ValueError(f"{value!r} is not a Query/Retrieve Level")

    @property
    def query_retrieve_level(self) -> str:
        """This level as (0008,0052) Query/Retrieve Level names it."""
        return "IMAGE" if self is Level.INSTANCE else self.name


MAX_VALUE_LENGTH = 256  # longer than any PN/LO/SH a query can sensibly carry
MAX_UIDS = 1000
SPECIAL_PARAMS = {"limit", "offset", "includefield", "fuzzymatching", "accept", "charset"}


@dataclass(frozen=True)
class Key:
    """A supported matching key: its level, ORM path on that level's model and kind."""

    level: Level
    path: str
    kind: str  # pn, da, tm, ui, str, cs, int, modalities
    raw_path: str = ""  # PN only: the column as received (for ideographic/phonetic groups)


MATCHING: dict[str, Key] = {
    "00100010": Key(Level.PATIENT, "patient__patient_name_search", "pn", "patient__patient_name"),
    "00100020": Key(Level.PATIENT, "patient__patient_id", "str"),
    "00100021": Key(Level.PATIENT, "patient__issuer_of_patient_id", "str"),
    "00100030": Key(Level.PATIENT, "patient__patient_birth_date", "da"),
    "00100040": Key(Level.PATIENT, "patient__patient_sex", "cs"),
    "0020000D": Key(Level.STUDY, "study_instance_uid", "ui"),
    "00080020": Key(Level.STUDY, "study_date", "da"),
    "00080030": Key(Level.STUDY, "study_time", "tm"),
    "00080050": Key(Level.STUDY, "accession_number", "str"),
    "00200010": Key(Level.STUDY, "study_id", "str"),
    "00081030": Key(Level.STUDY, "study_description", "str"),
    "00080090": Key(Level.STUDY, "referring_physician_search", "pn", "referring_physician_name"),
    "00080080": Key(Level.STUDY, "institution_name", "str"),
    "00080061": Key(Level.STUDY, "modality", "modalities"),
    "0020000E": Key(Level.SERIES, "series_instance_uid", "ui"),
    "00080060": Key(Level.SERIES, "modality", "cs"),
    "00200011": Key(Level.SERIES, "series_number", "int"),
    "0008103E": Key(Level.SERIES, "series_description", "str"),
    "00080021": Key(Level.SERIES, "series_date", "da"),
    "00080031": Key(Level.SERIES, "series_time", "tm"),
    "00180015": Key(Level.SERIES, "body_part_examined", "cs"),
    "00080018": Key(Level.INSTANCE, "sop_instance_uid", "ui"),
    "00080016": Key(Level.INSTANCE, "sop_class_uid", "ui"),
    "00200013": Key(Level.INSTANCE, "instance_number", "int"),
    "00280008": Key(Level.INSTANCE, "number_of_frames", "int"),
    "00280010": Key(Level.INSTANCE, "rows", "int"),
    "00280011": Key(Level.INSTANCE, "columns", "int"),
    "00080056": Key(Level.INSTANCE, "availability", "cs"),
}

DA_RE = re.compile(r"^\d{8}\Z")
TM_RE = re.compile(r"^([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?\Z")
TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}\Z")
INT_RE = re.compile(r"^[+-]?\d{1,10}\Z")
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9.]{1,64}\Z")


class BadQuery(ValueError):
    """A query parameter the server cannot understand: answered with 400."""


# --------------------------------------------------------------------------- parsing


def tag_of(name: str) -> str | None:
    """``"PatientName"`` or ``"00100010"`` -> ``"00100010"``; None if neither."""
    if TAG_RE.match(name):
        return name.upper()
    tag = tag_for_keyword(name) if name.isidentifier() else None
    return f"{tag:08X}" if tag is not None else None


@dataclass
class Query:
    """A parsed QIDO request."""

    level: Level
    matches: list[tuple[str, Key, str]] = field(default_factory=list)  # tag, key, value
    returned: set[str] = field(default_factory=set)  # query keys and includefield tags
    include_all: bool = False
    fuzzy: bool = False
    limit: int = 0
    offset: int = 0
    server_limited: bool = False
    ignored: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # tag -> the name the request gave it (for messages)


def _check_value(name: str, value: str, max_length: int = MAX_VALUE_LENGTH) -> str:
    if len(value) > max_length:
        raise BadQuery(f"{name}: value longer than {max_length} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise BadQuery(f"{name}: value contains control characters")
    return value


def _number(name: str, raw: str, maximum: int) -> int:
    if not re.fullmatch(r"\d{1,18}", raw.strip()):
        raise BadQuery(f"{name} must be a non-negative integer of at most 18 digits")
    return min(int(raw), maximum)


def parse_query(request: HttpRequest, level: Level) -> Query:
    """Validate the query string; raise :class:`BadQuery` for anything malformed."""
    query = Query(level)
    params = request.GET
    fuzzy = params.getlist("fuzzymatching")
    if fuzzy:
        if len(fuzzy) > 1 or fuzzy[0].lower() not in ("true", "false"):
            raise BadQuery("fuzzymatching must be true or false")
        query.fuzzy = fuzzy[0].lower() == "true"
    maximum = settings.PACS_QIDO_MAX_LIMIT
    limits = params.getlist("limit")
    if len(limits) > 1:
        raise BadQuery("limit given more than once")
    if limits:
        requested = _number("limit", limits[0], 10**18)
        if requested == 0:
            raise BadQuery("limit must be a positive integer")
        query.limit = min(requested, maximum)
        query.server_limited = requested > maximum
    else:
        query.limit = min(settings.PACS_QIDO_DEFAULT_LIMIT, maximum)
        query.server_limited = True
    offsets = params.getlist("offset")
    if len(offsets) > 1:
        raise BadQuery("offset given more than once")
    if offsets:
        query.offset = _number("offset", offsets[0], 10**18)
        if query.offset > 2**31:
            raise BadQuery("offset is out of range")
    for raw in params.getlist("includefield"):
        for item in filter(None, (p.strip() for p in _check_value("includefield", raw, 4096).split(","))):
            if item.lower() == "all":
                query.include_all = True
                continue
            tag = tag_of(item)
            if tag is None:
                raise BadQuery(f"includefield: {item[:64]!r} is neither a DICOM keyword nor a tag")
            query.returned.add(tag)
    values: dict[str, str] = {}
    for name in params:
        if name in SPECIAL_PARAMS:
            continue
        given = params.getlist(name)
        if len(given) > 1:
            tag = tag_of(name)
            key = MATCHING.get(tag) if tag else None
            if key is not None and key.level <= level:
                raise BadQuery(f"{name} given more than once")
        values[name] = given[0]
    add_matches(query, values)
    return query


def parse_query_values(values: Mapping[str, str], level: Level) -> Query:
    """A query at ``level`` from matching keys (keywords or tags) and their values, as C-FIND's identifier gives them.

    The same validation as :func:`parse_query` (a :class:`BadQuery` for a
    malformed value); an unsupported key is noted in ``Query.ignored``.
    """
    query = Query(level)
    add_matches(query, values)
    return query


def add_matches(query: Query, values: Mapping[str, str]) -> None:
    """Add to ``query`` the matching keys of ``values`` (name -> value); note the unsupported ones."""
    for name, raw in values.items():
        tag = tag_of(name)
        key = MATCHING.get(tag) if tag else None
        if tag is None or key is None or key.level > query.level:
            query.ignored.append(name if SAFE_NAME_RE.match(name) else "(unrecognised parameter)")
            continue
        limit = MAX_UIDS * 65 if key.kind == "ui" else MAX_VALUE_LENGTH
        value = _check_value(name, raw, limit)
        query.returned.add(tag)
        query.names[tag] = name
        query.matches.append((tag, key, value))


# --------------------------------------------------------------------------- matching


def _successor(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def prefix_q(path: str, prefix: str) -> Q:
    """Values of ``path`` starting with ``prefix``, case-sensitively and by an index.

    PostgreSQL's LIKE uses the ``varchar_pattern_ops`` index Django creates for
    indexed CharFields; SQLite's LIKE is case-insensitive and skips indexes, so
    there a range on the binary-collated column does the same.
    """
    if not prefix:
        return Q()
    if connection.vendor == "sqlite":
        return Q(**{f"{path}__gte": prefix, f"{path}__lt": _successor(prefix)})
    return Q(**{f"{path}__startswith": prefix})


def has_wildcard(value: str) -> bool:
    """Whether a value holds a DICOM wildcard (``*`` or ``?``)."""
    return "*" in value or "?" in value


def string_q(path: str, value: str) -> Q:
    """Single value or wildcard matching of a string column.

    The literal part before the first wildcard is an index range
    (:func:`prefix_q`); the rest is the ``__wildcard`` lookup of
    :mod:`archive.query.lookups` (GLOB / LIKE, never a backtracking regex).
    """
    if not has_wildcard(value):
        return Q(**{path: value})
    if value.strip("*") == "":
        return Q()
    literal = re.split(r"[*?]", value, maxsplit=1)[0]
    if value == literal + "*":
        return prefix_q(path, literal)
    return prefix_q(path, literal) & Q(**{f"{path}__wildcard": value})


GROUPS = ("", "pn_ideographic", "pn_phonetic")  # transforms of archive.query.lookups, by group index


def pn_q(key: Key, value: str, fuzzy: bool) -> Q:
    """Person name matching: case-insensitive on the alphabetic group, literal on the others.

    The ideographic and phonetic groups are matched one group at a time on the
    name as received, so a ``*`` never runs across ``=``.
    """
    groups = value.split("=")
    if len(groups) > 3:
        raise BadQuery("a person name has at most three component groups")
    alphabetic = groups[0].upper()
    q = Q()
    if alphabetic:
        if fuzzy:
            for term in filter(None, re.split(r"[\^ ]+", alphabetic)):
                q &= fuzzy_term_q(key, term)
        elif has_wildcard(alphabetic):
            q &= string_q(key.path, alphabetic)
        else:
            trimmed = alphabetic.rstrip("^")
            q &= Q(**{f"{key.path}__in": [trimmed + "^" * n for n in range(5)]})
    for index, group in enumerate(groups[1:], start=1):
        if group:
            q &= Q(**{f"{key.raw_path}__{GROUPS[index]}__wildcard": group})
    if len(groups) == 1 and any(ord(ch) > 0x24F for ch in value) and not fuzzy:
        # A CJK name without '=' may be the ideographic or phonetic group.
        q |= Q(**{f"{key.raw_path}__{GROUPS[1]}__wildcard": value})
        q |= Q(**{f"{key.raw_path}__{GROUPS[2]}__wildcard": value})
    return q


def fuzzy_term_q(key: Key, term: str) -> Q:
    """One fuzzy query word: the start of some word of the name.

    The literal part before any wildcard is a range on the indexed
    :class:`~archive.models.PersonNameWord` table (filled at ingest), so the
    search no longer reads every name; a term with wildcards also keeps the
    exact match on the name itself: the term then anything, at the start of
    the name or after a space or ``^``.
    """
    body = term.rstrip("*") + "*"
    pattern = Q()
    for start in ("", "* ", "*^"):
        pattern |= Q(**{f"{key.path}__wildcard": start + body})
    literal = re.split(r"[*?]", term, maxsplit=1)[0][:64]
    if not literal:
        return pattern
    owner = "patient" if key.path.endswith("patient_name_search") else "study"
    words = PersonNameWord.objects.filter(
        **{f"{owner}__isnull": False, "word__gte": literal, "word__lt": _successor(literal)}
    ).values(f"{owner}_id")
    parent = key.path.rsplit("__", 1)[0] if "__" in key.path else ""
    match = Q(**{f"{parent}__in" if parent else "pk__in": words})
    return match if literal == term.rstrip("*") else match & pattern


def _date(name: str, value: str) -> str:
    if not DA_RE.match(value):
        raise BadQuery(f"{name}: {value[:32]!r} is not a date (YYYYMMDD)")
    try:
        datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise BadQuery(f"{name}: {value!r} is not a valid calendar date") from None
    return value


def _time(name: str, value: str) -> str:
    if not TM_RE.match(value):
        raise BadQuery(f"{name}: {value[:32]!r} is not a time (HHMMSS.FFFFFF)")
    return value


def range_q(path: str, kind: str, name: str, value: str) -> Q:
    """DA/TM single value or range (``A-B``, ``A-``, ``-B``); an upper time bound is inclusive."""
    check = _date if kind == "da" else _time
    if "-" not in value:
        low = high = check(name, value)
    else:
        low, _, high = value.partition("-")
        if "-" in high or not (low or high):
            raise BadQuery(f"{name}: {value[:40]!r} is not a valid range")
        low, high = low and check(name, low), high and check(name, high)
    q = Q()
    if low:
        q &= Q(**{f"{path}__gte": low})
    if high:
        # "~" sorts after digits and '.': 0930 as an upper bound keeps 093000.5
        q &= Q(**{f"{path}__lte": high + ("~" if kind == "tm" else "")})
    return q & ~Q(**{path: ""})


def uid_list(name: str, value: str) -> list[str]:
    uids = [u.strip() for u in re.split(r"[,\\]", value) if u.strip()]
    if len(uids) > MAX_UIDS:
        raise BadQuery(f"{name}: more than {MAX_UIDS} UIDs")
    for uid in uids:
        if not is_valid_uid(uid):
            raise BadQuery(f"{name}: {uid[:80]!r} is not a valid UID")
    return uids


def cs_q(path: str, value: str, name: str) -> Q:
    """Code strings: one value or a list (comma or backslash separated), each maybe a wildcard."""
    values = [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]
    if not values:
        raise BadQuery(f"{name}: a list without values")
    q = Q()
    for v in values:
        q |= string_q(path, v)
    return q


def key_q(tag: str, key: Key, value: str, fuzzy: bool, name: str) -> Q:
    """The filter for one matching key on its own level's model; Q() for universal matching."""
    if value == "" or value == "*":
        return Q()
    if key.kind == "pn":
        return pn_q(key, value, fuzzy)
    if key.kind in ("da", "tm"):
        return range_q(key.path, key.kind, name, value)
    if key.kind == "ui":
        return Q(**{f"{key.path}__in": uid_list(name, value)})
    if key.kind == "int":
        if not INT_RE.match(value):
            raise BadQuery(f"{name}: {value[:32]!r} is not an integer")
        return Q(**{key.path: int(value)})
    if key.kind == "cs":
        return cs_q(key.path, value.upper() if key.path == "modality" else value, name)
    if key.kind == "modalities":
        series = Series.objects.filter(cs_q("modality", value.upper(), name)).values("study_id")
        return Q(pk__in=series)
    return string_q(key.path, value)


def search_queryset(request: HttpRequest, query: Query, study: str | None, series: str | None) -> QuerySet[Any]:
    """The ordered queryset of the target level, limited to what the user may see."""
    return matching_queryset(visible_studies(request.user), query, study, series)


def matching_queryset(
    studies: QuerySet[Study], query: Query, study: str | None = None, series: str | None = None
) -> QuerySet[Any]:
    """The ordered queryset of the target level matching ``query`` among ``studies`` (what the caller may see).

    At PATIENT level (C-FIND's Patient Root): the patients of the matching studies.
    """
    filters = {level: Q() for level in Level}
    if study is not None:
        filters[Level.STUDY] &= Q(study_instance_uid=study)
    if series is not None:
        filters[Level.SERIES] &= Q(series_instance_uid=series)
    for tag, key, value in query.matches:
        filters[key.level] &= key_q(tag, key, value, query.fuzzy, query.names.get(tag) or tag)
    # Patient keys' paths start from the study (patient__...): they narrow the studies.
    studies = studies.filter(filters[Level.PATIENT] & filters[Level.STUDY])
    if query.level == Level.PATIENT:
        return Patient.objects.filter(pk__in=studies.values("patient_id")).order_by("patient_id", "id")
    if query.level == Level.STUDY:
        return studies.order_by("-study_date", "-study_time", "-id")
    series_qs = Series.objects.filter(filters[Level.SERIES], study__in=studies.values("pk"))
    if query.level == Level.SERIES:
        return series_qs.order_by("study_id", "series_number", "id")
    return Instance.objects.filter(filters[Level.INSTANCE], series__in=series_qs.values("pk")).order_by(
        "series_id", "instance_number", "id"
    )
