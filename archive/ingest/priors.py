"""Ahead of need: when a study of a patient arrives, that patient's relevant priors come back from archive tiers.

A radiologist reading a new CT of the chest compares it with the patient's
earlier CTs of the chest. If those sit on a tier that needs a restore, the
comparison would wait hours; so when ingest announces a study
(:data:`archive.ingest.signals.study_stored`, after its commit), the
``PACS_PRIORS_COUNT`` most recent other studies of the same patient that share
its modality or body part (``PACS_PRIORS_MATCH``: ``modality``, ``body_part``
or both, either matching) are looked up, and those of their objects that are
NEARLINE are restored to the immediate tier in the background
(:func:`archive.ingest.restore.request_restores`, idempotent: a study stored
one C-STORE at a time asks once). A patient with nothing archived costs one
``EXISTS`` query per store batch. (Orders from HL7 will call the same function.)
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db.models import Q

from archive.ingest.restore import RestoreRequest, request_restores
from archive.models import Availability, Instance, Series, Study

log = logging.getLogger(__name__)

MATCHES = {"modality", "body_part"}


def relevant_priors(study: Study, count: int) -> list[int]:
    """The primary keys of up to ``count`` most recent other studies of the patient sharing a modality or body part."""
    criteria = {c.strip() for c in str(settings.PACS_PRIORS_MATCH).split(",") if c.strip()} & MATCHES
    series = Series.objects.filter(study=study)
    match = Q(pk__in=[])
    if "modality" in criteria:
        modalities = {m.upper() for m in series.values_list("modality", flat=True) if m}
        if modalities:
            match |= Q(modality__in=modalities)
    if "body_part" in criteria:
        parts = {p.upper() for p in series.values_list("body_part_examined", flat=True) if p}
        if parts:
            match |= Q(body_part_examined__in=parts)
    sharing = Series.objects.filter(match, study__patient_id=study.patient_id).values("study_id")
    priors = (
        # A study in the trash (a series in the trash sits under one) is no prior: nobody may read it.
        Study.objects.filter(patient_id=study.patient_id, pk__in=sharing, trashed_at__isnull=True)
        .exclude(pk=study.pk)
        .order_by("-study_date", "-study_time", "-id")
        .values_list("pk", flat=True)
    )
    return list(priors[:count])


def restore_priors(study_id: int) -> RestoreRequest | None:
    """Restore the relevant priors of the study ``study_id`` that need it; None when there is nothing to do."""
    count = int(settings.PACS_PRIORS_COUNT)
    if count <= 0:
        return None
    study = Study.objects.filter(pk=study_id).select_related("patient").first()
    if study is None:
        return None
    archived = Instance.objects.filter(series__study__patient_id=study.patient_id).exclude(
        availability=Availability.ONLINE
    )
    if not archived.exists():
        return None
    priors = relevant_priors(study, count)
    if not priors:
        return None
    asked = request_restores(
        Instance.objects.filter(series__study__in=priors),
        "prior",
        actor="priors",
        study_instance_uid=study.study_instance_uid,
        patient_id=study.patient.patient_id,
    )
    return asked if asked.in_flight else None


def on_study_stored(sender: Any, study_id: int, **kwargs: Any) -> None:
    """The :data:`~archive.ingest.signals.study_stored` receiver (connected by the archive's app config)."""
    restore_priors(study_id)
