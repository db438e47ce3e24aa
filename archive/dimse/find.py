"""The C-FIND SCP: Patient Root and Study Root Query/Retrieve (PS3.4 C.4.1), matched as QIDO-RS matches.

An identifier becomes the same :class:`~archive.query.matching.Query` a
QIDO-RS request does (:func:`~archive.query.matching.parse_query_values`), and
is searched among the studies the calling device may see: those of its site
(:func:`archive.access.site_studies`). Results are assembled from the index
and the JSON precomputed at ingest, as QIDO-RS assembles them
(:func:`archive.query.results.results`); each match is a Pending response
carrying the keys the identifier asked for (empty when the archive has no
value), plus (0008,0052) Query/Retrieve Level and (0008,0005) Specific
Character Set ``ISO_IR 192``. (0008,0054) Retrieve AE Title is the node's own
AE title and (0008,0056) Instance Availability the index's, as QIDO-RS
computes it (the least available instance of a study or series).

Statuses (PS3.4 C.4.1.1.4, PS3.7 C): each match 0xFF00, or 0xFF01 when the
identifier holds a key the SCP cannot support (:func:`unsupported_keys`: one
it neither matches on nor can return at that level); done 0x0000;
cancelled (C-CANCEL) 0xFE00; a device that may not query, or an unknown
caller, 0x0124 (Refused: Not authorized, the general status the node also
answers C-STORE with); an identifier without a valid Query/Retrieve Level for
the model, or without the single-valued unique keys of the levels above the
one asked (PS3.4 C.4.1.2.2.1 hierarchical search: PatientID in the Patient
Root model, StudyInstanceUID, SeriesInstanceUID), 0xA900 (Identifier does not
match SOP Class); a malformed matching value 0xC000 (Unable to process); the
index unavailable 0xA700 (Out of resources). Every C-FIND, answered or
refused, leaves one ``search`` record (the action QIDO-RS records) with
``via: DIMSE``, the peer's AE title and address, the level and the number of
matches, written before the first match is sent; a C-CANCEL adds a
``cancelled`` record saying how many were sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError, close_old_connections
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from archive.access import site_studies
from archive.dimse.statuses import DOES_NOT_MATCH, NOT_AUTHORIZED, OUT_OF_RESOURCES, SUCCESS, status_dataset
from archive.dimse.store import Session
from archive.models import Instance, Series, Site, Study
from archive.query.matching import MATCHING, BadQuery, Level, Query, matching_queryset, parse_query_values
from archive.query.results import INSTANCE_FIELDS, LEVEL_TAGS, SERIES_FIELDS, STUDY_FIELDS, element, results
from audit.trail import record

log = logging.getLogger(__name__)

PENDING = 0xFF00  # Pending: matches are continuing
PENDING_UNSUPPORTED = 0xFF01  # Pending: matches are continuing, one or more optional keys not supported
CANCELLED = 0xFE00  # Cancel: matching terminated due to Cancel request
UNABLE_TO_PROCESS = 0xC000  # Failed: Unable to process
#: The information models served, and the levels each has (PS3.4 C.6.1, C.6.2).
MODELS: dict[str, tuple[str, tuple[Level, ...]]] = {
    str(PatientRootQueryRetrieveInformationModelFind): (
        "patient",
        (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE),
    ),
    str(StudyRootQueryRetrieveInformationModelFind): ("study", (Level.STUDY, Level.SERIES, Level.INSTANCE)),
}
#: The unique key of each level (PS3.4 C.6.1.1, C.6.2.1) as (tag, keyword).
UNIQUE_KEYS = {
    Level.PATIENT: (0x00100020, "PatientID"),
    Level.STUDY: (0x0020000D, "StudyInstanceUID"),
    Level.SERIES: (0x0020000E, "SeriesInstanceUID"),
}
QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = "00080054"
PATIENT_TAGS = ("00100010", "00100020", "00100021", "00100030", "00100040")
PATIENT_COUNTS = ("00201200", "00201202", "00201204")
#: The keys a match can carry a value for at each level, besides the matching keys at or above it: the
#: attributes the index keeps of the level and its parents (a series match carries its study's). At IMAGE
#: level every key is returnable: an instance's stored attributes are all kept.
RETURNABLE: dict[Level, frozenset[str]] = {
    Level.PATIENT: frozenset({*PATIENT_TAGS, *PATIENT_COUNTS, RETRIEVE_AE_TITLE}),
    Level.STUDY: frozenset({*LEVEL_TAGS[Level.STUDY], RETRIEVE_AE_TITLE}),
    Level.SERIES: frozenset({*LEVEL_TAGS[Level.STUDY], *LEVEL_TAGS[Level.SERIES], RETRIEVE_AE_TITLE}),
}
FIELDS = {Level.STUDY: STUDY_FIELDS, Level.SERIES: SERIES_FIELDS, Level.INSTANCE: INSTANCE_FIELDS}
BATCH = 200
MODEL_OF: dict[Level, type[Study] | type[Series] | type[Instance]] = {
    Level.STUDY: Study,
    Level.SERIES: Series,
    Level.INSTANCE: Instance,
}


class Refused(Exception):
    """An identifier the SCP does not search: its status and a comment."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status


