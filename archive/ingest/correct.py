"""Corrections of a study's patient and study attributes: a new version of every instance, through the one ingest path.

A technologist (or an administrator) corrects a wrong Patient ID, a misspelt
name, a wrong accession number ... :func:`correct_study` reads each stored
instance of the study, writes a corrected copy (:func:`archive.dicom.corrections.rewrite`:
same SOP Instance UID, new bytes, so a new SHA-256 and a new storage key) and
hands all the copies to :func:`archive.ingest.store.store_instances` as a
:class:`~archive.ingest.store.Replacement`: the ordinary store path parses,
places and fsyncs them, and — deliberately, for these objects only — lets them
replace the indexed objects they name instead of refusing them as conflicts.

Inside the one index transaction, :func:`_apply` checks again that the study
is as it was read (not in the trash, no tier move under way, the same
instances with the same objects), keeps every replaced object as an
:class:`~archive.models.InstanceVersion` (only administrators retrieve it),
switches each :class:`~archive.models.Instance` row to its copy, brings the
Patient, Study and Series rows up to date (a new Patient ID moves the study to
that patient, created if needed; a patient left without studies goes) and
writes one ``correct`` audit record: who, the changed attributes old → new,
and why. :data:`~archive.ingest.signals.study_corrected` then tells the
worklist after the commit.

Crash safety: nothing is switched until that single transaction commits, so
an interrupted correction leaves the study exactly as it was, never an index
row pointing to a missing object, and running it again completes it. A copy
placed before a crash (a failed commit removes its own) is an object without
a row under an indexed SOP Instance UID: ``sweep`` reports it as a conflict
and leaves it, as it does every such object (each copy records its
correction in (0400,0561) Original Attributes Sequence, so it is recognisable). Earlier versions are never removed on
their own: they go with their study (a purge or deletion, behind the
retention guard and legal holds; :func:`archive.ingest.delete.stored_copies`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Max, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from archive.dicom.corrections import CORRECTABLE, current_values, invalid, rewrite
from archive.ingest.index import name_words
from archive.ingest.retention import active_holds
from archive.ingest.signals import announce_correction
from archive.ingest.store import Outcome, Placed, Replacement, store_instances
from archive.models import (
    ACTIVE_MOVE_STATES,
    Availability,
    Instance,
    InstanceVersion,
    Patient,
    PersonNameWord,
    Retrieval,
    Series,
    Study,
    TierMove,
    TrashEntry,
    tier_retrieval,
)
from archive.storage.base import StagedObject
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter
from audit.trail import record

#: The longest reason kept.
REASON_MAX = 500
#: Attributes whose change moves the study to another patient.
PATIENT_KEYS = ("PatientID", "IssuerOfPatientID")


class CorrectionRefused(Exception):
    """The correction cannot be made now; ``status`` is the HTTP status that says so (400, 409, 503)."""

    def __init__(self, message: str, status: int = 409, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = dict(errors or {})


@dataclass
class Correction:
    """What a committed correction did."""

    correction: str
    instances: int
    changes: dict[str, tuple[str, str]] = field(default_factory=dict)  # keyword -> (old, new)


def validate(changes: Mapping[str, str], reason: str) -> dict[str, str]:
    """The errors of a requested correction, by keyword (``reason`` for the reason); empty when it is valid."""
    errors = {k: why for k, v in changes.items() if (why := invalid(k, v))}
    if not reason.strip():
        errors["reason"] = "say why the correction is made"
    elif "\x00" in reason:
        errors["reason"] = "no NUL characters"
    elif len(reason) > REASON_MAX:
        errors["reason"] = f"at most {REASON_MAX} characters"
    return errors


def study_values(study: Study) -> dict[str, str]:
    """The correctable attributes of ``study`` as its index holds them now."""
    return current_values(study.attributes or {})


@dataclass(frozen=True)
class Seen:
    """One instance as the correction read it."""

    pk: int
    sop_instance_uid: str
    tier: str
    storage_key: str
    sha256: str
    size: int


def correct_study(
    study: Study,
    changes: Mapping[str, str],
    reason: str,
    *,
    user: Any = None,
    request: HttpRequest | None = None,
) -> Correction:
    """Correct ``changes`` (keyword -> new value, "" to remove) on every instance of ``study``; audited.

    The caller decided that the user may see and correct the study. Raises
    :class:`CorrectionRefused` (nothing written, the refusal audited) when a
    value is invalid (400), nothing would change (400), the study is in the
    trash, under a tier move, not online or changed meanwhile (409), or a
    legal hold on its patient forbids moving it to another Patient ID (409).
    """
    reason = " ".join(reason.split())
    errors = validate(changes, reason)
    if errors:
        refuse(request, user, study, "invalid values", 400, errors)
    old = study_values(study)
    wanted = {k: v for k, v in changes.items() if old.get(k, "") != v}
    if not wanted:
        refuse(request, user, study, "nothing to correct: the values are those stored", 400)
    seen = readable(request, user, study, wanted)
    staged = write_copies(seen, wanted)
    name = uuid.uuid4().hex
    diff = {k: (old.get(k, ""), v) for k, v in wanted.items()}

    def apply(placed: list[Placed]) -> set[int]:
        return _apply(study.pk, seen, placed, name, diff, reason, user, request)

    store_copies(request, user, study, seen, staged, apply)
    return Correction(name, len(seen), diff)


def write_copies(seen: list[Seen], changes: Mapping[str, str]) -> list[StagedObject]:
    """A staged corrected copy of each instance of ``seen`` (read from where the index says it is)."""
    staging = get_storage("hot")
    staged: list[StagedObject] = []
    try:
        for item in seen:
            writer = StagingWriter(staging, settings.PACS_STOW_MAX_BYTES)
            try:
                with get_storage(item.tier).open(item.storage_key) as source:
                    writer.write(rewrite(source, dict(changes)))
            except BaseException:
                writer.abort()
                raise
            staged.append(writer.finish())
    except BaseException:
        for done in staged:
            done.discard()
        raise
    return staged


def store_copies(
    request: HttpRequest | None,
    user: Any,
    study: Study,
    seen: list[Seen],
    staged: list[StagedObject],
    apply: Callable[[list[Placed]], set[int]],
) -> None:
    """Store ``staged`` through the one ingest path, replacing ``seen``; refused (and audited) unless all were."""
    results = store_instances(staged, replacing=Replacement({s.sop_instance_uid: s.sha256 for s in seen}, apply))
    failed = [r for r in results if r.outcome is not Outcome.STORED]
    if failed:
        status = 503 if failed[0].outcome is Outcome.UNAVAILABLE else 409
        refuse(request, user, study, f"the archive refused the corrected copies: {failed[0].detail}", status)


def refuse(
    request: HttpRequest | None,
    user: Any,
    study: Study,
    why: str,
    status: int,
    errors: Mapping[str, str] | None = None,
) -> None:
    detail: dict[str, Any] = {"reason": why}
    if errors:
        detail["invalid"] = sorted(errors)
    record("correct", request, user=user, outcome="denied", study_instance_uid=study.study_instance_uid, detail=detail)
    raise CorrectionRefused(why, status, errors)


def readable(
    request: HttpRequest | None,
    user: Any,
    study: Study,
    wanted: Mapping[str, str],
    series_uids: list[str] | None = None,
) -> list[Seen]:
    """The study's instances (of ``series_uids`` only, when given), each readable now; refused while the study
    is in the trash, moving or offline."""
    fresh = Study.objects.filter(pk=study.pk).first()
    if fresh is None or fresh.trashed_at is not None:
        refuse(request, user, study, "the study is in the trash (restore it first)", 409)
    if any(k in wanted for k in PATIENT_KEYS) and any(not h.study_instance_uid for h in active_holds(study)):
        refuse(request, user, study, "a legal hold on the patient: an administrator must move the hold first", 409)
    check_no_moves(request, user, study)
    check_no_trashed_series(request, user, study)
    rows = Instance.objects.filter(series__study_id=study.pk).order_by("pk")
    if series_uids is not None:
        rows = rows.filter(series__series_instance_uid__in=series_uids)
    seen = seen_of(rows)
    if not seen:
        refuse(request, user, study, "the study has no instances", 409)
    offline = rows.exclude(availability=Availability.ONLINE).exists()
    if offline or any(tier_retrieval(t) != Retrieval.IMMEDIATE for t in {s.tier for s in seen}):
        refuse(request, user, study, "some instances are not online: restore the study first", 409)
    return seen


def seen_of(rows: QuerySet[Instance]) -> list[Seen]:
    """The instances ``rows`` as a correction reads them: what must still be so when it switches the rows."""
    return [Seen(*r) for r in rows.values_list("pk", "sop_instance_uid", "tier", "storage_key", "sha256", "size")]


def lock_unchanged(study_pks: list[int], rows: QuerySet[Instance], seen: list[Seen], what: str) -> dict[int, Study]:
    """Inside the index transaction: lock the studies, by primary key; refused (409) if one went to the trash,
    a tier move of one began, or ``rows`` are no longer what the ``what`` (correction, split, merge) read."""
    wanted = sorted(set(study_pks))
    locked = {s.pk: s for s in Study.objects.select_for_update().select_related("patient").filter(pk__in=wanted)}
    if len(locked) != len(wanted) or any(s.trashed_at is not None for s in locked.values()):
        raise CorrectionRefused(f"a study went to the trash during the {what}", 409)
    if TierMove.objects.filter(instance__series__study_id__in=wanted, state__in=ACTIVE_MOVE_STATES).exists():
        raise CorrectionRefused(f"a tier move began during the {what}: try again once it is done", 409)
    if seen_of(rows.order_by("pk")) != seen:
        raise CorrectionRefused(f"the study changed during the {what} (instances added, moved or corrected)", 409)
    return locked


def check_no_trashed_series(request: HttpRequest | None, user: Any, study: Study) -> None:
    """Refused while a series of the study is in the trash: a restore would bring it back uncorrected."""
    if TrashEntry.objects.filter(original_study_uid=study.study_instance_uid).exists():
        refuse(request, user, study, "a series of the study is in the trash: restore it (or let it go) first", 409)


def check_no_moves(request: HttpRequest | None, user: Any, study: Study) -> None:
    if TierMove.objects.filter(instance__series__study_id=study.pk, state__in=ACTIVE_MOVE_STATES).exists():
        refuse(request, user, study, "a tier move of the study is under way: correct it once the move is done", 409)


def _apply(
    study_pk: int,
    seen: list[Seen],
    placed: list[Placed],
    name: str,
    diff: dict[str, tuple[str, str]],
    reason: str,
    user: Any,
    request: HttpRequest | None,
) -> set[int]:
    """Inside the index transaction: check nothing changed, keep the versions, switch the rows, audit."""
    rows = Instance.objects.filter(series__study_id=study_pk)
    study = lock_unchanged([study_pk], rows, seen, "correction")[study_pk]
    switch_to_copies(seen, placed, name, reason, user)
    _update_parents(study, placed)
    study.refresh_from_db()
    record(
        "correct",
        request,
        user=user,
        patient_id=study.patient.patient_id,
        study_instance_uid=study.study_instance_uid,
        detail={
            "correction": name,
            "reason": reason,
            "instances": len(placed),
            "changes": {CORRECTABLE[k][2]: {"from": a, "to": b} for k, (a, b) in sorted(diff.items())},
        },
    )
    announce_correction([study_pk])
    return {study_pk}


def switch_to_copies(seen: list[Seen], placed: list[Placed], name: str, reason: str, user: Any) -> None:
    """Inside the index transaction: keep each replaced object as an earlier version and point its row to the copy."""
    by_uid = {s.sop_instance_uid: s for s in seen}
    last = dict(
        InstanceVersion.objects.filter(instance_id__in=[s.pk for s in seen])
        .values("instance_id")
        .annotate(n=Max("version"))
        .values_list("instance_id", "n")
    )
    now = timezone.now()
    by = (user.get_username() if user is not None else "")[:150]
    versions = []
    for copy in placed:
        old = by_uid[copy.parsed.sop_instance_uid]
        versions.append(
            InstanceVersion(
                instance_id=old.pk,
                version=last.get(old.pk, 0) + 1,
                sop_instance_uid=old.sop_instance_uid,
                tier=old.tier,
                storage_key=old.storage_key,
                sha256=old.sha256,
                size=old.size,
                replaced_at=now,
                replaced_by=by,
                reason=reason,
                correction=name,
            )
        )
        parsed = copy.parsed
        Instance.objects.filter(pk=old.pk).update(
            storage_key=copy.key,
            sha256=copy.sha256,
            size=copy.size,
            tier="hot",
            stored_size=None,
            availability=Availability.ONLINE,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            metadata=parsed.metadata_text(),
            frames=parsed.frames,
            number_of_frames=parsed.number_of_frames,
            rows=parsed.rows,
            columns=parsed.columns,
            instance_number=parsed.index.instance_number,
        )
    InstanceVersion.objects.bulk_create(versions)


def _update_parents(study: Study, placed: list[Placed]) -> None:
    """The Patient, Study and Series rows from the corrected copies (the first copy speaks for the study)."""
    ix = placed[0].parsed.index
    before = study.patient
    patient, created = Patient.objects.get_or_create(
        patient_id=ix.patient_id, issuer_of_patient_id=ix.issuer_of_patient_id
    )
    demographics = {
        "patient_name": ix.patient_name,
        "patient_name_search": ix.patient_name_search,
        "patient_birth_date": ix.patient_birth_date,
        "patient_sex": ix.patient_sex,
    }
    # A study moved to a patient the archive already holds leaves that patient's demographics as they are
    # (as ingest does): the copies' values would otherwise rename the patient of every other study.
    moved_to_existing = not created and patient.pk != before.pk
    if created or (not moved_to_existing and any(getattr(patient, k) != v for k, v in demographics.items())):
        Patient.objects.filter(pk=patient.pk).update(**demographics)
        PersonNameWord.objects.filter(patient=patient).delete()
        PersonNameWord.objects.bulk_create(
            [PersonNameWord(word=w, patient=patient) for w in name_words(ix.patient_name_search)]
        )
    Study.objects.filter(pk=study.pk).update(
        patient=patient,
        study_date=ix.study_date,
        study_time=ix.study_time,
        accession_number=ix.accession_number,
        study_id=ix.study_id,
        study_description=ix.study_description,
        referring_physician_name=ix.referring_physician_name,
        referring_physician_search=ix.referring_physician_search,
        attributes=placed[0].parsed.study_attributes(),
        updated_at=timezone.now(),
    )
    if study.referring_physician_search != ix.referring_physician_search:
        PersonNameWord.objects.filter(study=study).delete()
        PersonNameWord.objects.bulk_create(
            [PersonNameWord(word=w, study=study) for w in name_words(ix.referring_physician_search)]
        )
    by_series = {copy.parsed.series_instance_uid: copy.parsed for copy in placed}
    for series_uid, parsed in by_series.items():
        Series.objects.filter(series_instance_uid=series_uid).update(attributes=parsed.series_attributes())
    if patient.pk != before.pk and not Study.objects.filter(patient=before).exists():
        before.delete()  # a patient with no study left: a patient-level query no longer finds it
