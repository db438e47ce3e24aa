"""Splitting a study: some of its series become a study of their own, as a correction.

A modality that put two examinations under one Study Instance UID is fixed by
:func:`split_study`: every instance of the chosen series gets a corrected copy
whose (0020,000D) Study Instance UID is a new UID (its old value recorded in
the copy's Original Attributes Sequence), stored through the one ingest path
exactly as :mod:`archive.ingest.correct` stores a correction: the replaced
objects are kept as earlier versions, and in one transaction a new Study row
(same patient, site and study attributes) takes the series, both studies'
counts are recomputed, and one ``correct`` audit record (``operation: split``)
names the new study. Both studies are then announced as stored
(:data:`~archive.ingest.signals.study_stored`: the new one gets its worklist
row, the old one its new counts) and the old one as corrected.

At least one series must stay behind; the same refusals as a correction
apply (trash, tier move, not online, changed meanwhile), with nothing written.
A study a legal hold names by its Study Instance UID is not split: the series
moved out would leave the hold (a hold on the patient follows them).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Count
from django.http import HttpRequest
from pydicom.uid import generate_uid

from archive.ingest.correct import (
    REASON_MAX,
    Correction,
    Seen,
    lock_unchanged,
    readable,
    refuse,
    store_copies,
    switch_to_copies,
    write_copies,
)
from archive.ingest.index import name_words
from archive.ingest.retention import active_holds
from archive.ingest.signals import announce_correction
from archive.models import Instance, PersonNameWord, Series, Study
from audit.trail import record


def split_study(
    study: Study,
    series_uids: list[str],
    reason: str,
    *,
    user: Any = None,
    request: HttpRequest | None = None,
) -> tuple[Correction, str]:
    """Move ``series_uids`` of ``study`` to a new study; returns the correction and the new Study Instance UID.

    :class:`~archive.ingest.correct.CorrectionRefused` (nothing written, audited): 400 for no series, a series
    not of the study, every series of the study, or no reason; 409 as for a correction.
    """
    reason = " ".join(reason.split())
    wanted = sorted(set(series_uids))
    of_study = set(Series.objects.filter(study_id=study.pk).values_list("series_instance_uid", flat=True))
    errors: dict[str, str] = {}
    if not wanted or not set(wanted) <= of_study:
        errors["series"] = "choose series of this study"
    elif set(wanted) == of_study:
        errors["series"] = "at least one series must stay in the study"
    if not reason or len(reason) > REASON_MAX or "\x00" in reason:
        errors["reason"] = f"say why the study is split (at most {REASON_MAX} characters)"
    if errors:
        refuse(request, user, study, "invalid split", 400, errors)
    if any(h.study_instance_uid for h in active_holds(study)):
        refuse(request, user, study, "a legal hold names the study: an administrator must release it first", 409)
    new_uid = str(generate_uid(prefix=None))
    seen = readable(request, user, study, {}, series_uids=wanted)
    staged = write_copies(seen, {"StudyInstanceUID": new_uid})
    name = uuid.uuid4().hex

    def apply(placed: list[Any]) -> set[int]:
        return _apply(study.pk, wanted, seen, placed, new_uid, name, reason, user, request)

    store_copies(request, user, study, seen, staged, apply)
    return Correction(name, len(seen), {"StudyInstanceUID": (study.study_instance_uid, new_uid)}), new_uid


def _apply(
    study_pk: int,
    wanted: list[str],
    seen: list[Seen],
    placed: list[Any],
    new_uid: str,
    name: str,
    reason: str,
    user: Any,
    request: HttpRequest | None,
) -> set[int]:
    """Inside the index transaction: check, keep the versions, make the new study, move the series, recount, audit."""
    rows = Instance.objects.filter(series__study_id=study_pk, series__series_instance_uid__in=wanted)
    study = lock_unchanged([study_pk], rows, seen, "split")[study_pk]
    switch_to_copies(seen, placed, name, reason, user)
    new = Study.objects.create(
        study_instance_uid=new_uid,
        patient=study.patient,
        site=study.site,
        study_date=study.study_date,
        study_time=study.study_time,
        accession_number=study.accession_number,
        study_id=study.study_id,
        study_description=study.study_description,
        referring_physician_name=study.referring_physician_name,
        referring_physician_search=study.referring_physician_search,
        institution_name=study.institution_name,
        attributes=placed[0].parsed.study_attributes(),
        created_at=study.created_at,
    )
    PersonNameWord.objects.bulk_create(
        [PersonNameWord(word=w, study=new) for w in name_words(study.referring_physician_search)]
    )
    Series.objects.filter(study_id=study_pk, series_instance_uid__in=wanted).update(study=new)
    for pk in (study_pk, new.pk):
        recount(pk)
    record(
        "correct",
        request,
        user=user,
        patient_id=study.patient.patient_id,
        study_instance_uid=study.study_instance_uid,
        detail={
            "correction": name,
            "operation": "split",
            "reason": reason,
            "instances": len(placed),
            "series": len(wanted),
            "new_study_instance_uid": new_uid,
        },
    )
    announce_correction([study_pk])  # the store path announces both studies as stored once this commits
    return {study_pk, new.pk}


def recount(study_pk: int) -> None:
    """A study's series and instance counts and modalities, from its rows."""
    series = Series.objects.filter(study_id=study_pk).annotate(n=Count("instances"))
    counts = list(series.values_list("pk", "n", "modality"))
    for pk, n, _ in counts:
        Series.objects.filter(pk=pk).update(number_of_instances=n)
    Study.objects.filter(pk=study_pk).update(
        number_of_series=len(counts),
        number_of_instances=sum(n for _, n, _ in counts),
        modalities_in_study="\\".join(sorted({m for _, _, m in counts if m})),
    )
