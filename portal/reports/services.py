"""What can be done to a report, and by whom: open, save a draft, sign, amend, flag a critical result.

Thin views call these functions; each one checks its user, writes in one
transaction under the writers' queue and records its audit event in that
same transaction, so a change never exists without its record.

* **Reading.** A study's report is reached only through the one access policy
  (:func:`archive.access.visible_studies`): whoever may not see the study is
  told it does not exist. Readers (radiologists and administrators) see the
  working text and every version; everyone else who sees the study (referring
  clinicians, technologists) sees only final and amended versions.
* **Saving** (autosave and the Save button) is a compare-and-set on
  ``Report.version``: the save names the version it edited, and a stale one
  raises :class:`Conflict` holding the current text, which the editor shows
  beside the text it tried to save. Only the study's claimant (or an
  administrator) edits, and never a final or amended report.
* **Signing** preliminary or final, or **amending** a final report with an
  addendum, makes a new :class:`~portal.reports.models.ReportVersion`; a
  final or amended text is stored into the archive as an Encapsulated PDF and
  then a Comprehensive SR through the one ingest path
  (:func:`archive.ingest.store.store_instances`), then the report and the
  worklist row move on. A preliminary is never stored into the archive
  (DICOMweb serves the study to clinicians). If anything fails after a copy
  was stored, the copies are removed again, so no signed SR outlives a
  signature that was not recorded. Only a radiologist who holds the claim (or is an
  administrator) signs; a final signature and an addendum need a session that
  passed its second factor recently (:class:`NeedsFreshMFA` otherwise). The
  report is held while its copies are stored (no save or second signature
  meanwhile), so the archive never keeps the copies of a signature that lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from archive.access import visible_studies
from archive.ingest.delete import discard_unacknowledged
from archive.ingest.store import Outcome, Sender, StoreResult, record_stores, store_instances
from archive.models import Study
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter
from audit.trail import record
from pacs.lib.dblock import write_lock
from portal.access import is_administrator
from portal.accounts.roles import Role, roles_of
from portal.models import UserProfile
from portal.reports import dicom
from portal.reports.models import (
    MAX_SECTION_LENGTH,
    RELEASED,
    SECTION_NAMES,
    CriticalResult,
    Report,
    ReportStatus,
    ReportTemplate,
    ReportVersion,
)
from portal.worklist import claims, workflow
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import InvalidTransition, Status

#: Worklist statuses in which the reader who claimed the study still holds it.
CLAIMED = (Status.IN_PROGRESS, Status.PRELIMINARY, Status.FINAL, Status.AMENDED)


class Refused(Exception):
    """The user may not do this to the report (HTTP 403), or the report's state does not allow it (409)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class Conflict(Exception):
    """The save edited an older version than the current one; ``current`` is the report as it is now."""

    def __init__(self, current: Report) -> None:
        super().__init__(f"the report changed since version {current.version - 1}")
        self.current = current


class NeedsFreshMFA(Exception):
    """Signing final (or amending) needs a second factor passed within ``PACS_REPORT_SIGN_MFA_SECONDS``."""


class StoreFailed(Exception):
    """The archive could not take the report's DICOM copies (HTTP 503): nothing was signed."""


# --- who may do what ---


def is_reader(user: Any) -> bool:
    """Radiologists and administrators read drafts and write reports."""
    return is_administrator(user) or Role.RADIOLOGIST in roles_of(user)


def visible_study(user: Any, study_instance_uid: str) -> Study | None:
    """The study if ``user`` may see it (the one access policy), else None."""
    return visible_studies(user).filter(study_instance_uid=study_instance_uid).select_related("patient").first()


def _item(study: Study) -> WorklistItem | None:
    return WorklistItem.objects.filter(study=study).first()


def holds_claim(user: Any, study: Study) -> bool:
    """Is ``user`` the study's claimant (the reader it is locked to, who also amends it once final)?"""
    item = _item(study)
    return bool(item and item.claimed_by_id == user.pk and item.status in CLAIMED)


def may_edit(user: Any, report: Report) -> bool:
    return not report.locked and is_reader(user) and (holds_claim(user, report.study) or is_administrator(user))


