"""FHIR R4 resources made from index rows: ImagingStudy, Patient, Endpoint, CapabilityStatement.

Pure functions of the rows they are given (no queries), so a page of
results costs the queries of :mod:`.search` and nothing per study. DICOM
values become FHIR ones as the FHIR ImagingStudy mapping describes: the
Study Instance UID is the resource id and an ``urn:dicom:uid`` identifier,
the accession number an ``ACSN`` identifier, modalities and SOP classes
codings, dates ISO dates. A time is given only with the date (``started``
is a date): DICOM times carry no time zone, which a FHIR dateTime with a
time must have.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from archive.models import Instance, Patient, Series, Study

DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"
ACCESSION_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
ENDPOINT_ID = "dicomweb"
GENDER = {"M": "male", "F": "female", "O": "other"}
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")


def fhir_date(dicom_date: str) -> str | None:
    """``20240115`` → ``2024-01-15``; None for an empty or malformed DICOM date."""
    match = _DATE.match(dicom_date.strip())
    if not match:
        return None
    year, month, day = match.groups()
    if not ("01" <= month <= "12" and "01" <= day <= "31"):
        return None
    return f"{year}-{month}-{day}"


def identifier_system(issuer: str) -> str | None:
    """The FHIR identifier system for a DICOM Issuer of Patient ID (see docs/fhir.md)."""
    issuer = issuer.strip()
    if not issuer:
        return settings.PACS_FHIR_PATIENT_ID_SYSTEM or None
    if _OID.match(issuer):
        return f"urn:oid:{issuer}"
    if ":" in issuer:
        return issuer  # already a URI
    return f"urn:pacs:issuer:{issuer}"


def issuer_for_system(system: str) -> str | None:
    """The inverse of :func:`identifier_system`: the DICOM issuer a FHIR system names (None: no issuer can match)."""
    if system == (settings.PACS_FHIR_PATIENT_ID_SYSTEM or None):
        return ""
    if system.startswith("urn:oid:") and _OID.match(system[8:]):
        return system[8:]
    if system.startswith("urn:pacs:issuer:"):
        return system[16:]
    return system if ":" in system else None


def human_name(dicom_name: str) -> dict[str, Any] | None:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``, alphabetic group first) as a HumanName."""
    groups = dicom_name.split("=")
    group = next((g for g in groups if g.strip("^ ")), "")
    if not group:
        return None
    parts = [p.strip() for p in group.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    name: dict[str, Any] = {
        "use": "official",
        "text": " ".join(p for p in (prefix, given, middle, family, suffix) if p),
    }
    if family:
        name["family"] = family
    if given or middle:
        name["given"] = [p for p in (given, middle) if p]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def patient(row: Patient) -> dict[str, Any]:
    """A minimal Patient: identifier, name, gender, birth date (what DICOM says)."""
    identifier: dict[str, Any] = {"use": "usual", "value": row.patient_id}
    system = identifier_system(row.issuer_of_patient_id)
    if system:
        identifier["system"] = system
    resource: dict[str, Any] = {"resourceType": "Patient", "id": str(row.pk)}
    if row.patient_id:
        resource["identifier"] = [identifier]
    name = human_name(row.patient_name)
    if name:
        resource["name"] = [name]
    resource["gender"] = GENDER.get(row.patient_sex.strip().upper(), "unknown")
    birth = fhir_date(row.patient_birth_date)
    if birth:
        resource["birthDate"] = birth
    return resource


def _modality(code: str) -> dict[str, str]:
    return {"system": DCM, "code": code}


def imaging_study(
    study: Study, series: Iterable[Series], instances: dict[int, list[Instance]] | None = None
) -> dict[str, Any]:
    """An ImagingStudy of ``study`` (its ``patient`` loaded) with ``series`` and, when given, their instances."""
    identifiers: list[dict[str, Any]] = [
        {"use": "official", "system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.study_instance_uid}"}
    ]
    if study.accession_number:
        identifiers.append({"use": "usual", "type": ACCESSION_TYPE, "value": study.accession_number})
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": study.study_instance_uid,
        "identifier": identifiers,
        "status": "available",
    }
    modalities = [m for m in study.modalities_in_study.split("\\") if m]
    if modalities:
        resource["modality"] = [_modality(m) for m in modalities]
    resource["subject"] = {"reference": f"Patient/{study.patient_id}"}
    started = fhir_date(study.study_date)
    if started:
        resource["started"] = started
    if study.referring_physician_name:
        name = human_name(study.referring_physician_name)
        if name:
            resource["referrer"] = {"display": name["text"]}
    resource["endpoint"] = [{"reference": f"Endpoint/{ENDPOINT_ID}"}]
    resource["numberOfSeries"] = study.number_of_series
    resource["numberOfInstances"] = study.number_of_instances
    if study.study_description:
        resource["description"] = study.study_description
    listed = [_series(s, None if instances is None else instances.get(s.pk, [])) for s in series]
    if listed:
        resource["series"] = listed
    return resource


