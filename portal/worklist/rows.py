"""Keeping the worklist rows in step with the index.

:func:`on_study_stored` receives :data:`archive.ingest.signals.study_stored`
(after each committed store batch) and calls :func:`refresh`: a new study gets
its row (routed by :mod:`portal.worklist.routing`, ``ready`` at once when
``PACS_WORKLIST_AUTO_READY``), a known one gets its image count, modalities
and body part brought up to date. That is a few reads of the study and one
write per study and batch. :func:`rebuild` does the same for every study
(``manage.py worklist_sync``), for rows a failed receiver missed or an index
rebuilt from files.

A row counts and lists images only (:mod:`archive.dicom.modalities`), as the
viewer hangs them: the SR and Encapsulated PDF a signed report stores into its
study, like presentation states or key object selections, are archive
objects but not images, so they change neither the row's image count nor its
modality (a CT study stays "CT", never "CT\\DOC\\SR"). :data:`IMAGES` is that count
as a query expression, for the page to show it current.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from archive.dicom.modalities import NON_IMAGE, image_modalities
from archive.models import Patient, Series, Study
from pacs.lib.dblock import write_lock
from portal.worklist.models import WorklistItem
from portal.worklist.routing import route
from portal.worklist.statuses import Status


def on_study_stored(sender: Any, study_id: int, **kwargs: Any) -> None:
    refresh(study_id)


def on_study_corrected(sender: Any, study_id: int, **kwargs: Any) -> None:
    corrected(study_id)


def corrected(study_id: int) -> None:
    """Rewrite what the row copied from the study after a correction: patient, accession, description, date,
    modalities and image count (a split takes series away).

    The priors of the patient the study now belongs to, and of the one it left, are counted again.
    """
    study = Study.objects.select_related("patient").filter(pk=study_id).first()
    if study is None:
        return
    patient = study.patient
    before = WorklistItem.objects.filter(study_id=study_id).values_list("patient_id", flat=True).first()
    with write_lock(durable=False), transaction.atomic():
        WorklistItem.objects.filter(study_id=study_id).update(
            patient_name=patient.patient_name,
            patient_name_search=patient.patient_name_search,
            patient_id=patient.patient_id,
            patient_age=patient_age(study.attributes or {}, patient.patient_birth_date, study.study_date),
            patient_sex=patient.patient_sex,
            description=study.study_description,
            accession_number=study.accession_number,
            study_date=study.study_date,
            modality=modalities(study.modalities_in_study),
            image_count=image_count(study.pk),
            updated_at=timezone.now(),
        )
        _count_priors(patient.pk)
        if before is not None and before != patient.patient_id:
            for left in Patient.objects.filter(patient_id=before).values_list("pk", flat=True):
                _count_priors(left)


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


def _image_series(study: Any) -> Any:
    return Series.objects.filter(study=study).exclude(modality__in=sorted(NON_IMAGE))


#: The number of images of a row's study (the instances of its image series), always current.
IMAGES = Coalesce(
    Subquery(
        _image_series(OuterRef("study_id"))
        .order_by()
        .values("study_id")
        .annotate(n=Sum("number_of_instances"))
        .values("n")
    ),
    0,
)


def image_count(study_id: int) -> int:
    """The images of one study: the instances of its series that are not SR, PDF and other non-image objects."""
    return int(_image_series(study_id).aggregate(n=Sum("number_of_instances"))["n"] or 0)


def modalities(modalities_in_study: str) -> str:
    """(0008,0061) Modalities in Study as the row lists it: the image modalities (``CT\\SR\\DOC`` -> ``CT``)."""
    return "\\".join(image_modalities(modalities_in_study.split("\\")))


#: An arrival bumps a known row (for open lists to reload) at most this often; the row's count is then current.
BUMP_EVERY = timedelta(seconds=1)


def refresh(study_id: int) -> bool:
    """Create or update the row of one study; True when it was created.

    A known row is read, and written only when what it shows changed: its
    image modalities or body part, or its image count once :data:`BUMP_EVERY` has
    passed since its last change (so a C-STORE of one instance at a time costs
    reads, not a write transaction per instance; the page shows the study's
    own count, always current). The row is derived data (:func:`rebuild` makes
    it again), so its commit does not wait for a disk sync of its own: the
    next durable commit covers it.
    """
    now = timezone.now()
    study = Study.objects.filter(pk=study_id).values("modalities_in_study").first()
    if study is None:
        return False
    row = WorklistItem.objects.filter(study_id=study_id).values("modality", "body_part", "image_count", "updated_at")
    known = row.first()
    if known is not None:
        changes: dict[str, Any] = {}
        listed = modalities(study["modalities_in_study"])
        if known["modality"] != listed:
            changes["modality"] = listed
        if not known["body_part"]:
            body_part = _body_part(study_id)
            if body_part:
                changes["body_part"] = body_part
        if changes or known["updated_at"] < now - BUMP_EVERY:
            images = image_count(study_id)
            if known["image_count"] != images:
                changes["image_count"] = images
        if changes:
            with write_lock(durable=False), transaction.atomic():
                WorklistItem.objects.filter(study_id=study_id).update(**changes, updated_at=now)
        return False
    with write_lock(durable=False), transaction.atomic():
        full = Study.objects.select_related("patient", "site").get(pk=study_id)
        item = _new_row(full, _body_part(study_id), now)
        try:
            with transaction.atomic():
                item.save(force_insert=True)
        except IntegrityError:  # a concurrent batch of the same study made it first
            return False
        _count_priors(full.patient_id)
    return True


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
        modality=modalities(study.modalities_in_study),
        body_part=body_part,
        description=study.study_description,
        accession_number=study.accession_number,
        site=study.site,
        site_code=study.site.code if study.site else "",
        study_date=study.study_date,
        arrived_at=study.created_at,
        image_count=image_count(study.pk),
        updated_at=now,
    )
    group = route(study.site_id, item.modality, body_part)
    if group is not None:
        item.assigned_group, item.reader_name = group, group.name
    return item


def _count_priors(patient_pk: int) -> None:
    """Every row of the patient: how many of the patient's other studies are older (by study date, then arrival).

    Studies in the trash (and the holder studies a series in the trash sits under) are nobody's prior.
    """
    kept = Study.objects.filter(patient_id=patient_pk, trashed_at__isnull=True)
    studies = list(kept.values_list("pk", "study_date", "created_at"))
    if len(studies) < 2:  # none older; a study left alone by a correction may still show some
        if studies:
            WorklistItem.objects.filter(study_id=studies[0][0]).exclude(priors_count=0).update(
                priors_count=0, updated_at=timezone.now()
            )
        return
    now = timezone.now()
    for pk, study_date, created in studies:
        priors = sum(1 for other, d, c in studies if other != pk and (d, c) < (study_date, created))
        WorklistItem.objects.filter(study_id=pk).exclude(priors_count=priors).update(
            priors_count=priors, updated_at=now
        )


def rebuild() -> int:
    """Make sure every study has its row and every row its current counts and site; returns the studies seen.

    The site matters after an administrator moved a study to another site:
    who may see a row is always decided through its study, but the site column
    and its filter read the row.
    """
    seen = 0
    studies = Study.objects.order_by("pk").values_list("pk", "site_id", "site__code")
    for study_id, site_id, site_code in studies.iterator():
        refresh(study_id)
        images = image_count(study_id)
        WorklistItem.objects.filter(study_id=study_id).exclude(image_count=images, site_id=site_id).update(
            image_count=images, site_id=site_id, site_code=site_code or "", updated_at=timezone.now()
        )
        seen += 1
    return seen