def may_sign(user: Any, study: Study) -> bool:
    """Radiologists only, and of them the claimant or an administrator."""
    if Role.RADIOLOGIST not in roles_of(user):
        return False
    return holds_claim(user, study) or is_administrator(user)


def released_version(report: Report | None) -> ReportVersion | None:
    """The latest final or amended version: what clinicians may read (never a draft or a preliminary)."""
    if report is None:
        return None
    return report.versions.filter(status__in=RELEASED).order_by("-number").first()


def _audit(
    action: str, request: HttpRequest | None, user: Any, study: Study, outcome: str = "success", **detail: Any
) -> None:
    record(
        action,
        request,
        user=user,
        outcome=outcome,
        patient_id=study.patient.patient_id,
        study_instance_uid=study.study_instance_uid,
        detail={k: v for k, v in detail.items() if v not in ("", None)},
    )


def refuse(action: str, request: HttpRequest | None, user: Any, study: Study, reason: str) -> None:
    """The audit record of a refusal (written on its own: nothing else changed)."""
    _audit(action, request, user, study, outcome="denied", reason=reason)


# --- opening and saving ---

#: A signature whose DICOM copies are being stored holds the report this long at most (a crashed one is forgotten).
SIGNING_HOLD = timedelta(minutes=2)


def _not_signing(now: datetime) -> Q:
    """No signature under way (or only one abandoned longer than :data:`SIGNING_HOLD` ago)."""
    return Q(signing_since__isnull=True) | Q(signing_since__lt=now - SIGNING_HOLD)


def open_report(study: Study, user: Any) -> Report | None:
    """The study's report; a reader opening it first starts it from the best template. None for others when absent."""
    report = Report.objects.filter(study=study).first()
    if report is not None or not is_reader(user):
        return report
    item = _item(study)
    template = ReportTemplate.best_for(study.modalities_in_study, item.body_part if item else "")
    start = {name: getattr(template, name) for name in SECTION_NAMES} if template else {}
    with write_lock(), transaction.atomic():
        report, _ = Report.objects.get_or_create(
            study=study,
            defaults={
                "study_instance_uid": study.study_instance_uid,
                "sr_series_instance_uid": dicom.new_uid(),
                "pdf_series_instance_uid": dicom.new_uid(),
                **start,
            },
        )
    return report


def clean_sections(data: Any, current: dict[str, str] | None = None) -> dict[str, str]:
    """The posted sections: text with Windows line ends made plain, each at most :data:`MAX_SECTION_LENGTH`.

    A section not posted keeps its ``current`` text (empty when there is none).
    """
    sections = {}
    for name in SECTION_NAMES:
        value = str(data[name] if name in data else (current or {}).get(name, ""))
        value = value.replace("\r\n", "\n").replace("\x00", "")
        if len(value) > MAX_SECTION_LENGTH:
            raise Refused(f"the {name} section is longer than {MAX_SECTION_LENGTH} characters", status=400)
        sections[name] = value
    return sections


def save_draft(
    report: Report, user: Any, sections: dict[str, str], edited: int, request: HttpRequest | None = None
) -> Report:
    """Save ``sections`` over version ``edited``.

    :class:`Conflict` if someone saved since, :class:`Refused` if the user may not edit it.
    """
    if not may_edit(user, report):
        reason = "a signed final report is amended, not edited" if report.locked else "only the claimant edits"
        refuse("report_save", request, user, report.study, reason)
        raise Refused(reason, status=409 if report.locked else 403)
    now = timezone.now()
    with write_lock(), transaction.atomic():
        changed = Report.objects.filter(
            _not_signing(now), pk=report.pk, version=edited, status__in=(ReportStatus.DRAFT, ReportStatus.PRELIMINARY)
        ).update(version=edited + 1, updated_by=user, updated_at=now, **sections)
        if changed:
            _audit("report_save", request, user, report.study, version=edited + 1)
    if not changed:  # recorded on its own: the refused save changed nothing
        current = Report.objects.get(pk=report.pk)
        _audit("report_save", request, user, report.study, "denied", reason="conflict", current=current.version)
        raise Conflict(current)
    item = _item(report.study)
    if item is not None:
        claims.touch(item, user, now)
    report.refresh_from_db()
    return report


