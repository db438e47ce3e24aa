"""The one ingest path: every stored instance, from STOW-RS, C-STORE, the demo
loader or ``reindex``, goes through :func:`store_instance`.

Order of work: parse the staged file (outside any transaction), place the
object in storage atomically, then write the index rows in one transaction.
An instance is acknowledged only after that transaction commits; a crash in
between leaves an object without a row, which :func:`sweep_orphans` removes.
Re-sending identical bytes is idempotent; different bytes under an existing
SOP Instance UID are refused as a conflict and the stored object is kept.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from archive.dicomfile import InvalidInstance, ParsedInstance, parse_instance
from archive.models import Instance, Patient, Series, Site, Study
from archive.storage import StagedObject, get_storage, object_key

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical bytes were already stored
    CONFLICT = "conflict"  # different bytes under an existing SOP Instance UID
    INVALID = "invalid"  # not a DICOM instance we can keep
    MISMATCH = "mismatch"  # Study Instance UID differs from the request's
    FORBIDDEN = "forbidden"  # the study exists but the sender may not see it


# (0008,1197) Failure Reason values used in STOW-RS responses.
FAILURE_REASON = {
    Outcome.INVALID: 0xC000,  # Error: Cannot understand
    Outcome.MISMATCH: 0xA900,  # Error: Data Set does not match the target study
    Outcome.CONFLICT: 0x0111,  # Duplicate SOP Instance with different content
    Outcome.FORBIDDEN: 0x0124,  # Refused: not authorized
}


@dataclass
class StoreResult:
    outcome: Outcome
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE)


@dataclass
class Sender:
    """Who is storing: decides the site of new studies and which studies may grow."""

    site: Site | None = None
    may_add_to: Callable[[str], bool] | None = None


def site_for(parsed: ParsedInstance, sender_site: Site | None = None) -> Site | None:
    """The site a new study belongs to.

    By default (``PACS_STUDY_SITE_SOURCE = "sender"``) a sender that belongs to
    one site decides; otherwise (0008,0080) Institution Name is matched against
    the sites' institution names. ``"institution"`` reverses the order.
    """
    by_institution = _site_by_institution(parsed)
    if settings.PACS_STUDY_SITE_SOURCE == "institution":
        return by_institution or sender_site
    return sender_site or by_institution


def _site_by_institution(parsed: ParsedInstance) -> Site | None:
    name = parsed.index["institution_name"].strip().upper()
    if name:
        for site in Site.objects.exclude(institution_names=""):
            if name in site.institution_name_list():
                return site
    return None


def store_instance(
    staged: StagedObject, expected_study: str | None = None, sender: Sender | None = None
) -> StoreResult:
    """Parse, place and index one staged object; always consumes ``staged``.

    ``sender`` (absent for trusted local imports) limits which existing studies
    may receive instances and supplies the site of new ones.
    """
    sender = sender or Sender()
    try:
        try:
            parsed = parse_instance(staged.path)
        except InvalidInstance as exc:
            return StoreResult(Outcome.INVALID, detail=str(exc))
        result = StoreResult(
            Outcome.STORED,
            sop_class_uid=parsed.sop_class_uid,
            sop_instance_uid=parsed.sop_instance_uid,
            study_instance_uid=parsed.study_instance_uid,
            series_instance_uid=parsed.series_instance_uid,
        )
        if expected_study is not None and parsed.study_instance_uid != expected_study:
            result.outcome = Outcome.MISMATCH
            result.detail = "Study Instance UID does not match the request URL"
            return result
        if sender.may_add_to is not None and not sender.may_add_to(parsed.study_instance_uid):
            result.outcome = Outcome.FORBIDDEN
            result.detail = "the study exists and belongs to a site the sender cannot see"
            return result
        existing = Instance.objects.filter(sop_instance_uid=parsed.sop_instance_uid).values_list("sha256", flat=True)
        for sha in existing:
            result.outcome = Outcome.DUPLICATE if sha == staged.sha256 else Outcome.CONFLICT
            return result
        key = object_key(parsed.study_instance_uid, parsed.series_instance_uid, parsed.sop_instance_uid, staged.sha256)
        storage = get_storage("hot")
        storage.put(key, staged)
        try:
            index_instance(parsed, key, staged.sha256, staged.size, site=sender.site)
        except InvalidSeriesParent:
            storage.delete(key)
            result.outcome = Outcome.INVALID
            result.detail = "Series Instance UID already belongs to another study"
        except IntegrityError:
            # Another request indexed the same SOP Instance UID first.
            stored = Instance.objects.filter(sop_instance_uid=parsed.sop_instance_uid).values_list("sha256", flat=True)
            result.outcome = Outcome.DUPLICATE if list(stored) == [staged.sha256] else Outcome.CONFLICT
            if result.outcome is Outcome.CONFLICT:
                storage.delete(key)
        return result
    finally:
        staged.discard()


def _merge_modalities(current: str, modality: str) -> str:
    values = set(filter(None, current.split("\\")))
    if modality:
        values.add(modality)
    return "\\".join(sorted(values))


@transaction.atomic
def index_instance(
    parsed: ParsedInstance, key: str, sha256: str, size: int, tier: str = "hot", site: Site | None = None
) -> Instance:
    """Write the Patient/Study/Series/Instance rows for one placed object.

    The common case, another instance of a series already indexed, costs three
    statements; the first instance of a series or study takes the full path.
    """
    known = (
        Series.objects.filter(series_instance_uid=parsed.series_instance_uid)
        .values_list("pk", "study_id", "study__study_instance_uid")
        .first()
    )
    if known is None:
        series_pk, study_pk, series_created = _index_parents(parsed, site)
    else:
        series_pk, study_pk, study_uid = known
        if study_uid != parsed.study_instance_uid:
            raise InvalidSeriesParent(parsed.series_instance_uid)
        series_created = False
    instance = Instance.objects.create(
        sop_instance_uid=parsed.sop_instance_uid,
        series_id=series_pk,
        sop_class_uid=parsed.sop_class_uid,
        instance_number=parsed.index["instance_number"],
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        number_of_frames=parsed.number_of_frames,
        rows=parsed.rows,
        columns=parsed.columns,
        size=size,
        sha256=sha256,
        storage_key=key,
        tier=tier,
        metadata=parsed.metadata_text(),
        frames=parsed.frames,
    )
    Series.objects.filter(pk=series_pk).update(number_of_instances=F("number_of_instances") + 1)
    Study.objects.filter(pk=study_pk).update(
        number_of_instances=F("number_of_instances") + 1,
        number_of_series=F("number_of_series") + (1 if series_created else 0),
        updated_at=timezone.now(),
    )
    return instance


def _index_parents(parsed: ParsedInstance, site: Site | None) -> tuple[int, int, bool]:
    """Create (or find) the patient, study and series of a new series."""
    ix: dict[str, Any] = parsed.index
    patient, _ = Patient.objects.get_or_create(
        patient_id=ix["patient_id"],
        issuer_of_patient_id=ix["issuer_of_patient_id"],
        defaults={
            "patient_name": ix["patient_name"],
            "patient_name_search": ix["patient_name_search"],
            "patient_birth_date": ix["patient_birth_date"],
            "patient_sex": ix["patient_sex"],
        },
    )
    study, _ = Study.objects.select_for_update().get_or_create(
        study_instance_uid=parsed.study_instance_uid,
        defaults={
            "patient": patient,
            "site": site_for(parsed, site),
            "study_date": ix["study_date"],
            "study_time": ix["study_time"],
            "accession_number": ix["accession_number"],
            "study_id": ix["study_id"],
            "study_description": ix["study_description"],
            "referring_physician_name": ix["referring_physician_name"],
            "referring_physician_search": ix["referring_physician_search"],
            "institution_name": ix["institution_name"],
            "attributes": parsed.study_attributes(),
        },
    )
    series, created = Series.objects.get_or_create(
        series_instance_uid=parsed.series_instance_uid,
        defaults={
            "study": study,
            "modality": ix["modality"],
            "series_number": ix["series_number"],
            "series_description": ix["series_description"],
            "series_date": ix["series_date"],
            "series_time": ix["series_time"],
            "body_part_examined": ix["body_part_examined"],
            "attributes": parsed.series_attributes(),
        },
    )
    if series.study_id != study.pk:
        raise InvalidSeriesParent(parsed.series_instance_uid)
    modalities = _merge_modalities(study.modalities_in_study, ix["modality"])
    if modalities != study.modalities_in_study:
        Study.objects.filter(pk=study.pk).update(modalities_in_study=modalities)
    return series.pk, study.pk, created


class InvalidSeriesParent(IntegrityError):
    """A Series Instance UID already belongs to another study."""


def sweep_orphans(tier: str = "hot", min_age: timedelta = timedelta(hours=1)) -> int:
    """Remove stored objects that no index row points to, and stale staging files."""
    storage = get_storage(tier)
    cutoff = (timezone.now() - min_age).timestamp()
    removed = 0
    known = set(Instance.objects.filter(tier=tier).values_list("storage_key", flat=True))
    for key in list(storage.keys()):
        if key not in known and storage.path(key).stat().st_mtime < cutoff:
            storage.delete(key)
            removed += 1
    for path in storage.staging_dir.glob("*.part"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
