"""Corrected copies of Part 10 objects (pure DICOM): values per VR, the Original Attributes Sequence, pixels kept."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pydicom
import pytest

from archive.dicom.corrections import invalid, rewrite
from archive.dicom.synthetic import StudySpec, make_series

WHEN = datetime(2026, 12, 6, 3, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def original() -> bytes:
    return make_series(StudySpec(patient_id="OLD", patient_name="OLD^OLGA"), "CT", count=1, size=16)[0]


def test_a_copy_has_the_new_values_and_records_the_old_ones_as_ps3_3_asks(original: bytes) -> None:
    copy = pydicom.dcmread(io.BytesIO(rewrite(io.BytesIO(original), {"PatientID": "NEW", "PatientName": ""}, WHEN)))
    before = pydicom.dcmread(io.BytesIO(original))
    assert copy.PatientID == "NEW" and "PatientName" not in copy
    assert copy.SOPInstanceUID == before.SOPInstanceUID and copy.PixelData == before.PixelData
    assert copy.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    (item,) = copy.OriginalAttributesSequence
    (old,) = item.ModifiedAttributesSequence
    assert (old.PatientID, str(old.PatientName)) == ("OLD", "OLD^OLGA")
    assert item.AttributeModificationDateTime == "20261206030000.123456+0000"
    assert (item.ModifyingSystem, item.ReasonForTheAttributeModification) == ("Cloud PACS", "CORRECT")


def test_a_correction_back_to_the_first_values_is_a_new_object(original: bytes) -> None:
    once = rewrite(io.BytesIO(original), {"PatientID": "NEW"}, WHEN)
    back = rewrite(io.BytesIO(once), {"PatientID": "OLD"}, WHEN)
    assert back != original and len(pydicom.dcmread(io.BytesIO(back)).OriginalAttributesSequence) == 2


def test_a_value_outside_ascii_is_written_in_utf_8(original: bytes) -> None:
    copy = pydicom.dcmread(io.BytesIO(rewrite(io.BytesIO(original), {"PatientName": "MÜLLER^JÖRG"}, WHEN)))
    assert copy.SpecificCharacterSet == "ISO_IR 192" and str(copy.PatientName) == "MÜLLER^JÖRG"


@pytest.mark.parametrize(
    ("keyword", "value", "why"),
    [
        ("PatientID", "x" * 65, "at most 64 characters"),
        ("PatientID", "", "a Patient ID is required"),
        ("PatientID", " padded", "no leading or trailing spaces"),
        ("PatientBirthDate", "20230229", "not a date in the calendar"),
        ("PatientBirthDate", "2023-01-01", "a date as YYYYMMDD"),
        ("PatientSex", "U", "M, F or O"),
        ("AccessionNumber", "x" * 17, "at most 16 characters"),
        ("PatientName", "A=B=C=D", "at most three component groups"),
        ("PatientName", "A^B^C^D^E^F", "at most 64 characters and five components per group"),
        ("StudyDescription", "a\\b", "no control characters or backslashes"),
        ("StudyDescription", "a\x1bb", "no control characters or backslashes"),
        ("StudyInstanceUID", "1.2", "this attribute cannot be corrected"),
    ],
)
def test_values_outside_their_vr_are_refused(keyword: str, value: str, why: str) -> None:
    assert invalid(keyword, value) == why


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("PatientBirthDate", ""),
        ("PatientBirthDate", "20240229"),
        ("PatientName", "DOE^JANE=ド^ジ"),
        ("PatientSex", "O"),
    ],
)
def test_valid_values_pass(keyword: str, value: str) -> None:
    assert invalid(keyword, value) == ""
