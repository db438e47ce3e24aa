"""The readiness drill: delete a non-production study to the trash, recover it, prove nothing changed.

What "non-production" means here: a study of a patient whose (0010,0020)
Patient ID begins with :data:`NON_PRODUCTION_PREFIX` (``DRILL-``). Without a
study named, the drill uses the latest such study or, if there is none,
stores a small synthetic one (three CT images) through the one store path.
A study of any other patient is refused: the drill never touches clinical
data. Retention policies do not keep non-production studies (they are no
one's record); a legal hold still does, and then the drill fails saying so.

The drill snapshots every index row of the study (study, series, instances:
every column but ``trashed_at``) and the SHA-256 of every stored object,
re-read from its tier; moves the study to the trash through
:func:`archive.ingest.trash.trash_study`; checks that no read path's
queryset (:mod:`archive.access`) still finds it; restores it through
:func:`archive.ingest.trash.restore_study`; and takes the snapshot again.
Any difference — a byte, a timestamp, a row — is reported and fails the drill.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Model

from archive.access import Visibility, site_studies
from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.retention import NON_PRODUCTION_PREFIX, DeletionRefused
from archive.ingest.store import Outcome, store_instance
from archive.ingest.trash import TrashError, restore_study, trash_study
from archive.models import Instance, Series, Study
from archive.storage.base import CHUNK
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter

ACTOR = "readiness drill"


class DrillError(Exception):
    """The drill could not run (no such study, a clinical study, a refusal)."""


def is_non_production(study: Study) -> bool:
    return study.patient.patient_id.startswith(NON_PRODUCTION_PREFIX)


def _row(obj: Model, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields if f.name not in skip}


def stored_sha256(instance: Instance) -> str:
    digest = hashlib.sha256()
    with instance.open_stored() as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Snapshot:
    rows: dict[str, dict[str, Any]]  # "study", "series <uid>", "instance <uid>" -> columns
    hashes: dict[str, str]  # SOP Instance UID -> SHA-256 of the stored bytes


def snapshot(study_pk: int) -> Snapshot:
    study = Study.objects.get(pk=study_pk)
    rows = {"study": _row(study, ("trashed_at",))}
    for series in Series.objects.filter(study_id=study_pk).order_by("pk"):
        rows[f"series {series.series_instance_uid}"] = _row(series)
    hashes = {}
    for inst in Instance.objects.filter(series__study_id=study_pk).order_by("pk"):
        rows[f"instance {inst.sop_instance_uid}"] = _row(inst)
        hashes[inst.sop_instance_uid] = stored_sha256(inst)
    return Snapshot(rows, hashes)


@dataclass
class DrillReport:
    study_instance_uid: str = ""
    created: bool = False
    instances: int = 0
    bytes: int = 0
    steps: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def make_drill_study() -> Study:
    """Store a small synthetic study of a non-production patient through the one store path."""
    spec = StudySpec(patient_id=f"{NON_PRODUCTION_PREFIX}0001", patient_name="DRILL^READINESS", description="DRILL")
    for data in make_series(spec, "CT", count=3, size=32):
        writer = StagingWriter(get_storage("hot"), max_bytes=len(data))
        try:
            writer.write(data)
            staged = writer.finish()
        except BaseException:
            writer.abort()
            raise
        result = store_instance(staged)
        if result.outcome not in (Outcome.STORED, Outcome.DUPLICATE):
            raise DrillError(f"the synthetic study could not be stored: {result.outcome.value}")
    return Study.objects.select_related("patient").get(study_instance_uid=spec.study_uid)


def pick_study(study_uid: str | None) -> tuple[Study, bool]:
    """The study to drill on and whether the drill created it."""
    live = Study.objects.select_related("patient").filter(trashed_at__isnull=True)
    if study_uid:
        study = live.filter(study_instance_uid=study_uid).first()
        if study is None:
            raise DrillError(f"no such study in the archive: {study_uid}")
        if not is_non_production(study):
            raise DrillError(
                f"{study_uid} is not a non-production study (its Patient ID does not begin with "
                f"{NON_PRODUCTION_PREFIX!r}): the drill never deletes clinical data"
            )
        return study, False
    found = live.filter(patient__patient_id__startswith=NON_PRODUCTION_PREFIX).order_by("-created_at", "-pk").first()
    return (found, False) if found is not None else (make_drill_study(), True)


def compare(before: Snapshot, after: Snapshot) -> list[str]:
    differences = []
    for name in sorted(set(before.rows) | set(after.rows)):
        old, new = before.rows.get(name), after.rows.get(name)
        if old is None or new is None:
            differences.append(f"{name}: {'missing after restore' if new is None else 'appeared after restore'}")
            continue
        for column in sorted(set(old) | set(new)):
            if old.get(column) != new.get(column):
                differences.append(f"{name}: {column} was {old.get(column)!r}, is {new.get(column)!r}")
    for uid in sorted(set(before.hashes) | set(after.hashes)):
        if before.hashes.get(uid) != after.hashes.get(uid):
            was, now = before.hashes.get(uid), after.hashes.get(uid)
            differences.append(f"instance {uid}: stored SHA-256 was {was}, is {now}")
    return differences


def run_drill(study_uid: str | None = None, between: Callable[[Study], None] | None = None) -> DrillReport:
    """Run the drill; ``between`` runs while the study is in the trash (tests use it to break things)."""
    study, created = pick_study(study_uid)
    report = DrillReport(study.study_instance_uid, created)
    before = snapshot(study.pk)
    report.instances = len(before.hashes)
    report.bytes = sum(int(r["size"]) for n, r in before.rows.items() if n.startswith("instance "))
    bad = [
        f"instance {n[9:]}: stored bytes hash to {before.hashes[n[9:]]}, the index says {r['sha256']}"
        for n, r in before.rows.items()
        if n.startswith("instance ") and r["sha256"] != before.hashes[n[9:]]
    ]
    report.steps.append(f"snapshot: {report.instances} instances, {report.bytes} bytes, every SHA-256 re-read")
    if bad:
        report.differences += bad
        return report
    try:
        trash_study(study, actor=ACTOR, reason="readiness drill", via="drill")
    except (DeletionRefused, TrashError) as exc:
        raise DrillError(f"the study could not be deleted to the trash: {exc}") from None
    report.steps.append("deleted to the trash")
    hidden_from = [
        name
        for name, qs in (
            ("an administrator's reads", Visibility(everything=True).studies()),
            ("its site's DICOM devices", site_studies(study.site) if study.site else Study.objects.none()),
        )
        if qs.filter(pk=study.pk).exists()
    ]
    if hidden_from:
        report.differences.append("while in the trash the study was still visible to " + ", ".join(hidden_from))
    else:
        report.steps.append("hidden from every read while in the trash")
    if between is not None:
        between(study)
    restore_study(study.study_instance_uid, actor=ACTOR, via="drill")
    report.steps.append("restored")
    report.differences += compare(before, snapshot(study.pk))
    report.steps.append("rows, timestamps and SHA-256 compared")
    return report
