"""The fast DICOM JSON encoder gives exactly what pydicom gives, element by element."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from archive.dicom.dicomjson import _element_json, _single_byte_encoding, fast_element_json
from archive.dicom.part10 import DEFER_SIZE
from archive.dicom.synthetic import StudySpec, make_instance

PREFIX = "http://x/studies/1/series/2/instances/3"


def compare(read: Any) -> int:
    """Encode every raw top-level element both ways; returns how many took the fast path."""
    fast_ds, slow_ds = read(), read()
    encoding = _single_byte_encoding(fast_ds)
    fast_count = 0
    for tag in sorted(fast_ds.keys()):
        raw = fast_ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or tag.group == 0x0002:
            continue
        fast = fast_element_json(raw, encoding)
        if fast is None:
            continue
        fast_count += 1
        assert fast == _element_json(slow_ds, tag, PREFIX), f"{tag} {raw.VR}"
    return fast_count


def readable_test_files() -> list[str]:
    files = []
    # The files that ship inside pydicom (get_testdata_files would also try to download more).
    for path in sorted(str(p) for p in (Path(DATA_ROOT) / "test_files").rglob("*") if p.is_file()):
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - pydicom's corpus includes deliberately broken files
            continue
        files.append(path)
    return files


TEST_FILES = readable_test_files()


@pytest.mark.parametrize("path", TEST_FILES, ids=[Path(p).name for p in TEST_FILES])
def test_it_encodes_pydicoms_test_files_like_pydicom(path: str) -> None:
    try:
        compare(lambda: pydicom.dcmread(path, defer_size=DEFER_SIZE))
    except (NotImplementedError, LookupError):
        pytest.xfail("pydicom itself cannot encode an element of this file")


def test_the_corpus_exercises_the_fast_path() -> None:
    total = 0
    for path in TEST_FILES[:80]:
        try:
            total += compare(lambda p=path: pydicom.dcmread(p, defer_size=DEFER_SIZE))  # type: ignore[misc]
        except (NotImplementedError, LookupError):
            continue
    assert total > 1000


def with_values(charset: str | None, **values: Any) -> bytes:
    raw = make_instance(StudySpec())
    ds = pydicom.dcmread(io.BytesIO(raw))
    if charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "values",
    [
        {"PatientName": "MÜLLER^JÖRG", "StudyDescription": "Thorax ä ", "InstitutionName": "Hôpital"},
        {"PatientName": "DOE^JOHN=ドウ^ジョン", "OtherPatientIDs": ["A", "", "C "]},
        {"PatientName": ["ONE^A", "TWO^B"], "ImageType": ["ORIGINAL", "", "AXIAL"]},
        {"SliceThickness": "1e-1", "WindowCenter": ["40", "-600"], "InstanceNumber": "+7"},
        {"SliceThickness": " 2.50 ", "AcquisitionNumber": " 12 ", "StudyID": ""},
        {"PixelSpacing": ["0.5", "0.5"], "ImagePositionPatient": ["-1", ".5", "3."]},
        {"Rows": 2, "AdditionalPatientHistory": "line one\r\nline two  "},
    ],
)
@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192", "\\ISO 2022 IR 87"])
def test_it_encodes_edge_values_like_pydicom(values: dict[str, Any], charset: str | None) -> None:
    raw = with_values(charset, **values)
    try:
        compare(lambda: pydicom.dcmread(io.BytesIO(raw), defer_size=DEFER_SIZE))
    except UnicodeEncodeError:
        pytest.xfail("the value cannot be written in this character set")


def test_it_leaves_sequences_and_multi_charset_text_to_pydicom() -> None:
    assert fast_element_json(RawDataElement(Tag(0x00081111), "SQ", 0, b"", 0, False, True), "iso8859") is None
    assert fast_element_json(RawDataElement(Tag(0x00100010), "PN", 4, b"A\x1b$B", 0, False, True), "latin_1") is None
    assert fast_element_json(RawDataElement(Tag(0x00100010), "PN", 2, b"AB", 0, False, True), None) is None