def text_of(elem: DataElement) -> str:
    """An identifier element's value as a QIDO-RS query parameter would carry it (values joined by ``\\``)."""
    if elem.value is None:
        return ""
    if isinstance(elem.value, MultiValue | list):
        return "\\".join(str(v) for v in elem.value)
    return str(elem.value)


def parse_identifier(identifier: Dataset, model: str) -> Query:
    """The query an identifier asks under ``model`` (an SOP Class UID of :data:`MODELS`); :class:`Refused` if none."""
    name, levels = MODELS[model]
    raw = identifier.get(QUERY_RETRIEVE_LEVEL)
    try:
        level = Level.from_query_retrieve_level(text_of(raw).strip() if raw is not None else "")
    except ValueError:
        raise Refused(DOES_NOT_MATCH, "no valid Query/Retrieve Level") from None
    if level not in levels:
        raise Refused(DOES_NOT_MATCH, f"no {level.query_retrieve_level} level in the {name} root model")
    for above in levels[: levels.index(level)]:
        tag, keyword = UNIQUE_KEYS[above]
        elem = identifier.get(tag)
        value = text_of(elem).strip() if elem is not None else ""
        if not value or "\\" in value or "*" in value or "?" in value:
            raise Refused(DOES_NOT_MATCH, f"{keyword} must hold one value at {level.query_retrieve_level} level")
    values = {
        elem.keyword: text_of(elem)
        for elem in identifier
        if elem.tag not in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET)
        and elem.VR != "SQ"
        and elem.keyword
        and elem.tag.element != 0
    }
    try:
        query = parse_query_values(values, level)
    except BadQuery as exc:
        raise Refused(UNABLE_TO_PROCESS, str(exc)) from None
    # Every key of the identifier is a return key, matched or not.
    query.returned |= {f"{int(elem.tag):08X}" for elem in identifier}
    return query


def unsupported_keys(identifier: Dataset, level: Level) -> list[str]:
    """The keys of ``identifier`` the SCP can neither match on nor return at ``level`` (tags, ``GGGGEEEE``).

    A matching key of :data:`archive.query.matching.MATCHING` at or above the
    level is supported, and so is every key of :data:`RETURNABLE`; at IMAGE
    level every key is. Query/Retrieve Level, Specific Character Set and group
    lengths are not keys.
    """
    if level == Level.INSTANCE:
        return []
    out = []
    for elem in identifier:
        tag = f"{int(elem.tag):08X}"
        if elem.tag in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET) or elem.tag.element == 0:
            continue
        key = MATCHING.get(tag)
        if (key is None or key.level > level) and tag not in RETURNABLE[level]:
            out.append(tag)
    return out


def response(identifier: Dataset, attributes: dict[str, Any], level: Level) -> Dataset:
    """The Pending identifier of one match: each key asked, with the archive's value or empty."""
    known = {
        tag: value
        for tag, value in attributes.items()
        if tag in {f"{int(e.tag):08X}" for e in identifier} and "BulkDataURI" not in value
    }
    found = Dataset.from_json(known)
    out = Dataset()
    for elem in identifier:
        if elem.tag in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET):
            continue
        out.add(found[elem.tag] if elem.tag in found else DataElement(elem.tag, elem.VR, None))
    out.SpecificCharacterSet = "ISO_IR 192"
    out.QueryRetrieveLevel = level.query_retrieve_level
    return out


def patient_attributes(studies: list[dict[str, Any]]) -> dict[str, Any]:
    """Patient-level DICOM JSON from the patient's studies (newest first) that the caller may see."""
    attrs = {tag: value for tag, value in (studies[0]["attributes"] or {}).items() if tag in PATIENT_TAGS}
    attrs["00201200"] = {"vr": "IS", "Value": [len(studies)]}
    attrs["00201202"] = {"vr": "IS", "Value": [sum(s["number_of_series"] for s in studies)]}
    attrs["00201204"] = {"vr": "IS", "Value": [sum(s["number_of_instances"] for s in studies)]}
    return attrs