# --- signing ---


@dataclass(frozen=True)
class _Signing:
    status: ReportStatus
    sections: dict[str, str]
    addendum: str
    predecessor: ReportVersion | None


def mfa_window() -> int:
    return int(settings.PACS_REPORT_SIGN_MFA_SECONDS)


def sign(
    report: Report,
    user: Any,
    level: ReportStatus,
    edited: int,
    request: HttpRequest | None = None,
    *,
    mfa_fresh: bool = False,
) -> ReportVersion:
    """Sign the current text (version ``edited``) preliminary or final."""
    if level not in (ReportStatus.PRELIMINARY, ReportStatus.FINAL):
        raise Refused("a report is signed preliminary or final", status=400)
    action = "report_sign"
    _check_signer(report, user, request, action, final=level == ReportStatus.FINAL, mfa_fresh=mfa_fresh)
    if report.locked:
        refuse(action, request, user, report.study, "a final report is only amended")
        raise Refused("a final report cannot be signed again: add an addendum", status=409)
    if report.version != edited:
        raise Conflict(report)
    return _sign(report, user, edited, _Signing(level, report.sections(), "", None), request, action)


def amend(
    report: Report,
    user: Any,
    addendum: str,
    edited: int,
    request: HttpRequest | None = None,
    *,
    mfa_fresh: bool = False,
) -> ReportVersion:
    """Add ``addendum`` to a final (or amended) report: a new version, linked to the one it amends."""
    action = "report_amend"
    _check_signer(report, user, request, action, final=True, mfa_fresh=mfa_fresh)
    text = addendum.replace("\r\n", "\n").replace("\x00", "")
    if not text.strip() or len(text) > MAX_SECTION_LENGTH:
        raise Refused(f"an addendum holds text, at most {MAX_SECTION_LENGTH} characters", status=400)
    if not report.locked:
        refuse(action, request, user, report.study, "only a final report is amended")
        raise Refused("only a final report is amended: edit the draft instead", status=409)
    if report.version != edited:
        raise Conflict(report)
    latest = report.versions.order_by("-number").first()
    assert latest is not None  # a final report has its versions
    return _sign(report, user, edited, _Signing(ReportStatus.AMENDED, latest.sections(), text, latest), request, action)


def _check_signer(
    report: Report, user: Any, request: HttpRequest | None, action: str, *, final: bool, mfa_fresh: bool
) -> None:
    if not may_sign(user, report.study):
        refuse(action, request, user, report.study, "only the radiologist holding the claim signs")
        raise Refused("only the radiologist holding the claim (or an administrator who reads) signs")
    if final and not mfa_fresh:
        refuse(action, request, user, report.study, "second factor not recent")
        raise NeedsFreshMFA()


def _person_name(user: Any) -> str:
    """The signer as a DICOM person name: their profile's, else family^given, else their user name."""
    profile = UserProfile.objects.filter(user=user).values_list("dicom_person_name", flat=True).first() or ""
    if profile.strip():
        return str(profile.strip())
    if user.last_name or user.first_name:
        return f"{user.last_name}^{user.first_name}"
    return f"{user.get_username()}^"


