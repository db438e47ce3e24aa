"""The recoverable trash: a deleted study is hidden first and its objects go only when it is purged.

:func:`trash_study` (what every "delete this study" does) asks the one guard
(:func:`archive.ingest.retention.check_deletable`), then marks the study
:attr:`Study.trashed_at` and writes a :class:`TrashEntry`: the index rows and
the stored objects stay exactly as they were, and every read path — which
all start from :mod:`archive.access` — stops seeing the study. For
``PACS_TRASH_DAYS`` (30 by default) :func:`restore_study` brings it back with
its rows, timestamps and bytes untouched.

:func:`purge` removes what has waited long enough: it asks the guard again
(a hold placed, or a retention lengthened, while the study was in the trash
keeps it there), marks the entry ``purging`` (from then on it can no longer
be restored), removes the objects — including both ends of a tier move under
way — and only then the rows. A crash in between leaves rows of a hidden
study whose objects are gone, never objects without rows that ``sweep`` would
index back; the next purge finishes the job. Delete, restore and purge lock
the study's row (and queue on the SQLite writer lock), so two of them at once
run one after the other and the second sees what the first did.

**A series** goes to the trash the same way (:func:`trash_series`), behind
the same guard asked about its study. Its rows move, untouched, under a
*holder*: a study row of their own, copied from the study (patient, site,
dates), under a new UID, marked in the trash. Every read path already hides
studies in the trash (:mod:`archive.access`), so the series disappears from
QIDO, WADO, C-FIND, C-GET, C-MOVE, FHIR and exports at once, while its rows
and objects stay as they were. Its :class:`TrashEntry` is keyed by the
holder's UID (so purge, the task and the admin handle it as any entry) and
names the series and its study. :func:`restore_study` on it puts the series
back under its study (the study's counts as they were); the purge asks the
guard about the study (and the series' own modality and dates) before
removing anything. A series that is the last of its study takes the whole
study to the trash instead. ``reindex --wipe`` rebuilds such a series under
its holder again (:mod:`archive.ingest.reindex`). A series in the trash takes
no new instances (ingest reports the series as belonging to another study)
until it is restored or purged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone
from django_tasks import task
from pydicom.uid import generate_uid

from archive.dicom.corrections import current_values
from archive.ingest import retention
from archive.ingest.delete import remove_objects, stored_copies
from archive.ingest.retention import DeletionRefused, Refusal, deletion_refusal
from archive.ingest.signals import announce, announce_correction
from archive.models import ACTIVE_MOVE_STATES, Instance, LegalHold, Series, Study, TierMove, TrashEntry
from audit.trail import record
from pacs.lib.dblock import write_lock


class TrashError(Exception):
    """The study is not where the operation needs it (not in the trash, already there, being purged)."""


def trash_days() -> int:
    return max(int(getattr(settings, "PACS_TRASH_DAYS", 30)), 0)


def _audit(
    action: str, study_uid: str, patient_id: str, request: HttpRequest | None, actor: str | None, **detail: Any
) -> None:
    outcome = "denied" if detail.get("refused") else "success"
    record(
        action,
        request,
        outcome=outcome,
        patient_id=patient_id,
        study_instance_uid=study_uid,
        detail=detail,
        actor=None if request is not None else actor,
    )


def trash_study(
    study: Study,
    *,
    request: HttpRequest | None = None,
    actor: str = "",
    reason: str = "",
    via: str = "",
    now: datetime | None = None,
) -> TrashEntry:
    """Move ``study`` to the trash, or raise :class:`DeletionRefused` (audited either way)."""
    now = now or retention.clock()
    refusal: Refusal | None = None
    with write_lock(), transaction.atomic():
        locked = Study.objects.select_for_update().select_related("patient").filter(pk=study.pk).first()
        if locked is None or locked.trashed_at is not None:
            raise TrashError("The study is not in the archive (or is already in the trash).")
        refusal = deletion_refusal(locked, now)
        if refusal is None:
            instances = Instance.objects.filter(series__study=locked)
            entry = TrashEntry.objects.create(
                study_instance_uid=locked.study_instance_uid,
                patient_id=locked.patient.patient_id,
                trashed_at=now,
                trashed_by=(request.user.get_username() if request is not None else actor)[:150],
                reason=reason[:500],
                purge_after=now + timedelta(days=trash_days()),
                instances=instances.count(),
                bytes=instances.aggregate(n=Sum("size"))["n"] or 0,
            )
            Study.objects.filter(pk=locked.pk).update(trashed_at=now)
            transaction.on_commit(lambda: schedule_purge(entry.purge_after))
            _audit(
                "delete",
                locked.study_instance_uid,
                locked.patient.patient_id,
                request,
                actor,
                to="trash",
                via=via,
                instances=entry.instances,
                purge_after=entry.purge_after.isoformat(),
                reason=reason,
            )
            return entry
    uid, patient_id = locked.study_instance_uid, locked.patient.patient_id
    _audit("delete", uid, patient_id, request, actor, via=via, **refusal.as_detail())
    raise DeletionRefused(refusal)


def trash_series(
    series: Series,
    *,
    request: HttpRequest | None = None,
    actor: str = "",
    reason: str = "",
    via: str = "",
    now: datetime | None = None,
) -> TrashEntry:
    """Move ``series`` to the trash (the last of its study: the study), or raise :class:`DeletionRefused`."""
    now = now or retention.clock()
    refusal: Refusal | None = None
    with write_lock(), transaction.atomic():
        locked = Series.objects.select_for_update().filter(pk=series.pk).first()
        study = (
            Study.objects.select_for_update().select_related("patient").filter(pk=locked.study_id).first()
            if locked is not None
            else None
        )
        if locked is None or study is None or study.trashed_at is not None:
            raise TrashError("The series is not in the archive (or is already in the trash).")
        last = not Series.objects.filter(study=study).exclude(pk=locked.pk).exists()
        refusal = deletion_refusal(study, now)
        if refusal is None and not last:
            return _move_series_to_trash(locked, study, request, actor, reason, via, now)
    if refusal is None:  # the last series: the study goes, and is restored, as a whole
        return trash_study(study, request=request, actor=actor, reason=reason, via=via, now=now)
    _audit(
        "delete",
        study.study_instance_uid,
        study.patient.patient_id,
        request,
        actor,
        via=via,
        series=locked.series_instance_uid,
        **refusal.as_detail(),
    )
    raise DeletionRefused(refusal)


def _counts(study: Study) -> dict[str, Any]:
    return {
        "number_of_series": study.number_of_series,
        "number_of_instances": study.number_of_instances,
        "modalities_in_study": study.modalities_in_study,
    }


def _recount(study_pk: int, saved: dict[str, Any] | None = None) -> None:
    """Set a study's counts from its rows; ``saved`` counts when they agree with the rows (a restore)."""
    remaining = Series.objects.filter(study_id=study_pk)
    counts: dict[str, Any] = {
        "number_of_series": remaining.count(),
        "number_of_instances": Instance.objects.filter(series__study_id=study_pk).count(),
    }
    modalities = {m for m in remaining.values_list("modality", flat=True) if m}
    if (
        saved
        and all(saved.get(k) == v for k, v in counts.items())
        and set(m for m in str(saved.get("modalities_in_study", "")).split("\\") if m) == modalities
    ):
        counts["modalities_in_study"] = saved["modalities_in_study"]  # exactly as it was, order included
    else:
        counts["modalities_in_study"] = "\\".join(sorted(modalities))
    Study.objects.filter(pk=study_pk).update(**counts)


