"""A signed report as DICOM: a Comprehensive SR (highdicom) and an Encapsulated PDF, ready for the ingest path.

Both copies belong to the report's study: they take its Study Instance UID and
its patient and study modules from an instance already stored in it (the SR's
evidence, read from the archive), so a QIDO of the study lists them and any
PACS files them with the images. The SR's flags come from the status signed:

========== ================= ================== ===========================
status     (0040,A496)       (0040,A493)        (0040,A073)
           Preliminary Flag  Verification Flag  Verifying Observer Sequence
========== ================= ================== ===========================
preliminary PRELIMINARY      UNVERIFIED         absent
final       FINAL            VERIFIED           the signer
amended     FINAL            VERIFIED           the signer, and (0040,A360)
                                                Predecessor Documents
                                                Sequence names the version
                                                it amends
========== ================= ================== ===========================
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
from django.utils import timezone
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from archive.models import Instance, Study
from portal.reports import pdf
from portal.reports.models import SECTIONS, ReportStatus

MANUFACTURER = "Cloud PACS"
SR_SERIES_NUMBER = 9901
PDF_SERIES_NUMBER = 9902
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
SR_STORAGE_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.33",)  # Comprehensive SR
REPORT_TITLE = Code("18748-4", "LN", "Diagnostic imaging report")
SECTION_CODES = {
    "indication": Code("18785-6", "LN", "Indications for procedure"),
    "technique": Code("55111-9", "LN", "Current imaging procedure descriptions"),
    "comparison": Code("18834-2", "LN", "Radiology Comparison study"),
    "findings": Code("59776-5", "LN", "Procedure Findings"),
    "impression": Code("19005-8", "LN", "Radiology Imaging study [Impression]"),
    "addendum": Code("55107-7", "LN", "Addendum"),
}
#: Patient and study attributes the PDF copies from the SR (which took them from the study).
COPIED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


class NoEvidence(Exception):
    """The study holds no stored instance to take its patient and study modules from."""


@dataclass(frozen=True)
class SignedText:
    """What one signed version says, and who signed it when."""

    status: str
    sections: dict[str, str]
    addenda: list[tuple[str, datetime, str]]  # (signer, when, text), oldest first
    signer_name: str
    signer_person_name: str
    organization: str
    signed_at: datetime
    number: int


def evidence_of(study: Study) -> Dataset:
    """The header of the study's first stored image (no pixel data): the source of its patient and study modules."""
    instance = (
        Instance.objects.filter(series__study=study)
        .exclude(sop_class_uid__in=(*SR_STORAGE_CLASSES, ENCAPSULATED_PDF_STORAGE))
        .order_by("created_at", "id")
        .first()
    )
    if instance is None:
        raise NoEvidence("the study holds no image to report on")
    with instance.open_stored() as fh:
        return dcmread(fh, stop_before_pixels=True)


def read_stored(sop_instance_uid: str) -> Dataset:
    instance = Instance.objects.get(sop_instance_uid=sop_instance_uid)
    with instance.open_stored() as fh:
        return dcmread(fh)


def _person(name: str) -> str:
    """A person name value: printable, no ``\\`` (value separator), at most 64 characters."""
    clean = "".join(ch for ch in name if ch.isprintable() and ch != "\\")
    return clean[:64] or "UNKNOWN^"


def build_sr(
    text: SignedText, evidence: Dataset, series_uid: str, sop_uid: str, predecessor: Dataset | None
) -> Dataset:
    """The Comprehensive SR of one signed version."""
    items = [
        hd.sr.TextContentItem(SECTION_CODES[name], value, relationship_type="CONTAINS")
        for name, value in text.sections.items()
        if value.strip()
    ]
    items += [
        hd.sr.TextContentItem(
            SECTION_CODES["addendum"], f"{when:%Y-%m-%d %H:%M} {who}: {body}", relationship_type="CONTAINS"
        )
        for who, when, body in text.addenda
    ]
    root = hd.sr.ContainerContentItem(REPORT_TITLE, template_id=None)
    root.ContentSequence = hd.sr.ContentSequence(items)
    verified = text.status in (ReportStatus.FINAL, ReportStatus.AMENDED)
    sr = hd.sr.ComprehensiveSR(
        evidence=[evidence],
        content=root,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=text.number,
        manufacturer=MANUFACTURER,
        is_complete=verified,
        is_final=verified,
        is_verified=verified,
        verifying_observer_name=_person(text.signer_person_name) if verified else None,
        verifying_organization=text.organization[:64] if verified else None,
        previous_versions=[predecessor] if predecessor is not None else None,
        record_evidence=True,
        series_description="Report",
    )
    local = timezone.localtime(text.signed_at)
    sr.ContentDate = local.strftime("%Y%m%d")  # type: ignore[assignment]  # pydicom's stubs want DA/TM
    sr.ContentTime = local.strftime("%H%M%S")  # type: ignore[assignment]
    if verified:
        sr.VerifyingObserverSequence[0].VerificationDateTime = local.strftime("%Y%m%d%H%M%S")
    return sr


def pdf_lines(text: SignedText, sr: Dataset) -> list[pdf.Line]:
    """The printable text of a signed version (the same words the SR holds)."""
    lines = [
        pdf.Line("Radiology report", bold=True, size=14),
        pdf.Line(f"Patient: {sr.get('PatientName', '')}  ID: {sr.get('PatientID', '')}"),
        pdf.Line(f"Study: {sr.get('StudyDescription', '')}  Date: {sr.get('StudyDate', '')}"),
        pdf.Line(f"Accession: {sr.get('AccessionNumber', '')}"),
        pdf.Line(f"Status: {ReportStatus(text.status).label} (version {text.number})"),
        pdf.Line(""),
    ]
    for name, label in SECTIONS:
        if text.sections.get(name, "").strip():
            lines += [pdf.Line(label, bold=True), pdf.Line(text.sections[name]), pdf.Line("")]
    for who, when, body in text.addenda:
        lines += [pdf.Line(f"Addendum {when:%Y-%m-%d %H:%M} by {who}", bold=True), pdf.Line(body), pdf.Line("")]
    lines.append(pdf.Line(f"Signed by {text.signer_name} on {timezone.localtime(text.signed_at):%Y-%m-%d %H:%M}"))
    return lines


def build_pdf(text: SignedText, sr: Dataset, series_uid: str, sop_uid: str) -> Dataset:
    """The Encapsulated PDF rendition of one signed version, in the SR's patient and study."""
    document = pdf.render(pdf_lines(text, sr), title="Radiology report")
    ds = Dataset()
    for keyword in COPIED:
        if keyword in sr:
            setattr(ds, keyword, sr.data_element(keyword).value)  # type: ignore[union-attr]
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.InstanceNumber = text.number
    ds.Modality = "DOC"
    ds.SeriesDescription = "Report (PDF)"
    ds.Manufacturer = MANUFACTURER
    ds.ConversionType = "WSD"
    ds.ContentDate, ds.ContentTime = sr.ContentDate, sr.ContentTime
    ds.AcquisitionDateTime = sr.ContentDate + sr.ContentTime
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = f"Radiology report ({ReportStatus(text.status).label}, version {text.number})"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = REPORT_TITLE.value, "LN", "Report"
    ds.ConceptNameCodeSequence = [concept]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = document + (b"\0" if len(document) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(document)
    return ds


def part10(ds: Dataset) -> bytes:
    """``ds`` as a Part 10 file in Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def new_uid() -> str:
    return str(generate_uid())