def _stage(data: bytes) -> Any:
    writer = StagingWriter(get_storage("hot"), max_bytes=len(data))
    try:
        writer.write(data)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def _sign(
    report: Report, user: Any, edited: int, what: _Signing, request: HttpRequest | None, action: str
) -> ReportVersion:
    """Hold the report (``signing_since``), store its DICOM copies, then record the signature; the hold ends either way.

    While held, saves and other signatures of the report are refused as conflicts, so the copies stored are
    never those of a signature that loses a race. A hold left by a crashed process lapses after
    :data:`SIGNING_HOLD`.
    """
    study = report.study
    now = timezone.now()
    number = (report.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    addenda: list[tuple[str, datetime, str]] = []
    if what.predecessor is not None:
        addenda = [(v.signer_name, v.signed_at, v.addendum) for v in what.predecessor.addenda()]
    signer = user.get_full_name() or user.get_username()
    person = _person_name(user)
    addenda_now = [*addenda, (signer, now, what.addendum)] if what.addendum else addenda
    text = dicom.SignedText(
        status=what.status,
        sections=what.sections,
        addenda=addenda_now,
        signer_name=signer,
        signer_person_name=person,
        organization=(study.institution_name or (study.site.name if study.site else "") or dicom.MANUFACTURER),
        signed_at=now,
        number=number,
    )
    with write_lock(), transaction.atomic():  # hold the report: no save or other signature while its copies are stored
        held = Report.objects.filter(_not_signing(now), pk=report.pk, version=edited, status=report.status).update(
            signing_since=now
        )
    if not held:
        raise Conflict(Report.objects.get(pk=report.pk))
    hold = _Hold(report.pk, now)
    try:
        return _store_and_sign(report, user, edited, what, request, action, text, hold, number)
    finally:  # signed or not, the hold ends (a signed report's hold ended with its signature)
        with write_lock(), transaction.atomic():
            Report.objects.filter(pk=report.pk, signing_since=hold.since).update(signing_since=None)


@dataclass
class _Hold:
    """A report's signing hold: ``signing_since`` as this signature last set it."""

    report_pk: int
    since: datetime

    def renew(self) -> None:
        """Move the hold to now, so a long store never outlives :data:`SIGNING_HOLD`; Conflict if it lapsed."""
        renewed = max(timezone.now(), self.since + timedelta(microseconds=1))
        with write_lock(), transaction.atomic():
            kept = Report.objects.filter(pk=self.report_pk, signing_since=self.since).update(signing_since=renewed)
        if not kept:
            raise Conflict(Report.objects.get(pk=self.report_pk))
        self.since = renewed


def _store_and_sign(
    report: Report,
    user: Any,
    edited: int,
    what: _Signing,
    request: HttpRequest | None,
    action: str,
    text: dicom.SignedText,
    hold: _Hold,
    number: int,
) -> ReportVersion:
    """Store the DICOM copies of the held report (final and amended only), then record the signature.

    A preliminary signature stores no DICOM copy: the archive serves a study's instances to everyone who
    sees the study (referring clinicians, EHR launches, SMART tokens), and a preliminary is for readers
    only, so it lives in the report tables alone. A final or amended signature stores its PDF first and
    its SR last; if anything fails once a copy is stored, the copies this signature stored are removed
    (see :func:`_discard`), so the archive never holds a signed SR for a signature that was not recorded.
    """
    study = report.study
    stored: list[str] = []
    sr_uid = pdf_uid = ""
    if what.status != ReportStatus.PRELIMINARY:
        sr_uid, pdf_uid = dicom.new_uid(), dicom.new_uid()
        previous = dicom.read_stored(what.predecessor.sr_sop_instance_uid) if what.predecessor else None
        try:
            evidence = dicom.evidence_of(study)
        except dicom.NoEvidence as exc:
            _audit(action, request, user, study, "failure", reason=str(exc))
            raise Refused(f"{exc}: nothing was signed", status=409) from exc
        sr = dicom.build_sr(text, evidence, report.sr_series_instance_uid, sr_uid, previous)
        document = dicom.build_pdf(text, sr, report.pdf_series_instance_uid, pdf_uid)
        try:
            for data in (dicom.part10(document), dicom.part10(sr)):  # the PDF first, the signed SR last
                _store_copy(report, user, request, action, hold, data, stored)
        except BaseException:
            _discard(report, user, request, action, stored)
            raise
    try:
        return _record_signature(report, user, edited, what, request, action, text, hold, number, sr_uid, pdf_uid)
    except BaseException:
        _discard(report, user, request, action, stored)
        raise


def _store_copy(
    report: Report,
    user: Any,
    request: HttpRequest | None,
    action: str,
    hold: _Hold,
    data: bytes,
    stored: list[str],
) -> None:
    """Store one DICOM copy through the one ingest path, renewing the hold first; ``stored`` gains its UID."""
    study = report.study
    hold.renew()
    results: list[StoreResult] = store_instances(
        [_stage(data)],
        expected_study=study.study_instance_uid,
        sender=Sender(site=study.site),
        audit=lambda r: record_stores(request, r, via="report"),
    )
    stored.extend(r.sop_instance_uid for r in results if r.outcome == Outcome.STORED and r.sop_instance_uid)
    if not results or not all(r.ok for r in results):
        _audit(action, request, user, study, "failure", reason="the archive did not take the report's DICOM copies")
        raise StoreFailed("the archive could not store the report; nothing was signed")
    hold.renew()


def _discard(report: Report, user: Any, request: HttpRequest | None, action: str, stored: list[str]) -> None:
    """Remove the copies a failed signature stored (never acknowledged as signed), and audit it."""
    if not stored:
        return
    removed = discard_unacknowledged(stored)
    _audit(
        f"{action}_copies_discarded",
        request,
        user,
        report.study,
        reason="the signature failed after its DICOM copies were stored",
        instances=",".join(stored),
        removed=removed,
    )


def _record_signature(
    report: Report,
    user: Any,
    edited: int,
    what: _Signing,
    request: HttpRequest | None,
    action: str,
    text: dicom.SignedText,
    hold: _Hold,
    number: int,
    sr_uid: str,
    pdf_uid: str,
) -> ReportVersion:
    """Record the signature of the held report in one transaction (Conflict if the hold was lost)."""
    study = report.study
    now = text.signed_at
    with write_lock(), transaction.atomic():
        moved = Report.objects.filter(
            pk=report.pk, version=edited, status=report.status, signing_since=hold.since
        ).update(status=what.status, version=edited + 1, updated_by=user, updated_at=now, signing_since=None)
        if not moved:
            raise Conflict(Report.objects.get(pk=report.pk))
        version = ReportVersion.objects.create(
            report=report,
            number=number,
            status=what.status,
            addendum=what.addendum,
            predecessor=what.predecessor,
            signed_by=user,
            signer_name=text.signer_name[:150],
            signed_at=now,
            sr_sop_instance_uid=sr_uid,
            pdf_sop_instance_uid=pdf_uid,
            **what.sections,
        )
        try:
            workflow.follow_report(study.pk, Status(str(what.status)), user, request, now)
        except InvalidTransition as exc:
            transaction.set_rollback(True)
            raise Refused(str(exc), status=409) from exc
        _audit(
            action,
            request,
            user,
            study,
            status=str(what.status),
            number=number,
            sr=sr_uid,
            pdf=pdf_uid,
            amends=what.predecessor.sr_sop_instance_uid if what.predecessor else None,
        )
    report.refresh_from_db()
    return version


# --- critical results ---


def flag_critical(
    report: Report,
    user: Any,
    *,
    finding: str,
    communicated_to: str,
    method: str,
    communicated_at: datetime,
    request: HttpRequest | None = None,
) -> CriticalResult:
    """Record a critical finding and its communication (to whom, when, how); the worklist row shows the flag."""
    if not is_reader(user) or not (holds_claim(user, report.study) or is_administrator(user)):
        refuse("report_critical_result", request, user, report.study, "only readers flag critical results")
        raise Refused("only the reading radiologist (or an administrator) flags a critical result")
    if method not in CriticalResult.Method.values:
        raise Refused("choose how the result was communicated", status=400)
    finding, communicated_to = finding.strip(), communicated_to.strip()
    if not finding or not communicated_to or len(finding) > 1000 or len(communicated_to) > 200:
        raise Refused("say what was found (1000 characters at most) and to whom it was told (200)", status=400)
    now = timezone.now()
    with write_lock(), transaction.atomic():
        result = CriticalResult.objects.create(
            report=report,
            finding=finding,
            communicated_to=communicated_to,
            method=method,
            communicated_at=communicated_at,
            flagged_by=user,
            flagged_at=now,
        )
        Report.objects.filter(pk=report.pk).update(critical=True)
        workflow.flag_critical(report.study_id, now)
        _audit(
            "report_critical_result",
            request,
            user,
            report.study,
            finding=finding,
            communicated_to=communicated_to,
            method=method,
            communicated_at=communicated_at.isoformat(),
        )
    report.refresh_from_db()
    return result
