"""From an EHR's FHIR Patient id to our patient, and the studies a patient-context token or launch may open.

The ``patient`` of a SMART launch or access token is the EHR's FHIR id. We
read that Patient from the EHR's FHIR server (with the access token that
named it: the EHR's own token, sent only to the EHR) and take its identifier
of the integration's system (``smart_patient_system``) as our (0010,0020)
Patient ID, among the patients of the integration's (0010,0021) Issuer of
Patient ID (``smart_patient_issuer``, matched exactly; empty: only patients
without an issuer) with studies at the integration's sites. The
answer is remembered (:class:`~integrations.models.SmartPatient`), so it is
asked once per patient. No identifier of that system, no patient of that ID
here, or two patients with that ID: no patient (nothing is opened).
"""

from __future__ import annotations

from typing import Any

import requests
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from archive.access import site_studies
from archive.models import Patient, Study
from integrations.models import EhrIntegration, SmartPatient

TIMEOUT_SECONDS = 5
FHIR_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


class PatientProblem(Exception):
    """The EHR's patient could not be told: its FHIR server refused or the identifiers are ambiguous."""


def is_fhir_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and set(value) <= FHIR_ID_CHARS


def studies_of(integration: EhrIntegration, patient: Patient) -> QuerySet[Study]:
    """The patient's studies at the integration's sites: the most an EHR's token or launch may open."""
    studies = Study.objects.none()
    for site in integration.sites.all():
        studies = studies | site_studies(site)
    return studies.filter(patient=patient)


def _identifier_value(resource: Any, system: str) -> str:
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        raise PatientProblem("the EHR answered something other than a Patient")
    values = {
        i.get("value")
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == system and isinstance(i.get("value"), str)
    }
    if len(values) > 1:
        raise PatientProblem("the EHR's Patient has several identifiers of the integration's system")
    return str(values.pop()) if values else ""


def patient_for(integration: EhrIntegration, fhir_id: str, access_token: str) -> Patient | None:
    """Our patient for the EHR's ``Patient/<fhir_id>``, learnt once (see the module docstring)."""
    known = SmartPatient.objects.select_related("patient").filter(integration=integration, fhir_id=fhir_id).first()
    if known is not None:
        if known.patient.issuer_of_patient_id == integration.smart_patient_issuer:
            return known.patient
        known.delete()  # learnt under another issuer (before the integration named its issuer): learn again
    if not integration.smart_patient_system:
        raise PatientProblem("the integration names no patient identifier system")
    try:
        response = requests.get(
            f"{integration.smart_fhir_base.rstrip('/')}/Patient/{fhir_id}",
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/fhir+json"},
            timeout=TIMEOUT_SECONDS,
        )
        resource = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        raise PatientProblem("the EHR's Patient could not be read") from None
    if response.status_code != 200:
        raise PatientProblem(f"the EHR's FHIR server answered {response.status_code} for the Patient")
    value = _identifier_value(resource, integration.smart_patient_system)
    if not value:
        return None
    candidates = list(
        Patient.objects.filter(
            patient_id=value,
            issuer_of_patient_id=integration.smart_patient_issuer,
            studies__site__in=integration.sites.all(),
        ).distinct()[:2]
    )
    if len(candidates) != 1:
        if candidates:
            raise PatientProblem("two patients here have the EHR patient's identifier")
        return None  # no studies of the patient here (yet): nothing remembered, asked again next time
    try:
        with transaction.atomic():
            SmartPatient.objects.create(integration=integration, fhir_id=fhir_id, patient=candidates[0])
    except IntegrityError:
        pass  # learnt at the same moment by another request
    return candidates[0]