def _move_series_to_trash(
    series: Series, study: Study, request: HttpRequest | None, actor: str, reason: str, via: str, now: datetime
) -> TrashEntry:
    """Inside the caller's transaction: the series under a new holder study in the trash, and its entry."""
    instances = Instance.objects.filter(series=series)
    count, size = instances.count(), instances.aggregate(n=Sum("size"))["n"] or 0
    copied = {
        f.attname: getattr(study, f.attname)
        for f in Study._meta.concrete_fields
        if not f.primary_key and f.name not in ("study_instance_uid", "trashed_at")
    }
    holder = Study.objects.create(
        **copied
        | {
            "study_instance_uid": generate_uid(prefix=None),  # 2.25.<UUID>
            "trashed_at": now,
            "number_of_series": 1,
            "number_of_instances": count,
            "modalities_in_study": series.modality,
        }
    )
    saved = _counts(study)
    Series.objects.filter(pk=series.pk).update(study=holder)
    _recount(study.pk)
    announce_correction([study.pk])  # the worklist row's modalities and image count, as after a split
    entry = TrashEntry.objects.create(
        study_instance_uid=holder.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        original_study_uid=study.study_instance_uid,
        saved=saved,
        patient_id=study.patient.patient_id,
        trashed_at=now,
        trashed_by=(request.user.get_username() if request is not None else actor)[:150],
        reason=reason[:500],
        purge_after=now + timedelta(days=trash_days()),
        instances=count,
        bytes=size,
    )
    transaction.on_commit(lambda: schedule_purge(entry.purge_after))
    _audit(
        "delete",
        study.study_instance_uid,
        study.patient.patient_id,
        request,
        actor,
        to="trash",
        via=via,
        series=series.series_instance_uid,
        instances=count,
        purge_after=entry.purge_after.isoformat(),
        reason=reason,
    )
    return entry