def _series(row: Series, instances: list[Instance] | None) -> dict[str, Any]:
    series: dict[str, Any] = {"uid": row.series_instance_uid}
    if row.series_number is not None and row.series_number >= 0:
        series["number"] = row.series_number
    series["modality"] = _modality(row.modality or "OT")
    if row.series_description:
        series["description"] = row.series_description
    series["numberOfInstances"] = row.number_of_instances
    if row.body_part_examined:
        series["bodySite"] = {"display": row.body_part_examined}
    started = fhir_date(row.series_date)
    if started:
        series["started"] = started
    if instances:
        series["instance"] = [_instance(i) for i in instances]
    return series


def _instance(row: Instance) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "uid": row.sop_instance_uid,
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{row.sop_class_uid}"},
    }
    if row.instance_number is not None and row.instance_number >= 0:
        instance["number"] = row.instance_number
    return instance


def endpoint(dicomweb_root: str) -> dict[str, Any]:
    """The one Endpoint every ImagingStudy names: our DICOMweb root (WADO-RS, QIDO-RS, STOW-RS)."""
    return {
        "resourceType": "Endpoint",
        "id": ENDPOINT_ID,
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "name": "DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": dicomweb_root,
    }


IMAGING_STUDY_SEARCH = [
    ("_id", "token", "The Study Instance UID"),
    ("identifier", "token", "Study Instance UID (urn:dicom:uid|urn:oid:UID) or accession number"),
    ("patient", "reference", "Patient/[id]"),
    ("subject", "reference", "Patient/[id]"),
    ("patient.identifier", "token", "The patient's identifier (chained; [system|]value)"),
    ("started", "date", "Study date, to day precision: eq (default), gt, ge, lt, le"),
    ("modality", "token", "DICOM modality code ([" + DCM + "|]CT)"),
]
PATIENT_SEARCH = [("_id", "token", "Resource id"), ("identifier", "token", "[system|]value")]


def capability_statement(base: str, date: str) -> dict[str, Any]:
    def params(items: list[tuple[str, str, str]]) -> list[dict[str, str]]:
        return [{"name": n, "type": t, "documentation": d} for n, t, d in items]

    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "Cloud PACS",
        "kind": "instance",
        "implementation": {"description": "Cloud PACS FHIR endpoint (read-only imaging)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Authenticate with the archive's bearer tokens or a signed-in session. Prefer POST "
                    "[type]/_search to keep identifiers out of URLs. Unknown search parameters are refused (400)."
                ),
                "security": {"description": "Bearer tokens (Authorization header only) or a session; see docs/fhir.md"},
                "resource": [
                    {
                        "type": "ImagingStudy",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchInclude": ["ImagingStudy:endpoint"],
                        "searchParam": params(IMAGING_STUDY_SEARCH),
                    },
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": params(PATIENT_SEARCH),
                    },
                    {"type": "Endpoint", "interaction": [{"code": "read"}]},
                ],
            }
        ],
    }
