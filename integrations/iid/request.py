"""The parameters of an IHE Invoke Image Display request (IHE RAD TF-3 §4.106), parsed and checked.

No Django here beyond a mapping of query values: :func:`parse` turns the
query string into an :class:`IidRequest` or raises :class:`BadRequest` with a
sentence that says which parameter is wrong (the caller answers 400).

* ``requestType=STUDY`` takes ``studyUID`` (a comma-separated list of Study
  Instance UIDs) or ``accessionNumber`` (a comma-separated list; an issuer
  after ``^`` is accepted and not used), not both; ``patientID`` is optional
  and, when present, narrows the studies to that patient.
* ``requestType=PATIENT`` takes ``patientID`` in the HL7 CX form the profile
  uses, ``ID^^^&OID&ISO`` (or ``ID^^^NAMESPACE``), and optionally
  ``mostRecentResults``, ``lowerDateTime``, ``upperDateTime`` (ISO 8601) and
  ``modalitiesInStudy`` (a comma-separated list).
* ``viewerType`` (``IHE_BIR`` or empty), ``diagnosticQuality`` and
  ``keyImagesOnly`` (``true``/``false``) are accepted for both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from archive.dicom.uid import is_valid_uid

#: At most this many studies or accession numbers in one request.
MAX_ITEMS = 100
#: A date-time of ISO 8601 as the profile allows: date, optional time, optional zone (ignored).
DATE_TIME = re.compile(
    r"(\d{4})-?(\d{2})-?(\d{2})"  # date
    r"(?:T(\d{2}):?(\d{2})(?::?(\d{2})(?:\.\d{1,6})?)?)?"  # time
    r"(Z|[+-]\d{2}:?\d{2})?"  # zone
)
PATIENT_ID = re.compile(r"[^\\^&]{1,64}")
ISSUER_PART = re.compile(r"[^\\^&]{0,64}")
MODALITY = re.compile(r"[A-Z0-9_]{1,16}")
ACCESSION = re.compile(r"[^\\^]{1,64}")
#: The viewer types this display answers to (empty: the caller does not care).
VIEWER_TYPES = {"", "IHE_BIR"}
KNOWN = {
    "requestType",
    "studyUID",
    "accessionNumber",
    "patientID",
    "mostRecentResults",
    "lowerDateTime",
    "upperDateTime",
    "modalitiesInStudy",
    "viewerType",
    "diagnosticQuality",
    "keyImagesOnly",
}


class RequestType(Enum):
    STUDY = "STUDY"
    PATIENT = "PATIENT"


class BadRequest(ValueError):
    """A request the profile does not allow; its message names the parameter."""


@dataclass(frozen=True)
class PatientIdentifier:
    """``ID^^^namespace&universal ID&type``: the ID and whichever issuer parts were given."""

    patient_id: str
    namespace: str = ""
    universal_id: str = ""

    @property
    def issuers(self) -> set[str]:
        return {i for i in (self.namespace, self.universal_id) if i}


@dataclass(frozen=True)
class IidRequest:
    request_type: RequestType
    study_uids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    patient: PatientIdentifier | None = None
    most_recent: int | None = None
    lower: str = ""  # YYYYMMDDHHMMSS, compared with the study's date and time
    upper: str = ""
    modalities: tuple[str, ...] = ()
    viewer_type: str = ""
    diagnostic_quality: bool = False
    key_images_only: bool = False


def _single(query: Mapping[str, list[str]], name: str) -> str:
    values = query.get(name, [])
    if len(values) > 1:
        raise BadRequest(f"{name} is given more than once")
    return values[0] if values else ""


def _list(value: str, name: str) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if not value or any(not v for v in items):
        raise BadRequest(f"{name} is an empty item in a comma-separated list")
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"{name} lists more than {MAX_ITEMS} values")
    return items


def _boolean(value: str, name: str) -> bool:
    if value not in ("", "true", "false"):
        raise BadRequest(f"{name} must be true or false")
    return value == "true"


def parse_patient(value: str) -> PatientIdentifier:
    """``ID``, ``ID^^^NAMESPACE`` or ``ID^^^&1.2.3&ISO`` (HL7 CX with an HD assigning authority)."""
    parts = value.split("^")
    if len(parts) not in (1, 4) or not PATIENT_ID.fullmatch(parts[0]) or any(parts[1:3]):
        raise BadRequest("patientID must be ID^^^&OID&ISO (or ID^^^NAMESPACE)")
    if len(parts) == 1:
        return PatientIdentifier(parts[0])
    authority = parts[3].split("&")
    if len(authority) > 3 or not all(ISSUER_PART.fullmatch(a) for a in authority):
        raise BadRequest("patientID's assigning authority must be NAMESPACE&UNIVERSAL_ID&TYPE")
    namespace, universal, kind = (authority + ["", "", ""])[:3]
    if universal and kind not in ("ISO", ""):
        raise BadRequest("patientID's universal ID type must be ISO")
    if not (namespace or universal):
        raise BadRequest("patientID names an empty assigning authority")
    return PatientIdentifier(parts[0], namespace, universal)


def _date_time(value: str, name: str, upper: bool) -> str:
    if not value:
        return ""
    match = DATE_TIME.fullmatch(value)
    if match is None:
        raise BadRequest(f"{name} must be an ISO 8601 date-time (2024-01-15T09:30:00)")
    year, month, day, hour, minute, second = (match.group(i) for i in range(1, 7))
    try:
        datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        raise BadRequest(f"{name} is not a real date and time") from None
    filler = "59" if upper else "00"
    time = (hour or ("23" if upper else "00")) + (minute or filler) + (second or filler)
    return f"{year}{month}{day}{time}"


def parse(query: Mapping[str, list[str]]) -> IidRequest:
    """Check every parameter; unknown ones are refused so a typo never widens or silently changes a request."""
    unknown = sorted(set(query) - KNOWN)
    if unknown:
        raise BadRequest(f"{unknown[0][:40]} is not a parameter of Invoke Image Display")
    try:
        kind = RequestType(_single(query, "requestType"))
    except ValueError:
        raise BadRequest("requestType must be STUDY or PATIENT") from None
    viewer_type = _single(query, "viewerType")
    if viewer_type not in VIEWER_TYPES:
        raise BadRequest("viewerType must be IHE_BIR (or absent): this display offers no other")
    common = {
        "viewer_type": viewer_type,
        "diagnostic_quality": _boolean(_single(query, "diagnosticQuality"), "diagnosticQuality"),
        "key_images_only": _boolean(_single(query, "keyImagesOnly"), "keyImagesOnly"),
    }
    patient_value = _single(query, "patientID")
    patient = parse_patient(patient_value) if patient_value else None
    if kind is RequestType.STUDY:
        return _study(query, patient, common)
    if patient is None:
        raise BadRequest("requestType=PATIENT needs patientID")
    for name in ("studyUID", "accessionNumber"):
        if name in query:
            raise BadRequest(f"{name} belongs to requestType=STUDY")
    recent = _single(query, "mostRecentResults")
    if recent and not (recent.isascii() and recent.isdigit() and 0 < int(recent) <= 1000):
        raise BadRequest("mostRecentResults must be a whole number from 1 to 1000")
    lower = _date_time(_single(query, "lowerDateTime"), "lowerDateTime", upper=False)
    upper = _date_time(_single(query, "upperDateTime"), "upperDateTime", upper=True)
    if lower and upper and lower > upper:
        raise BadRequest("lowerDateTime is after upperDateTime")
    modalities_value = _single(query, "modalitiesInStudy")
    modalities = _list(modalities_value, "modalitiesInStudy") if modalities_value else []
    if any(not MODALITY.fullmatch(m) for m in modalities):
        raise BadRequest("modalitiesInStudy must list modality codes (CT,MR)")
    return IidRequest(
        RequestType.PATIENT,
        patient=patient,
        most_recent=int(recent) if recent else None,
        lower=lower,
        upper=upper,
        modalities=tuple(modalities),
        **common,  # type: ignore[arg-type]
    )


def _study(query: Mapping[str, list[str]], patient: PatientIdentifier | None, common: dict[str, object]) -> IidRequest:
    for name in ("mostRecentResults", "lowerDateTime", "upperDateTime", "modalitiesInStudy"):
        if name in query:
            raise BadRequest(f"{name} belongs to requestType=PATIENT")
    uids_value, accessions_value = _single(query, "studyUID"), _single(query, "accessionNumber")
    if bool(uids_value) == bool(accessions_value):
        raise BadRequest("requestType=STUDY needs studyUID or accessionNumber (one of them)")
    uids = _list(uids_value, "studyUID") if uids_value else []
    if any(not is_valid_uid(u) for u in uids):
        raise BadRequest("studyUID lists a value that is not a valid DICOM UID")
    accessions = [a.split("^", 1)[0] for a in _list(accessions_value, "accessionNumber")] if accessions_value else []
    if any(not ACCESSION.fullmatch(a) for a in accessions):
        raise BadRequest("accessionNumber lists a value that is not an accession number")
    return IidRequest(
        RequestType.STUDY,
        study_uids=tuple(dict.fromkeys(uids)),
        accession_numbers=tuple(dict.fromkeys(accessions)),
        patient=patient,
        **common,  # type: ignore[arg-type]
    )