def find_entry(uid: str) -> TrashEntry | None:
    """The trash entry of the study, or of the series, ``uid`` (what a person knows: never a holder's UID)."""
    return (
        TrashEntry.objects.filter(study_instance_uid=uid, series_instance_uid="").first()
        or TrashEntry.objects.filter(series_instance_uid=uid).first()
    )


def _restore_series(entry: TrashEntry, request: HttpRequest | None, actor: str, via: str) -> TrashEntry:
    """Inside the caller's transaction: the series back under its study, the holder gone, the counts as they were."""
    holder = (
        Study.objects.select_for_update()
        .filter(study_instance_uid=entry.study_instance_uid, trashed_at__isnull=False)
        .first()
    )
    if holder is None:
        raise TrashError("The series has no index rows yet (let `manage.py reindex` finish first).")
    original = Study.objects.select_for_update().filter(study_instance_uid=entry.original_study_uid).first()
    if (
        original is not None
        and original.trashed_at is not None
        and TrashEntry.objects.filter(study_instance_uid=original.study_instance_uid, purging_at__isnull=False).exists()
    ):  # its purge would take the series' rows with it (and maybe its objects): it stays in the trash
        raise TrashError("The series' study is being purged: the series cannot be restored into it.")
    if original is not None and (
        original.patient_id != holder.patient_id
        or current_values(original.attributes or {}) != current_values(holder.attributes or {})
    ):  # its objects still carry the values from before: one study would show two patients' (or studies') values
        raise TrashError(
            "The series' study was corrected after the series went to the trash; its objects still carry the "
            "values from before, so it cannot be restored into the corrected study."
        )
    if original is None:  # the study went for good meanwhile: the holder becomes it again
        Study.objects.filter(pk=holder.pk).update(study_instance_uid=entry.original_study_uid, trashed_at=None)
        study_pk = holder.pk
        announce([study_pk])  # a live study again: its worklist row
    else:
        Series.objects.filter(study=holder).update(study=original)
        Study.objects.filter(pk=holder.pk).delete()
        study_pk = original.pk
        _recount(study_pk, entry.saved)
        announce_correction([study_pk])  # the worklist row's modalities and image count again
    entry.delete()
    _audit(
        "restore",
        entry.original_study_uid,
        entry.patient_id,
        request,
        actor,
        via=via,
        series=entry.series_instance_uid,
        trashed_at=entry.trashed_at.isoformat(),
    )
    return entry