class FindSCP:
    """Answers C-FIND requests in the Patient Root and Study Root models."""

    def __init__(self, ae_title: str) -> None:
        self.ae_title = ae_title  # the node's own: every match's (0008,0054) Retrieve AE Title

    def on_c_find(self, session: Session | None, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """The C-FIND responses to one request on ``session``'s association (None: not accepted).

        The audit record is written before the first match leaves: a search
        the trail cannot show is refused (0xA700), never answered.
        """
        if session is None:
            yield status_dataset(NOT_AUTHORIZED, "association not authorized"), None
            return
        model = str(event.request.AffectedSOPClassUID)  # type: ignore[union-attr]
        detail = session.detail(MODELS[model][0] if model in MODELS else model)
        device = session.device
        reason = session.refusal(device is not None and device.may_query, "query (C-FIND)")
        if device is None or reason is not None:
            reason = reason or "unknown device"
            self.audit(session, detail, "denied", status=f"0x{NOT_AUTHORIZED:04X}", reason=reason)
            yield status_dataset(NOT_AUTHORIZED, reason), None
            return
        try:
            identifier = event.identifier
            query = parse_identifier(identifier, model)
            detail["level"] = query.level.query_retrieve_level
            detail["query"] = {str(e.keyword)[:64]: text_of(e)[:64] for e in list(identifier)[:16] if e.VR != "SQ"}
            unsupported = unsupported_keys(identifier, query.level)
            if unsupported:
                detail["unsupported"] = unsupported[:16]
            pks = self.match(device.site, query)
            record(
                "search", session.request(), actor=f"AE:{session.calling_ae}", detail={**detail, "results": len(pks)}
            )
        except Refused as exc:
            self.audit(session, detail, "failure", status=f"0x{exc.status:04X}", reason=str(exc))
            yield status_dataset(exc.status, str(exc)), None
            return
        except BadQuery as exc:  # a value found malformed only when filtered
            self.audit(session, detail, "failure", status=f"0x{UNABLE_TO_PROCESS:04X}", reason=str(exc))
            yield status_dataset(UNABLE_TO_PROCESS, str(exc)), None
            return
        except DatabaseError as exc:
            close_old_connections()
            log.warning("C-FIND from %s failed: %s", session.calling_ae, exc)
            self.audit(session, detail, "failure", status=f"0x{OUT_OF_RESOURCES:04X}", reason="index unavailable")
            yield status_dataset(OUT_OF_RESOURCES, "the index is not available"), None
            return
        except (AttributeError, ValueError, KeyError, TypeError, EOFError) as exc:  # an undecodable identifier
            self.audit(session, detail, "failure", status=f"0x{UNABLE_TO_PROCESS:04X}", reason=str(exc)[:200])
            yield status_dataset(UNABLE_TO_PROCESS, "the identifier cannot be decoded"), None
            return
        pending = PENDING_UNSUPPORTED if unsupported else PENDING
        retrieve_ae = {RETRIEVE_AE_TITLE: element("AE", [self.ae_title])}
        sent = 0
        for attributes in self.attributes(device.site, query, pks):
            if event.is_cancelled:
                self.audit(session, detail, "cancelled", results=len(pks), sent=sent)
                yield CANCELLED, None
                return
            sent += 1
            yield pending, response(identifier, attributes | retrieve_ae, query.level)
        yield SUCCESS, None

    def match(self, site: Site, query: Query) -> list[int]:
        """The primary keys of the matches at the query's level, in order, among the studies of ``site``."""
        return list(matching_queryset(site_studies(site), query).values_list("pk", flat=True))

    def attributes(self, site: Site, query: Query, pks: list[int]) -> Iterator[dict[str, Any]]:
        """DICOM JSON of each match, read in batches as QIDO-RS reads its results."""
        for start in range(0, len(pks), BATCH):
            batch = pks[start : start + BATCH]
            if query.level == Level.PATIENT:
                rows = site_studies(site).filter(patient_id__in=batch).order_by("-study_date", "-study_time", "-id")
                by_patient: dict[int, list[dict[str, Any]]] = {}
                for row in rows.values("patient_id", "attributes", "number_of_series", "number_of_instances"):
                    by_patient.setdefault(row["patient_id"], []).append(dict(row))
                yield from (patient_attributes(by_patient[pk]) for pk in batch if pk in by_patient)
                continue
            model = MODEL_OF[query.level]
            found = {row["pk"]: row for row in model.objects.filter(pk__in=batch).values(*FIELDS[query.level])}
            yield from results(query, [found[pk] for pk in batch if pk in found], "", False)

    def audit(self, session: Session, detail: dict[str, Any], outcome: str, **more: Any) -> None:
        """The ``search`` record of a refused or cancelled C-FIND."""
        session.audit("search", detail, outcome, **more)
