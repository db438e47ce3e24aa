"""Search results as DICOM JSON: the attributes a match returns, the same for QIDO-RS and C-FIND.

A search is answered from the index alone: each level's stored attributes
(study and series attributes kept at ingest, an instance's from its stored
metadata), the attributes every answer must carry (PS3.18 Table 10.6.3-3 and
the counts a workstation expects, such as (0020,1208) Number of Study Related
Instances and (0008,0061) Modalities in Study), and Instance Availability.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.db import connections, router
from django.db.models import Model
from pydicom.datadict import dictionary_VR

from archive.dicom.part10 import BASE_MARK, SERIES_TAGS, STUDY_TAGS
from archive.models import Availability, Instance, Series, Study
from archive.query.matching import Level, Query

ESCAPED_MARK = json.dumps(BASE_MARK)[1:-1]
AVAILABILITY_RANK: dict[str, int] = {"ONLINE": 0, "NEARLINE": 1, "OFFLINE": 2}

# Return attributes required at each level (PS3.18 Tables 10.6.3-3, -4 and -5), tag -> VR.
STUDY_REQUIRED = {
    "00080005": "CS", "00080020": "DA", "00080030": "TM", "00080050": "SH", "00080056": "CS",
    "00080061": "CS", "00080090": "PN", "00081190": "UR", "00100010": "PN", "00100020": "LO",
    "00100030": "DA", "00100040": "CS", "0020000D": "UI", "00200010": "SH", "00201206": "IS",
    "00201208": "IS",
}  # fmt: skip
SERIES_REQUIRED = {
    "00080005": "CS", "00080056": "CS", "00080060": "CS", "0008103E": "LO", "00081190": "UR",
    "0020000D": "UI", "0020000E": "UI", "00200011": "IS", "00201209": "IS", "00400244": "DA",
    "00400245": "TM", "00400275": "SQ",
}  # fmt: skip
INSTANCE_REQUIRED = {
    "00080005": "CS", "00080016": "UI", "00080018": "UI", "00080056": "CS", "00081190": "UR",
    "0020000D": "UI", "0020000E": "UI", "00200013": "IS", "00280008": "IS", "00280010": "US",
    "00280011": "US", "00280100": "US",
}  # fmt: skip
REQUIRED = {Level.STUDY: STUDY_REQUIRED, Level.SERIES: SERIES_REQUIRED, Level.INSTANCE: INSTANCE_REQUIRED}
# Tags that belong to a level: asked for and absent, they come back as {"vr": ...}.
LEVEL_TAGS = {
    Level.STUDY: set(STUDY_REQUIRED) | set(STUDY_TAGS),
    Level.SERIES: set(SERIES_REQUIRED) | set(SERIES_TAGS),
    Level.INSTANCE: set(INSTANCE_REQUIRED),
}
# Instance-level values read from the stored metadata rather than from columns.
INSTANCE_FROM_METADATA = ("00080201", "00280008", "00280100")


def vr_of(tag: str) -> str | None:
    try:
        vr = str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return None
    return vr.split(" or ")[0]


# --------------------------------------------------------------------------- responses


def element(vr: str, values: Iterable[Any] = ()) -> dict[str, Any]:
    """A DICOM JSON attribute; without values it is ``{"vr": vr}``, never null or []."""
    values = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def _empty(tag: str) -> dict[str, Any] | None:
    vr = vr_of(tag)
    return {"vr": vr} if vr else None


def select(attributes: dict[str, Any], query: Query, level: Level, required: dict[str, str]) -> dict[str, Any]:
    """The attributes a response carries at ``level``: required, query keys, includefield."""
    wanted = set(required) | query.returned
    if query.include_all:
        wanted |= set(attributes)
    out: dict[str, Any] = {}
    for tag in wanted:
        if tag in attributes:
            out[tag] = attributes[tag]
        elif tag in required:
            out[tag] = {"vr": required[tag]}
        elif tag in LEVEL_TAGS[level] or (level == Level.INSTANCE and query.level == Level.INSTANCE):
            empty = _empty(tag)
            if empty is not None:
                out[tag] = empty
    return out


def _availability(values: Iterable[str]) -> str:
    return max(values, key=lambda v: AVAILABILITY_RANK.get(v, 0), default="ONLINE")


def availability_of(level: Level, ids: list[int]) -> dict[int, str]:
    """(0008,0056) of each study or series: the least available of its instances (one query).

    Only studies or series holding a NEARLINE or OFFLINE instance appear;
    the rest are ONLINE. Plain SQL: this runs on every study and series
    search, and building it with the ORM cost more than running it.
    """
    if not ids:
        return {}
    connection = connections[router.db_for_read(Instance)]
    q = connection.ops.quote_name
    instance, series = q(Instance._meta.db_table), q(Series._meta.db_table)
    marks = ", ".join(["%s"] * len(ids))
    # Only table names (quoted model metadata) are interpolated; values are parameters.
    if level == Level.STUDY:
        sql = (
            f"SELECT DISTINCT s.study_id, i.availability FROM {instance} i "  # noqa: S608
            f"JOIN {series} s ON s.id = i.series_id WHERE s.study_id IN ({marks}) AND i.availability IN (%s, %s)"
        )
    else:
        sql = (
            f"SELECT DISTINCT i.series_id, i.availability FROM {instance} i "  # noqa: S608
            f"WHERE i.series_id IN ({marks}) AND i.availability IN (%s, %s)"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*ids, Availability.NEARLINE.value, Availability.OFFLINE.value])
        rows = cursor.fetchall()
    found: dict[int, list[str]] = {}
    for pk, value in rows:
        found.setdefault(pk, []).append(value)
    return {pk: _availability(values) for pk, values in found.items()}


def modalities_in_study(stored: str) -> dict[str, Any]:
    """(0008,0061) always with a Value list, empty if no series has a modality.

    The one exception to "no value, no Value" (PS3.18 F.2.5): OHIF's study list
    (``getModalities``, OHIF 3.13) reads ``ModalitiesInStudy.Value.length``
    unguarded, so a bare ``{"vr": "CS"}`` blanks the whole list.
    """
    return {"vr": "CS", "Value": [m for m in stored.split("\\") if m]}


def study_json(row: dict[str, Any], root: str, availability: str) -> dict[str, Any]:
    attrs = dict(row["attributes"] or {})
    attrs.update(
        {
            "00080005": element("CS", ["ISO_IR 192"]),
            "00080056": element("CS", [availability]),
            "00080061": modalities_in_study(row["modalities_in_study"]),
            "0020000D": element("UI", [row["study_instance_uid"]]),
            "00201206": element("IS", [row["number_of_series"]]),
            "00201208": element("IS", [row["number_of_instances"]]),
            "00081190": element("UR", [f"{root}/studies/{row['study_instance_uid']}"]),
        }
    )
    return attrs


def series_json(row: dict[str, Any], study_uid: str, root: str, availability: str) -> dict[str, Any]:
    attrs = dict(row["attributes"] or {})
    uid = row["series_instance_uid"]
    attrs.update(
        {
            "00080005": element("CS", ["ISO_IR 192"]),
            "00080056": element("CS", [availability]),
            "0020000D": element("UI", [study_uid]),
            "0020000E": element("UI", [uid]),
            "00201209": element("IS", [row["number_of_instances"]]),
            "00081190": element("UR", [f"{root}/studies/{study_uid}/series/{uid}"]),
        }
    )
    return attrs


def metadata_values(text: str, tags: Iterable[str]) -> dict[str, Any]:
    """Top-level attributes of stored instance JSON without decoding all of it.

    Keys are written sorted and compact, so a key met before the first sequence
    is top-level; otherwise (rare) the whole document is decoded.
    """
    first_sq = text.find('"vr":"SQ"')
    decoder = json.JSONDecoder()
    out: dict[str, Any] = {}
    for tag in tags:
        needle = f'"{tag}":'
        pos = text.find(needle)
        if pos == -1:
            continue
        if first_sq != -1 and pos > first_sq:
            whole = json.loads(text)
            return {t: whole[t] for t in tags if t in whole}
        out[tag], _ = decoder.raw_decode(text, pos + len(needle))
    return out


def instance_json(row: dict[str, Any], query: Query, study_uid: str, series_uid: str, root: str) -> dict[str, Any]:
    text = row["metadata"]
    if ESCAPED_MARK in text:
        text = text.replace(ESCAPED_MARK, json.dumps(root)[1:-1])
    if query.include_all:
        attrs = json.loads(text)
    else:
        extra = [t for t in query.returned if t not in INSTANCE_REQUIRED]
        attrs = metadata_values(text, [*INSTANCE_FROM_METADATA, *extra])
    uid = row["sop_instance_uid"]
    attrs.update(
        {
            "00080005": element("CS", ["ISO_IR 192"]),
            "00080016": element("UI", [row["sop_class_uid"]]),
            "00080018": element("UI", [uid]),
            "00080056": element("CS", [row["availability"]]),
            "0020000D": element("UI", [study_uid]),
            "0020000E": element("UI", [series_uid]),
            "00200013": element("IS", [row["instance_number"]]),
            "00280010": element("US", [row["rows"]]),
            "00280011": element("US", [row["columns"]]),
            "00081190": element("UR", [f"{root}/studies/{study_uid}/series/{series_uid}/instances/{uid}"]),
        }
    )
    return attrs


STUDY_FIELDS = (
    "pk", "study_instance_uid", "attributes", "modalities_in_study", "number_of_series", "number_of_instances"
)  # fmt: skip
SERIES_FIELDS = ("pk", "study_id", "series_instance_uid", "attributes", "number_of_instances")
INSTANCE_FIELDS = (
    "pk", "series_id", "sop_instance_uid", "sop_class_uid", "instance_number", "rows", "columns", "availability",
    "metadata",
)  # fmt: skip


def _by_pk(model: type[Model], pks: Iterable[int], fields: tuple[str, ...]) -> dict[int, dict[str, Any]]:
    return {row["pk"]: row for row in model._default_manager.filter(pk__in=set(pks)).values(*fields)}


def results(query: Query, rows: list[dict[str, Any]], root: str, path_study: bool) -> list[dict[str, Any]]:
    """DICOM JSON of each result row, with its parents' attributes where PS3.18 asks for them."""
    out: list[dict[str, Any]] = []
    if query.level == Level.STUDY:
        available = availability_of(Level.STUDY, [r["pk"] for r in rows])
        for row in rows:
            attrs = study_json(row, root, available.get(row["pk"], Availability.ONLINE))
            out.append(select(attrs, query, Level.STUDY, STUDY_REQUIRED))
        return out
    if query.level == Level.SERIES:
        studies = _by_pk(Study, (r["study_id"] for r in rows), STUDY_FIELDS)
        available = availability_of(Level.SERIES, [r["pk"] for r in rows])
        for row in rows:
            parent = studies[row["study_id"]]
            attrs = series_json(row, parent["study_instance_uid"], root, available.get(row["pk"], "ONLINE"))
            item = select(attrs, query, Level.SERIES, SERIES_REQUIRED)
            if not path_study:  # all series: the study's attributes too (PS3.18 §10.6.3.3.2)
                item = select(study_json(parent, root, "ONLINE"), query, Level.STUDY, STUDY_REQUIRED) | item
            out.append(item)
        return out
    series = _by_pk(Series, (r["series_id"] for r in rows), SERIES_FIELDS)
    studies = _by_pk(Study, (s["study_id"] for s in series.values()), STUDY_FIELDS)
    for row in rows:
        se = series[row["series_id"]]
        st = studies[se["study_id"]]
        st_uid, se_uid = st["study_instance_uid"], se["series_instance_uid"]
        item = select(instance_json(row, query, st_uid, se_uid, root), query, Level.INSTANCE, INSTANCE_REQUIRED)
        parents = select(series_json(se, st_uid, root, row["availability"]), query, Level.SERIES, SERIES_REQUIRED)
        if not path_study:
            parents = select(study_json(st, root, row["availability"]), query, Level.STUDY, STUDY_REQUIRED) | parents
        out.append(parents | item)  # the instance's own URL and availability win
    return out
