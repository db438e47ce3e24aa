"""Merging a study into another, as a correction: its series join the target study.

When one examination arrived under two Study Instance UIDs (or a study was
sent under the wrong patient and the right study already exists),
:func:`merge_study` gives every instance of the *source* study a corrected
copy carrying the target's (0020,000D) Study Instance UID and the target's
patient and study attributes (:data:`~archive.dicom.corrections.CORRECTABLE`;
the old values recorded in each copy's Original Attributes Sequence), stored
through the one ingest path as :mod:`archive.ingest.correct` stores a
correction: the replaced objects are kept as earlier versions, and in one
transaction the source's series move to the target, the target's counts are
recomputed, the emptied source study row goes (and its patient, when left
without studies), and one ``correct`` audit record (``operation: merge``) is
written on each study.

Refused with nothing written: two studies not both visible and live (in the
trash, under a tier move, not online, changed meanwhile), studies of two
sites, a source under a legal hold, or a source that other records hang on (a
report, a grant, anything outside the archive but its worklist row): merge
the other way round, or move those first.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest

from archive.dicom.corrections import CORRECTABLE
from archive.ingest.correct import (
    REASON_MAX,
    Correction,
    CorrectionRefused,
    Seen,
    check_no_moves,
    check_no_trashed_series,
    lock_unchanged,
    readable,
    refuse,
    store_copies,
    study_values,
    switch_to_copies,
    write_copies,
)
from archive.ingest.retention import active_holds
from archive.ingest.signals import announce_correction
from archive.ingest.split import recount
from archive.models import Instance, Patient, Series, Study
from audit.trail import record

#: Apps whose rows about a study are derived data a merge may drop with the emptied source (rebuilt from the index).
DERIVED = frozenset({"archive", "worklist"})


def attached(study: Study) -> list[str]:
    """The kinds of records outside the archive's own (and the worklist's) that hang on ``study``."""
    found = []
    for rel in Study._meta.related_objects:
        model = rel.related_model
        if model._meta.app_label in DERIVED:
            continue
        if model._default_manager.filter(**{rel.field.name: study}).exists():
            found.append(str(model._meta.verbose_name))
    return found


def merge_study(
    source: Study,
    target: Study,
    reason: str,
    *,
    user: Any = None,
    request: HttpRequest | None = None,
) -> Correction:
    """Move every series of ``source`` into ``target`` (both already checked visible to the user)."""
    reason = " ".join(reason.split())
    if not reason or len(reason) > REASON_MAX or "\x00" in reason:
        refuse(request, user, source, "invalid merge", 400, {"reason": "say why the studies are merged"})
    if source.pk == target.pk:
        refuse(request, user, source, "invalid merge", 400, {"target": "a study cannot be merged into itself"})
    if source.site_id != target.site_id:
        refuse(request, user, source, "the studies belong to different sites", 409)
    if Study.objects.filter(pk=target.pk, trashed_at__isnull=True).count() != 1:
        refuse(request, user, source, "the target study is in the trash", 409)
    if active_holds(source):
        refuse(request, user, source, "a legal hold names the source study or its patient", 409)
    hanging = attached(source)
    if hanging:
        refuse(
            request, user, source, f"records hang on the source study ({', '.join(hanging)}): merge the other way", 409
        )
    check_no_moves(request, user, target)
    check_no_trashed_series(request, user, target)
    values, before = study_values(target), study_values(source)
    changes = {k: values.get(k, "") for k in CORRECTABLE if values.get(k, "") != before.get(k, "")}
    if not changes.get("PatientID", "x"):
        changes.pop("PatientID")  # an instance keeps its own rather than lose the attribute
    changes["StudyInstanceUID"] = target.study_instance_uid
    seen = readable(request, user, source, changes)
    staged = write_copies(seen, changes)
    name = uuid.uuid4().hex

    def apply(placed: list[Any]) -> set[int]:
        return _apply(source.pk, target.pk, seen, placed, name, reason, user, request)

    store_copies(request, user, source, seen, staged, apply)
    return Correction(name, len(seen), {"StudyInstanceUID": (source.study_instance_uid, target.study_instance_uid)})


def _apply(
    source_pk: int,
    target_pk: int,
    seen: list[Seen],
    placed: list[Any],
    name: str,
    reason: str,
    user: Any,
    request: HttpRequest | None,
) -> set[int]:
    """Inside the index transaction: check, keep the versions, move the series, drop the source, recount, audit."""
    rows = Instance.objects.filter(series__study_id=source_pk)
    locked = lock_unchanged([source_pk, target_pk], rows, seen, "merge")
    source, target = locked[source_pk], locked[target_pk]
    if attached(source):
        raise CorrectionRefused("records were attached to the source study during the merge", 409)
    switch_to_copies(seen, placed, name, reason, user)
    Series.objects.filter(study_id=source_pk).update(study=target)
    for series_uid, parsed in {c.parsed.series_instance_uid: c.parsed for c in placed}.items():
        Series.objects.filter(series_instance_uid=series_uid).update(attributes=parsed.series_attributes())
    recount(target_pk)
    patient = source.patient
    Study.objects.filter(pk=source_pk).delete()  # empty now; its worklist row goes with it
    left = list(Study.objects.filter(patient=patient).values_list("pk", flat=True)[:1])
    if patient.pk != target.patient_id and not left:
        Patient.objects.filter(pk=patient.pk).delete()
    detail = {"correction": name, "operation": "merge", "reason": reason, "instances": len(placed)}
    for study, role, other in ((source, "source", target), (target, "target", source)):
        record(
            "correct",
            request,
            user=user,
            patient_id=study.patient.patient_id,
            study_instance_uid=study.study_instance_uid,
            detail={**detail, "as": role, "other_study_instance_uid": other.study_instance_uid},
        )
    # A study the source's patient still has: its receivers count that patient's priors again (one fewer now).
    announce_correction([target_pk, *(left if patient.pk != target.patient_id else [])])
    return {target_pk}
