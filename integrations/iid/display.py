"""Which studies an Invoke Image Display request opens for a user: always through the one access policy.

:func:`studies_for` starts from :func:`archive.access.visible_studies`, so a
session opened by an EHR launch or a SMART launch sees only its grants, a
referring clinician only what was given to them, and nobody anything of a
site they do not belong to. What is not visible and what does not exist are
the same answer (no studies): the caller's page reveals neither.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from archive.access import visible_studies
from archive.models import Study
from integrations.iid.request import IidRequest, RequestType

#: A request that matches more studies than this opens the list of the most recent ones.
MAX_STUDIES = 200


def _moment(study: Study) -> str:
    time = "".join(c for c in study.study_time.split(".")[0] if c.isdigit())
    return study.study_date + (time + "000000")[:6]


def studies_for(user: Any, asked: IidRequest) -> list[Study]:
    """The visible studies the request names, most recent first."""
    query = visible_studies(user).select_related("patient")
    if asked.patient is not None:
        query = query.filter(patient__patient_id=asked.patient.patient_id)
        if asked.patient.issuers:
            query = query.filter(patient__issuer_of_patient_id__in=sorted(asked.patient.issuers))
    if asked.request_type is RequestType.STUDY:
        if asked.study_uids:
            query = query.filter(study_instance_uid__in=asked.study_uids)
        else:
            query = query.filter(accession_number__in=asked.accession_numbers)
    if asked.modalities:
        wanted = Q()
        for modality in asked.modalities:
            wanted |= Q(modalities_in_study=modality)
            wanted |= Q(modalities_in_study__startswith=modality + "\\")
            wanted |= Q(modalities_in_study__endswith="\\" + modality)
            wanted |= Q(modalities_in_study__contains="\\" + modality + "\\")
        query = query.filter(wanted)
    if asked.lower:
        query = query.filter(study_date__gte=asked.lower[:8])
    if asked.upper:
        query = query.filter(study_date__lte=asked.upper[:8])
    found = list(query.order_by("-study_date", "-study_time", "-id")[: MAX_STUDIES * 2])
    # The day filters ran in SQL; the time of day is compared here, on a handful of rows.
    found = [s for s in found if (not asked.lower or _moment(s) >= asked.lower)]
    found = [s for s in found if (not asked.upper or not s.study_date or _moment(s) <= asked.upper)]
    found.sort(key=lambda s: (_moment(s), s.pk), reverse=True)
    limit = asked.most_recent or MAX_STUDIES
    return found[: min(limit, MAX_STUDIES)]
