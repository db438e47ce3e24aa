"""Keeping the worklist rows in step with the index.

:func:`on_study_stored` receives :data:`archive.ingest.signals.study_stored`
(after each committed store batch) and calls :func:`refresh`: a new study gets
its row (routed by :mod:`portal.worklist.routing`, ``ready`` at once when
``PACS_WORKLIST_AUTO_READY``), a known one gets its image count, modalities
and body part brought up to date. That is one read of the study and one
write per study and batch. :func:`rebuild` does the same for every study
(``manage.py worklist_sync``), for rows a failed receiver missed or an index
rebuilt from files.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from archive.models import Series, Study
from pacs.lib.dblock import write_lock
from portal.worklist.models import WorklistItem
from portal.worklist.routing import route
from portal.worklist.statuses import Status


def on_study_stored(sender: Any, study_id: int, **kwargs: Any) -> None:
    refresh(study_id)


def _value(attributes: dict[str, Any], tag: str) -> str:
    element = attributes.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return str(values[0]).strip() if values and isinstance(values[0], str | int | float) else ""


def patient_age(attributes: dict[str, Any], birth_date: str, study_date: str) -> str:
    """(0010,1010) Patient's Age as sent, else the whole years from birth date to study date (``045Y``)."""
    sent = _value(attributes, "00101010")
    if sent:
        return sent[:8]
    try:
        born = date(int(birth_date[:4]), int(birth_date[4:6]), int(birth_date[6:8]))
        seen = date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:8]))
    except ValueError:
        return ""
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    return f"{years:03d}Y" if 0 <= years < 1000 else ""


def _body_part(study_id: int) -> str:
    parts = Series.objects.filter(study_id=study_id).exclude(body_part_examined="")
    return parts.order_by("series_number", "id").values_list("body_part_examined", flat=True).first() or ""


def refresh(study_id: int) -> WorklistItem | None:
    """Create or update the row of one study; None when the study is gone."""
    study = Study.objects.select_related("patient", "site").filter(pk=study_id).first()
    if study is None:
        return None
    now = timezone.now()
    body_part = _body_part(study_id)
    with write_lock(), transaction.atomic():
        updated = WorklistItem.objects.filter(study_id=study_id).update(
            image_count=study.number_of_instances, modality=study.modalities_in_study, updated_at=now
        )
        if updated:
            if body_part:
                WorklistItem.objects.filter(study_id=study_id, body_part="").update(body_part=body_part)
            return WorklistItem.objects.get(study_id=study_id)
        item = _new_row(study, body_part, now)
        try:
            with transaction.atomic():
                item.save(force_insert=True)
        except IntegrityError:  # a concurrent batch of the same study made it first
            return WorklistItem.objects.get(study_id=study_id)
        _count_priors(study.patient_id)
    item.refresh_from_db(fields=["priors_count"])
    return item


def _new_row(study: Study, body_part: str, now: Any) -> WorklistItem:
    patient = study.patient
    auto_ready = settings.PACS_WORKLIST_AUTO_READY
    item = WorklistItem(
        study=study,
        study_instance_uid=study.study_instance_uid,
        status=Status.READY if auto_ready else Status.ARRIVED,
        patient_name=patient.patient_name,
        patient_name_search=patient.patient_name_search,
        patient_id=patient.patient_id,
        patient_age=patient_age(study.attributes or {}, patient.patient_birth_date, study.study_date),
        patient_sex=patient.patient_sex,
        modality=study.modalities_in_study,
        body_part=body_part,
        description=study.study_description,
        accession_number=study.accession_number,
        site=study.site,
        site_code=study.site.code if study.site else "",
        study_date=study.study_date,
        arrived_at=study.created_at,
        image_count=study.number_of_instances,
        updated_at=now,
    )
    group = route(study.site_id, study.modalities_in_study, body_part)
    if group is not None:
        item.assigned_group, item.reader_name = group, group.name
    return item


def _count_priors(patient_pk: int) -> None:
    """Every row of the patient: how many of the patient's other studies are older (by study date, then arrival)."""
    studies = list(Study.objects.filter(patient_id=patient_pk).values_list("pk", "study_date", "created_at"))
    if len(studies) < 2:
        return
    now = timezone.now()
    for pk, study_date, created in studies:
        priors = sum(1 for other, d, c in studies if other != pk and (d, c) < (study_date, created))
        WorklistItem.objects.filter(study_id=pk).exclude(priors_count=priors).update(
            priors_count=priors, updated_at=now
        )


def rebuild() -> int:
    """Make sure every study has its row and every row its current counts; returns the number of studies seen."""
    seen = 0
    for study_id in Study.objects.order_by("pk").values_list("pk", flat=True).iterator():
        refresh(study_id)
        seen += 1
    return seen
