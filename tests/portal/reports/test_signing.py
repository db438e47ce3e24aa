"""Sign-off: preliminary then final with a recent second factor, final is immutable, addenda make linked versions,
and every signed version travels with the study as DICOM (SR and Encapsulated PDF) read back over WADO-RS."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import highdicom as hd
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from pydicom.fileset import FileSet

from archive.models import Instance, LegalHold
from audit.models import AuditEvent
from portal.reports.dicom import ENCAPSULATED_PDF_STORAGE
from portal.reports.models import Report, ReportVersion
from portal.worklist.models import WorklistItem
from tests.mfa_support import code_from_hex_key
from tests.portal.reports.conftest import signed_in
from tests.portal.reports.helpers import amend, open_page, save, sign, url, wado_instance

pytestmark = pytest.mark.django_db

FINDINGS = "Small nodule in the right upper lobe."
IMPRESSION = "No acute disease."


def _written(client: Client, uid: str) -> None:
    open_page(client, uid)
    assert save(client, uid, 1, findings=FINDINGS, impression=IMPRESSION).status_code == 200


def _sr(client: Client, uid: str, version: ReportVersion) -> hd.sr.ComprehensiveSR:
    instance = Instance.objects.select_related("series").get(sop_instance_uid=version.sr_sop_instance_uid)
    ds = wado_instance(client, uid, instance.series.series_instance_uid, version.sr_sop_instance_uid)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return hd.sr.srread(buffer)


def _texts(sr: hd.sr.ComprehensiveSR) -> dict[str, str]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in sr.ContentSequence}


def test_a_preliminary_signature_needs_no_fresh_second_factor_and_stores_no_dicom_copy(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist, mfa_age=None)
    uid = claimed.study_instance_uid
    _written(client, uid)
    before = Instance.objects.count()
    response = sign(client, uid, "preliminary")
    assert response.status_code == 302 and response["Location"] == url("report", uid)
    version = ReportVersion.objects.get()
    assert (version.status, version.number, version.findings) == ("preliminary", 1, FINDINGS)
    assert (version.sr_sop_instance_uid, version.pdf_sop_instance_uid) == ("", "")
    assert WorklistItem.objects.get(pk=claimed.pk).status == "preliminary"
    assert Instance.objects.count() == before  # the archive serves the study to clinicians: no preliminary in it
    report = Report.objects.get()
    assert not Instance.objects.filter(
        series__series_instance_uid__in=[report.sr_series_instance_uid, report.pdf_series_instance_uid]
    ).exists()


def test_signing_final_with_a_stale_second_factor_is_sent_to_the_challenge_and_a_fresh_one_signs(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist, mfa_age=3600)
    uid = claimed.study_instance_uid
    _written(client, uid)
    response = sign(client, uid, "final", findings=FINDINGS + " Edited.", impression=IMPRESSION)
    target = urlsplit(response["Location"])
    assert response.status_code == 302 and target.path == "/mfa/verify/"
    assert parse_qs(target.query) == {"next": [url("report", uid)], "fresh": ["1"]}
    report = Report.objects.get(study_instance_uid=uid)
    assert report.status == "draft" and report.findings == FINDINGS + " Edited."  # the text was kept
    assert not ReportVersion.objects.exists()
    assert AuditEvent.objects.filter(action="report_sign", outcome="denied").exists()
    challenge = client.get(response["Location"])
    assert challenge.status_code == 200 and b'name="fresh" value="1"' in challenge.content
    device = TOTPDevice.objects.get(user=radiologist)
    verified = client.post(
        "/mfa/verify/", {"code": code_from_hex_key(device.key), "next": url("report", uid), "fresh": "1"}
    )
    assert verified.status_code == 302 and verified["Location"] == url("report", uid)
    assert sign(client, uid, "final").status_code == 302
    version = ReportVersion.objects.get()
    assert (version.status, version.signer_name, version.findings) == ("final", "Rita Reader", FINDINGS + " Edited.")
    assert WorklistItem.objects.get(pk=claimed.pk).status == "final"


def test_a_session_with_no_record_of_when_it_verified_must_verify_again_to_sign_final(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist, mfa_age=None)
    uid = claimed.study_instance_uid
    _written(client, uid)
    assert sign(client, uid, "final")["Location"].startswith("/mfa/verify/")


def test_the_final_sr_and_pdf_come_back_over_wado_rs_with_the_text_the_flags_and_the_signer(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    assert sign(client, uid, "final").status_code == 302
    version = ReportVersion.objects.get()
    sr = _sr(client, uid, version)
    assert sr.StudyInstanceUID == uid
    assert (sr.PatientID, str(sr.PatientName)) == ("RP-1", claimed.patient_name)
    assert (sr.PreliminaryFlag, sr.VerificationFlag, sr.CompletionFlag) == ("FINAL", "VERIFIED", "COMPLETE")
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Reader^Rita"
    assert _texts(sr) == {"Procedure Findings": FINDINGS, "Radiology Imaging study [Impression]": IMPRESSION}
    pdf_instance = Instance.objects.select_related("series").get(sop_instance_uid=version.pdf_sop_instance_uid)
    assert pdf_instance.sop_class_uid == ENCAPSULATED_PDF_STORAGE
    pdf = wado_instance(client, uid, pdf_instance.series.series_instance_uid, version.pdf_sop_instance_uid)
    assert pdf.StudyInstanceUID == uid and pdf.PatientID == "RP-1" and pdf.Modality == "DOC"
    document = pdf.EncapsulatedDocument[: pdf.EncapsulatedDocumentLength]
    assert document.startswith(b"%PDF-1.4") and document.rstrip().endswith(b"%%EOF")
    assert b"(Small nodule in the right upper lobe.) Tj" in document
    assert b"(Signed by Rita Reader on " in document
    qido = client.get(f"/dicom-web/studies/{uid}/series", headers={"Accept": "application/dicom+json"})
    modalities = sorted(s["00080060"]["Value"][0] for s in qido.json())
    assert modalities == ["CT", "DOC", "SR"]


def test_a_final_report_cannot_be_edited_or_signed_again_only_amended_into_a_linked_new_version(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    sign(client, uid, "preliminary")
    sign(client, uid, "final")
    report = Report.objects.get(study_instance_uid=uid)
    assert save(client, uid, report.version, findings="rewritten").status_code == 409
    assert sign(client, uid, "final", findings="rewritten").status_code == 409
    assert Report.objects.get(study_instance_uid=uid).findings == FINDINGS
    assert amend(client, uid, "Nodule measures 4 mm on review.").status_code == 302
    first, final, amended = ReportVersion.objects.order_by("number")
    assert (first.status, final.status, amended.status) == ("preliminary", "final", "amended")
    assert amended.predecessor == final and amended.findings == FINDINGS
    assert WorklistItem.objects.get(pk=claimed.pk).status == "amended"
    sr = _sr(client, uid, amended)
    predecessor = sr.PredecessorDocumentsSequence[0]
    assert predecessor.StudyInstanceUID == uid
    referenced = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == final.sr_sop_instance_uid
    assert sr.PreliminaryFlag == "FINAL" and sr.VerificationFlag == "VERIFIED"
    assert _texts(sr)["Addendum"].endswith("Rita Reader: Nodule measures 4 mm on review.")
    assert amend(client, uid, "Second addendum.").status_code == 302
    third = ReportVersion.objects.get(number=4)
    assert [a.addendum for a in third.addenda()] == ["Nodule measures 4 mm on review.", "Second addendum."]
    history = open_page(client, uid).content.decode()
    assert "Version 4: Amended" in history and "(amends version 3)" in history
    signed = AuditEvent.objects.filter(action__in=["report_sign", "report_amend"], outcome="success")
    actions = list(signed.order_by("id").values_list("action", flat=True))
    assert actions == ["report_sign", "report_sign", "report_amend", "report_amend"]


def test_an_addendum_with_a_stale_second_factor_is_sent_to_the_challenge(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    sign(client, uid, "final")
    stale = signed_in(radiologist, mfa_age=3600)
    assert amend(stale, uid, "late").headers["Location"].startswith("/mfa/verify/")
    assert ReportVersion.objects.count() == 1


def test_only_radiologists_holding_the_claim_or_administrators_sign(
    claimed: WorklistItem, radiologist: User, second_radiologist: User, admin_user: User
) -> None:
    uid = claimed.study_instance_uid
    _written(signed_in(radiologist), uid)
    assert sign(signed_in(second_radiologist), uid, "final").status_code == 403
    assert sign(signed_in(admin_user), uid, "final").status_code == 403  # an administrator who is no radiologist
    from portal.accounts.groups import add_role
    from portal.accounts.roles import Role

    add_role(admin_user, Role.RADIOLOGIST)
    assert sign(signed_in(admin_user), uid, "final").status_code == 302
    assert ReportVersion.objects.get().signed_by == admin_user


def test_export_dicom_exports_the_signed_report_with_its_study(
    claimed: WorklistItem, radiologist: User, tmp_path: Path
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    sign(client, uid, "final")
    version = ReportVersion.objects.get()
    dest = tmp_path / "export"
    call_command("export_dicom", str(dest), "--study", uid, stdout=io.StringIO(), stderr=io.StringIO())
    members = {m.SOPInstanceUID: m for m in FileSet(dest / "DICOMDIR")}
    assert {version.sr_sop_instance_uid, version.pdf_sop_instance_uid} <= set(members)
    assert len(members) == 4  # two images, the SR and the PDF
    sr = members[version.sr_sop_instance_uid].load()
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName == "Reader^Rita"


def test_a_signature_posted_without_the_sections_signs_the_saved_text_and_wipes_nothing(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    response = client.post(url("report-sign", uid), {"version": 2, "level": "preliminary"})
    assert response.status_code == 302
    assert ReportVersion.objects.get().findings == FINDINGS


def test_while_a_signature_is_being_stored_a_save_or_a_second_signature_is_a_conflict_and_stores_nothing(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    Report.objects.filter(study_instance_uid=uid).update(signing_since=timezone.now())  # another tab is signing
    before = Instance.objects.count()
    assert save(client, uid, 2, findings="meanwhile").status_code == 409
    assert sign(client, uid, "final").status_code == 409
    assert Instance.objects.count() == before and not ReportVersion.objects.exists()
    Report.objects.filter(study_instance_uid=uid).update(signing_since=timezone.now() - timedelta(minutes=3))
    assert sign(client, uid, "final").status_code == 302  # a hold left by a crashed process lapses
    report = Report.objects.get(study_instance_uid=uid)
    assert report.status == "final" and report.signing_since is None
    assert Instance.objects.count() == before + 2


def test_a_failed_store_signs_nothing_and_releases_the_report(
    claimed: WorklistItem, radiologist: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archive.ingest.store import Outcome, StoreResult
    from portal.reports import services

    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)

    def refused(staged: list[object], *args: object, **kwargs: object) -> list[StoreResult]:
        for item in staged:
            item.discard()  # type: ignore[attr-defined]
        return [StoreResult(Outcome.UNAVAILABLE, detail="storage could not take it") for _ in staged]

    monkeypatch.setattr(services, "store_instances", refused)
    assert sign(client, uid, "final").status_code == 503
    report = Report.objects.get(study_instance_uid=uid)
    assert (report.status, report.signing_since, report.version) == ("draft", None, 2)
    assert not ReportVersion.objects.exists()
    assert AuditEvent.objects.filter(action="report_sign", outcome="failure").exists()
    assert save(client, uid, 2, findings="still editable").status_code == 200


def _fail_second_store(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first copy (the PDF) is stored for real, the second (the SR) is refused; returns the SOP classes tried."""
    from archive.ingest.store import Outcome, StoreResult
    from portal.reports import services

    real, tried = services.store_instances, []

    def second_refused(staged: list[object], **kwargs: object) -> list[StoreResult]:
        tried.append("x")
        if len(tried) == 1:
            return real(staged, **kwargs)  # type: ignore[arg-type]
        for item in staged:
            item.discard()  # type: ignore[attr-defined]
        return [StoreResult(Outcome.UNAVAILABLE, detail="disk full")]

    monkeypatch.setattr(services, "store_instances", second_refused)
    return tried