def restore_study(study_uid: str, *, request: HttpRequest | None = None, actor: str = "", via: str = "") -> TrashEntry:
    """Bring a study (for a series' entry: the series) back from the trash; rows, timestamps, objects as they were."""
    with write_lock(), transaction.atomic():
        series_entry = (
            TrashEntry.objects.select_for_update().filter(study_instance_uid=study_uid).exclude(series_instance_uid="")
        ).first()
        if series_entry is not None:
            if series_entry.purging_at is not None:
                raise TrashError("The series is being purged: its objects may already be gone; it cannot be restored.")
            return _restore_series(series_entry, request, actor, via)
        locked = (
            Study.objects.select_for_update()
            .select_related("patient")
            .filter(study_instance_uid=study_uid, trashed_at__isnull=False)
            .first()
        )
        entry = TrashEntry.objects.filter(study_instance_uid=study_uid).first()
        if locked is None or entry is None:
            raise TrashError("No such study in the trash.")
        if entry.purging_at is not None:
            raise TrashError("The study is being purged: its objects may already be gone, so it cannot be restored.")
        Study.objects.filter(pk=locked.pk).update(trashed_at=None)
        entry.delete()
        _audit(
            "restore",
            study_uid,
            locked.patient.patient_id,
            request,
            actor,
            via=via,
            trashed_at=entry.trashed_at.isoformat(),
        )
    return entry


@dataclass
class PurgeReport:
    purged: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (study UID or "series S of STUDY", why)
    instances: int = 0
    bytes: int = 0


def due(now: datetime, older_than: timedelta | None = None) -> list[TrashEntry]:
    """The entries whose time has come: past ``purge_after``, or trashed longer ago than ``older_than``."""
    entries = TrashEntry.objects.all()
    if older_than is None:
        entries = entries.filter(purge_after__lte=now)
    else:
        entries = entries.filter(trashed_at__lte=now - older_than)
    return list(entries.order_by("trashed_at", "pk"))


def purge(now: datetime | None = None, older_than: timedelta | None = None, actor: str = "trash purge") -> PurgeReport:
    """Purge every entry :func:`due` at ``now``; those the guard keeps are reported, not purged."""
    now = now or retention.clock()
    report = PurgeReport()
    for entry in due(now, older_than):
        try:
            instances, size = purge_study(entry.study_instance_uid, now=now, actor=actor)
        except DeletionRefused as exc:
            report.kept.append((str(entry), exc.refusal.message))
        except TrashError as exc:
            report.kept.append((str(entry), str(exc)))
        else:
            report.purged.append(str(entry))  # a study's UID, or "series S of STUDY"
            report.instances += instances
            report.bytes += size
    return report


def purge_study(study_uid: str, *, now: datetime | None = None, actor: str = "trash purge") -> tuple[int, int]:
    """Remove one trashed study's objects, then its rows; returns (instances, bytes). Resumable after a crash.

    Only a study whose row is in the trash is purged, and the guard is asked
    every time, a resumed purge included, before anything is removed. An
    entry whose study row is missing (a ``reindex --wipe`` not yet done) or
    live (rebuilt without its trash mark) is refused and kept: its objects
    may belong to rows that are, or will again be, readable. Only objects of
    instances whose study row is marked trashed are ever removed.
    """
    now = now or retention.clock()
    refusal: Refusal | None = None
    with write_lock(), transaction.atomic():
        entry = TrashEntry.objects.select_for_update().filter(study_instance_uid=study_uid).first()
        if entry is None:
            raise TrashError("No such study in the trash.")
        study = Study.objects.select_for_update().select_related("patient").filter(study_instance_uid=study_uid).first()
        if study is None:
            if entry.purging_at is None:
                raise TrashError(
                    "Nothing to purge: the study has no index rows yet (let `manage.py reindex` finish first)."
                )
        elif study.trashed_at is None:
            raise TrashError(
                "The study's rows are live, not in the trash: nothing is purged (`manage.py reindex` puts them back)."
            )
        else:
            refusal = _purge_refusal(entry, study, now)
            if refusal is None and entry.purging_at is None:
                if TierMove.objects.filter(instance__series__study=study, state__in=ACTIVE_MOVE_STATES).exists():
                    raise TrashError("A tier move of the study is under way; it is purged once the move is done.")
                TrashEntry.objects.filter(pk=entry.pk).update(purging_at=now)
    shown = entry.original_study_uid or study_uid  # a series' entry: its study, never the holder
    series = {"series": entry.series_instance_uid} if entry.series_instance_uid else {}
    if refusal is not None:
        _audit("delete", shown, entry.patient_id, None, actor, via="purge", **series, **refusal.as_detail())
        raise DeletionRefused(refusal)
    instances = Instance.objects.filter(
        series__study__study_instance_uid=study_uid, series__study__trashed_at__isnull=False
    )
    count, size = instances.count(), instances.aggregate(n=Sum("size"))["n"] or 0
    remove_objects(stored_copies(instances))  # objects first: a crash leaves hidden rows, never orphan objects
    with write_lock(), transaction.atomic():
        Study.objects.filter(study_instance_uid=study_uid, trashed_at__isnull=False).delete()
        TrashEntry.objects.filter(pk=entry.pk).delete()
        _audit(
            "delete",
            shown,
            entry.patient_id,
            None,
            actor,
            via="purge",
            **series,
            purged=True,
            instances=count,
            bytes=size,
            trashed_at=entry.trashed_at.isoformat(),
            trashed_by=entry.trashed_by,
        )
    return count, size


