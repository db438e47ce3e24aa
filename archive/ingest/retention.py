"""The one guard of every deletion: legal holds first, then retention.

Every path that deletes a study or a series — DICOMweb DELETE, the admin,
``manage.py trash``, the trash purge (command and task) — asks
:func:`deletion_refusal` and deletes nothing when it answers. It answers
with a :class:`Refusal` that says why in plain words.

**Legal holds** (:class:`archive.models.LegalHold`) on the study, or on its
patient (Patient ID and issuer), block deletion until an administrator
releases them.

**Retention** (:class:`archive.models.RetentionPolicy`): of the enabled
policies that apply to a study (its site or every site; a modality it holds
or any), the latest "keep until" date wins. Unknown dates never shorten a
retention:

- from the study date: a missing or unreadable (0008,0020) Study Date counts
  from receipt instead (a study is received after it is made);
- from receipt: :attr:`Study.created_at` (``reindex --wipe`` resets it to the
  reindex time, which only lengthens retention);
- life of the patient plus N years: from the date of death an administrator
  recorded (:class:`archive.models.PatientDeath`); without one, the patient
  is taken to live to :data:`ASSUMED_LIFESPAN_YEARS` from their birth date;
  without a readable birth date either, the study is kept indefinitely.

No applicable policy: retention does not stop a deletion (holds still do).
Studies of non-production patients (Patient ID beginning ``DRILL-``, see
:mod:`archive.ingest.drill`) are under no retention policy.
:func:`clock` is the one source of "now" here, so tests can move it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import Q
from django.utils import timezone

from archive.models import LegalHold, PatientDeath, RetentionBasis, RetentionPolicy, Study

#: Patient IDs that mark a patient's studies as non-production (drills, phantoms): no retention policy keeps them.
NON_PRODUCTION_PREFIX = "DRILL-"

#: Without a recorded death, a patient is assumed alive until this age.
ASSUMED_LIFESPAN_YEARS = 120


def clock() -> datetime:
    """Now, for retention decisions (tests replace it)."""
    return timezone.now()


@dataclass(frozen=True)
class Refusal:
    """Why a study may not be deleted now."""

    why: str  # "legal-hold" or "retention"
    message: str
    until: date | None = None  # retention: the first day it may go (None: indefinitely)

    def as_detail(self) -> dict[str, str]:
        return {"refused": self.why, "until": self.until.isoformat() if self.until else "", "message": self.message}


class DeletionRefused(Exception):
    """Raised by deleting functions when :func:`deletion_refusal` says no."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def parse_da(value: str) -> date | None:
    """A DICOM DA value (YYYYMMDD) as a date; None when empty or unreadable."""
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])) if len(value) == 8 and value.isdigit() else None
    except ValueError:
        return None


def add_years(start: date, years: int) -> date:
    """``start`` plus ``years`` (29 February becomes 1 March: never earlier); date.max when beyond the calendar."""
    try:
        return start.replace(year=start.year + years)
    except ValueError:
        if start.year + years > date.max.year:
            return date.max
        return date(start.year + years, 3, 1)


def active_holds(study: Study) -> list[LegalHold]:
    """The unreleased holds on ``study`` or on its patient.

    A hold on a Patient ID without an issuer holds that Patient ID under every
    issuer: when in doubt, a hold blocks.
    """
    patient = study.patient
    on = Q(study_instance_uid=study.study_instance_uid) | Q(
        patient_id=patient.patient_id, issuer_of_patient_id__in={"", patient.issuer_of_patient_id}
    )
    return list(LegalHold.objects.filter(on, released_at__isnull=True).order_by("placed_at"))


def applicable_policies(study: Study) -> list[RetentionPolicy]:
    if study.patient.patient_id.startswith(NON_PRODUCTION_PREFIX):
        return []  # no one's record: the readiness drill must be able to delete it (holds still apply)
    modalities = {m.upper() for m in study.modalities_in_study.split("\\") if m}
    found = RetentionPolicy.objects.filter(enabled=True).filter(Q(site__isnull=True) | Q(site_id=study.site_id))
    return [p for p in found if not p.modality or p.modality.upper() in modalities]


def policy_until(policy: RetentionPolicy, study: Study) -> date:
    """The first day ``policy`` lets ``study`` go (date.max: indefinitely)."""
    received = timezone.localdate(study.created_at)
    if policy.basis == RetentionBasis.RECEIPT:
        return add_years(received, policy.years)
    if policy.basis == RetentionBasis.STUDY_DATE:
        return add_years(parse_da(study.study_date) or received, policy.years)
    patient = study.patient
    death = (
        PatientDeath.objects.filter(patient_id=patient.patient_id, issuer_of_patient_id=patient.issuer_of_patient_id)
        .values_list("death_date", flat=True)
        .first()
    )
    if death is None:
        born = parse_da(patient.patient_birth_date)
        if born is None:
            return date.max
        death = add_years(born, ASSUMED_LIFESPAN_YEARS)
    return add_years(death, policy.years)


def keep_until(study: Study) -> tuple[date, RetentionPolicy] | None:
    """The latest "keep until" of the policies that apply, with the policy that sets it; None if none applies."""
    found = [(policy_until(p, study), p) for p in applicable_policies(study)]
    return max(found, key=lambda pair: (pair[0], -pair[1].pk)) if found else None


def deletion_refusal(study: Study, now: datetime | None = None) -> Refusal | None:
    """Why ``study`` may not be deleted at ``now`` (default :func:`clock`), or None if it may."""
    holds = active_holds(study)
    if holds:
        hold = holds[0]
        what = "the study" if hold.study_instance_uid else "the patient"
        return Refusal(
            "legal-hold",
            f"A legal hold on {what} (placed {hold.placed_at:%Y-%m-%d} by {hold.placed_by or 'an administrator'}) "
            "blocks deletion until an administrator releases it.",
        )
    kept = keep_until(study)
    today = timezone.localdate(now or clock())
    if kept is not None and kept[0] > today:
        until, policy = kept
        if until == date.max:
            message = f'Retention policy "{policy.name}" keeps this study indefinitely (a date it needs is unknown).'
            return Refusal("retention", message, None)
        return Refusal("retention", f'Retention policy "{policy.name}" keeps this study until {until:%Y-%m-%d}.', until)
    return None


def check_deletable(study: Study, now: datetime | None = None) -> None:
    """Raise :class:`DeletionRefused` unless ``study`` may be deleted now."""
    refusal = deletion_refusal(study, now)
    if refusal is not None:
        raise DeletionRefused(refusal)