def test_a_signature_whose_second_copy_fails_removes_the_first_even_under_a_legal_hold_and_leaves_no_sr(
    claimed: WorklistItem, radiologist: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    LegalHold.objects.create(study_instance_uid=uid, reason="litigation")  # holds the record, not the orphan
    before = set(Instance.objects.values_list("sop_instance_uid", flat=True))
    tried = _fail_second_store(monkeypatch)
    assert sign(client, uid, "final").status_code == 503
    assert len(tried) == 2 and not ReportVersion.objects.exists()
    report = Report.objects.get(study_instance_uid=uid)
    assert (report.status, report.signing_since) == ("draft", None)
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == before
    assert not Instance.objects.filter(series__modality__in=["SR", "DOC"]).exists()
    study = report.study
    study.refresh_from_db()
    assert (study.number_of_instances, study.modalities_in_study) == (len(before), "CT")
    discarded = AuditEvent.objects.get(action="report_sign_copies_discarded")
    assert discarded.detail["removed"] == 1
    monkeypatch.undo()
    assert sign(client, uid, "final").status_code == 302  # a retry signs, with no orphans piled up
    assert Instance.objects.count() == len(before) + 2


def test_a_signature_that_loses_its_hold_after_storing_removes_its_copies_and_signs_nothing(
    claimed: WorklistItem, radiologist: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.reports import services

    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    before = Instance.objects.count()
    real = services._record_signature

    def conflicted(*args: object, **kwargs: object) -> ReportVersion:
        Report.objects.filter(study_instance_uid=uid).update(version=99)  # someone moved the report meanwhile
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(services, "_record_signature", conflicted)
    assert sign(client, uid, "final").status_code == 409
    assert Instance.objects.count() == before and not ReportVersion.objects.exists()
    assert Report.objects.get(study_instance_uid=uid).signing_since is None


def test_the_signing_hold_is_renewed_while_copies_are_stored(
    claimed: WorklistItem, radiologist: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.reports import services

    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    real, seen = services.store_instances, []

    def slow(staged: list[object], **kwargs: object) -> object:
        seen.append(Report.objects.get(study_instance_uid=uid).signing_since)
        return real(staged, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(services, "store_instances", slow)
    assert sign(client, uid, "final").status_code == 302
    first, second = seen  # one store each for the PDF and the SR, the hold moved on in between
    assert first is not None and second is not None and first < second


def test_a_signed_report_and_its_addendum_leave_the_worklist_row_counting_images_as_the_viewer_does(
    claimed: WorklistItem, radiologist: User, django_capture_on_commit_callbacks: Any
) -> None:
    """The SR and PDF of each signature are archive objects, not images: the row keeps "2 images" and "CT"."""
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    _written(client, uid)
    with django_capture_on_commit_callbacks(execute=True):  # the study_stored receivers run, as in production
        assert sign(client, uid, "final").status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        assert amend(client, uid, "Addendum.").status_code == 302
    assert Instance.objects.filter(series__study__study_instance_uid=uid).count() == 6  # 2 images, 2 SR, 2 PDF
    row = WorklistItem.objects.get(study_instance_uid=uid)
    assert (row.status, row.modality, row.image_count) == ("amended", "CT", 2)
    listed = client.post("/worklist/rows", {"status": "all"}).content.decode()
    assert re.findall(r'<td class="col-images">([^<]*)</td>', listed) == ["2"]
    assert re.findall(r'<td class="col-modality">([^<]*)</td>', listed) == ["CT"]
    # What the viewer counts: the instances of the series it hangs (QIDO-RS, without SR and DOC).
    series = client.get(f"/dicom-web/studies/{uid}/series", headers={"Accept": "application/dicom+json"}).json()
    image_series = [s for s in series if s["00080060"]["Value"][0] not in ("SR", "DOC")]
    assert sum(s["00201209"]["Value"][0] for s in image_series) == 2
    call_command("worklist_sync", stdout=io.StringIO())  # a rebuild agrees
    assert WorklistItem.objects.values_list("modality", "image_count").get(study_instance_uid=uid) == ("CT", 2)