def _purge_refusal(entry: TrashEntry, study: Study, now: datetime) -> Refusal | None:
    """The guard's answer for purging ``entry`` (``study``: its rows in the trash).

    For a series, the guard is asked about its study (holds on it or its
    patient; the study's retention), and about the series' own rows too (a
    policy for the series' modality): the stricter answer wins. If the study
    went for good meanwhile, a hold placed on its UID still keeps the series.
    """
    if not entry.original_study_uid:
        return deletion_refusal(study, now)
    original = Study.objects.select_related("patient").filter(study_instance_uid=entry.original_study_uid).first()
    if original is not None:
        refusal = deletion_refusal(original, now)
        if refusal is not None:
            return refusal
    else:
        hold = LegalHold.objects.filter(study_instance_uid=entry.original_study_uid, released_at__isnull=True).first()
        if hold is not None:
            return Refusal(
                "legal-hold",
                f"A legal hold on the study (placed {hold.placed_at:%Y-%m-%d} by "
                f"{hold.placed_by or 'an administrator'}) blocks deletion until an administrator releases it.",
            )
    return deletion_refusal(study, now)


def next_purge() -> datetime | None:
    """When the next entry falls due, if any is still waiting (one kept by the guard is retried daily)."""
    waiting = TrashEntry.objects.filter(purging_at__isnull=True).order_by("purge_after").first()
    if waiting is None:
        return None
    now = retention.clock()
    return waiting.purge_after if waiting.purge_after > now else now + timedelta(days=1)


def schedule_purge(at: datetime) -> None:
    """Ask the task worker to purge at ``at`` (the purge task re-schedules itself while entries wait)."""
    purge_trash.using(run_after=at).enqueue()


@task()
def purge_trash() -> dict[str, int]:
    """Purge the studies whose time in the trash is over (the guard may keep some); then wait for the next one."""
    report = purge(actor="trash purge task")
    after = next_purge()
    if after is not None:
        schedule_purge(max(after, timezone.now() + timedelta(seconds=60)))
    counts = {"purged": len(report.purged), "kept": len(report.kept)}
    return counts | {"instances": report.instances, "bytes": report.bytes}


def reapply() -> int:
    """Put back in the trash the studies a ``reindex`` rebuilt while their :class:`TrashEntry` remained."""
    count = 0
    with write_lock(), transaction.atomic():
        for uid, trashed_at in TrashEntry.objects.values_list("study_instance_uid", "trashed_at"):
            count += Study.objects.filter(study_instance_uid=uid, trashed_at__isnull=True).update(trashed_at=trashed_at)
    return count
