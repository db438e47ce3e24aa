"""FHIR search parameters → a query over the studies (or patients) a user may see.

Every query starts from :func:`archive.access.visible_studies`. Repeated
parameters are ANDed, comma-separated values ORed, as FHIR searches are.
A parameter we do not support is refused (400) rather than ignored, so a
client never takes an unfiltered answer for a filtered one. Dates match at
day precision (DICOM Study Date). Paging is by ``_count`` (at most
:data:`MAX_COUNT`) and ``_offset``, newest studies first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet
from django.http import QueryDict

from archive.access import visible_studies
from archive.fhir.resources import DCM, DICOM_UID_SYSTEM, issuer_for_system
from archive.models import Patient, Study

DEFAULT_COUNT = 50
MAX_COUNT = 200
MAX_VALUES = 100  # values in one parameter (comma-separated and repeated together)
#: Shape the answer, never widen it: ``_summary`` (``count`` honoured, other values answered in full),
#: ``_elements`` and ``_pretty`` (answered in full), and the paging and format parameters.
COMMON = {"_count", "_offset", "_format", "_summary", "_elements", "_pretty"}
IMAGING_STUDY_PARAMS = {
    "_id",
    "identifier",
    "patient",
    "subject",
    "patient.identifier",
    "subject.identifier",
    "started",
}
IMAGING_STUDY_PARAMS |= {"modality", "_include"} | COMMON
PATIENT_PARAMS = {"_id", "identifier"} | COMMON
_DATE = re.compile(r"^(eq|gt|ge|lt|le)?(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_REFERENCE = re.compile(r"^(?:(?:https?://[^\s?#]+/)?Patient/)?([0-9]{1,18})$")
_NUMBER = re.compile(r"^[0-9]{1,9}$")


class SearchError(ValueError):
    """A search the server cannot run as asked: 400 with this text."""


@dataclass
class Page:
    count: int = DEFAULT_COUNT
    offset: int = 0
    #: The parameters that were used, for the Bundle's links.
    used: list[tuple[str, str]] = field(default_factory=list)
    include_endpoint: bool = False
    #: ``_summary=count``: the total only, no entries.
    count_only: bool = False


def _values(params: QueryDict, name: str) -> list[list[str]]:
    """Each occurrence of ``name`` as its comma-separated values (FHIR's ``\\,`` escape kept as a comma)."""
    occurrences = []
    total = 0
    for raw in params.getlist(name):
        if "\x00" in raw:
            raise SearchError(f"{name}: a NUL character")
        values = [v.replace("\0", ",") for v in raw.replace("\\,", "\0").split(",")]
        if any(not v or v.endswith("|") for v in values):
            raise SearchError(f"{name}: an empty value")
        total += len(values)
        occurrences.append(values)
    if total > MAX_VALUES:
        raise SearchError(f"{name}: more than {MAX_VALUES} values")
    return occurrences


def _token(value: str) -> tuple[str | None, str]:
    """``system|code`` → (system, code); ``|code`` → ("", code); ``code`` → (None, code)."""
    if "|" in value:
        system, _, code = value.partition("|")
        return system, code
    return None, value


def _any(conditions: list[Q]) -> Q:
    combined = Q(pk__in=[])
    for condition in conditions:
        combined |= condition
    return combined


def _page(params: QueryDict, allowed: set[str]) -> Page:
    unknown = sorted({k for k in params if k not in allowed})
    if unknown:
        raise SearchError(f"unsupported search parameter(s): {', '.join(n[:40] for n in unknown[:5])}")
    page = Page()
    for name, attribute, top in (("_count", "count", MAX_COUNT), ("_offset", "offset", None)):
        raw = params.get(name)
        if raw is None:
            continue
        if not _NUMBER.match(raw):
            raise SearchError(f"{name} must be a whole number (0-9, at most 9 digits)")
        value = int(raw)
        setattr(page, attribute, min(value, top) if top is not None else value)
    page.count_only = params.get("_summary") == "count"
    page.used = [(k, v) for k in params for v in params.getlist(k) if k not in ("_count", "_offset", "_format")]
    return page


def _date_condition(value: str) -> Q:
    match = _DATE.match(value)
    if not match:
        raise SearchError(f"started: {value[:40]!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD, with eq/gt/ge/lt/le)")
    prefix, year, month, day = match.groups()
    low = year + (month or "01") + (day or "01")
    high = year + (month or "12") + (day or "31")
    dated = ~Q(study_date="")
    return (
        dated
        & {
            None: Q(study_date__gte=low, study_date__lte=high),
            "eq": Q(study_date__gte=low, study_date__lte=high),
            "gt": Q(study_date__gt=high),
            "ge": Q(study_date__gte=low),
            "lt": Q(study_date__lt=low),
            "le": Q(study_date__lte=high),
        }[prefix]
    )


def _patient_pk(value: str) -> int:
    match = _REFERENCE.match(value)
    if not match:
        raise SearchError(f"{value[:40]!r} is not a Patient reference (Patient/[id])")
    return int(match.group(1))


def _patient_identifier(value: str, prefix: str = "") -> Q:
    system, code = _token(value)
    condition = Q(**{f"{prefix}patient_id": code})
    if system is None:
        return condition
    issuer = issuer_for_system(system) if system else ""
    if issuer is None:
        return Q(pk__in=[])
    return condition & Q(**{f"{prefix}issuer_of_patient_id": issuer})


def _study_identifier(value: str) -> Q:
    system, code = _token(value)
    by_uid = Q(study_instance_uid=code[8:]) if code.startswith("urn:oid:") else Q(pk__in=[])
    if system == DICOM_UID_SYSTEM:
        return by_uid
    if system:
        return Q(pk__in=[])  # accession numbers carry no system here
    return by_uid | Q(accession_number=code)


def _modality(value: str) -> Q:
    system, code = _token(value)
    if system not in (None, DCM) or not code or "\\" in code:
        return Q(pk__in=[])
    return (
        Q(modalities_in_study=code)
        | Q(modalities_in_study__startswith=code + "\\")
        | Q(modalities_in_study__endswith="\\" + code)
        | Q(modalities_in_study__contains="\\" + code + "\\")
    )


def imaging_studies(user: Any, params: QueryDict) -> tuple[QuerySet[Study], Page]:
    """The studies ``user`` may see that match ``params``, newest first, and how to page them."""
    page = _page(params, IMAGING_STUDY_PARAMS)
    studies = visible_studies(user)
    for values in _values(params, "_id"):
        studies = studies.filter(study_instance_uid__in=values)
    for values in _values(params, "identifier"):
        studies = studies.filter(_any([_study_identifier(v) for v in values]))
    for name in ("patient", "subject"):
        for values in _values(params, name):
            studies = studies.filter(patient_id__in=[_patient_pk(v) for v in values])
    for name in ("patient.identifier", "subject.identifier"):
        for values in _values(params, name):
            studies = studies.filter(_any([_patient_identifier(v, "patient__") for v in values]))
    for values in _values(params, "started"):
        studies = studies.filter(_any([_date_condition(v) for v in values]))
    for values in _values(params, "modality"):
        studies = studies.filter(_any([_modality(v) for v in values]))
    for values in _values(params, "_include"):
        for value in values:
            if value != "ImagingStudy:endpoint":
                raise SearchError(f"_include: only ImagingStudy:endpoint is supported, not {value[:40]!r}")
            page.include_endpoint = True
    return studies.select_related("patient").order_by("-study_date", "-study_time", "-pk"), page


def patients(user: Any, params: QueryDict) -> tuple[QuerySet[Patient], Page]:
    """The patients with at least one study ``user`` may see that match ``params``."""
    page = _page(params, PATIENT_PARAMS)
    found = Patient.objects.filter(pk__in=visible_studies(user).values("patient_id"))
    for values in _values(params, "_id"):
        found = found.filter(pk__in=[_patient_pk(v) for v in values])
    for values in _values(params, "identifier"):
        found = found.filter(_any([_patient_identifier(v) for v in values]))
    return found.order_by("pk"), page
