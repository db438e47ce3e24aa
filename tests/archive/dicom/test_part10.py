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
    return len(compared(read))


def compared(read: Any) -> set[int]:
    """Encode every raw top-level element both ways; returns the tags that took the fast path."""
    fast_ds, slow_ds = read(), read()
    encoding = _single_byte_encoding(fast_ds)
    fast_tags: set[int] = set()
    for tag in sorted(fast_ds.keys()):
        raw = fast_ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or tag.group == 0x0002:
            continue
        fast = fast_element_json(raw, encoding)
        if fast is None:
            continue
        fast_tags.add(int(tag))
        assert fast == _element_json(slow_ds, tag, PREFIX), f"{tag} {raw.VR}"
    return fast_tags


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
    compare(lambda: pydicom.dcmread(path, defer_size=DEFER_SIZE))


def test_the_corpus_exercises_the_fast_path() -> None:
    total = sum(compare(lambda p=path: pydicom.dcmread(p, defer_size=DEFER_SIZE)) for path in TEST_FILES[:80])  # type: ignore[misc]
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
    fast = compared(lambda: pydicom.dcmread(io.BytesIO(raw), defer_size=DEFER_SIZE))
    assert fast == fast_path_tags(raw, several_charsets=charset is not None and "2022" in charset)
    assert len(fast) > 20  # most of the instance, whatever its character set


#: The VRs the fast path encodes; text of the VRs that a character set decodes is left to pydicom under ISO 2022.
FAST_VRS = frozenset("AS CS DA DT TM UI IS DS US SS UL SL FL FD".split())
CHARSET_VRS = frozenset("SH LO UC ST LT UT PN".split())


def fast_path_tags(raw: bytes, several_charsets: bool) -> set[int]:
    """The top-level elements of ``raw`` that must take the fast path: every one still raw once read, of a VR
    it encodes, but text under ISO 2022 (code extensions) and a person name with ideographic or phonetic groups."""
    ds = pydicom.dcmread(io.BytesIO(raw), defer_size=DEFER_SIZE)
    tags: set[int] = set()
    for tag in ds.keys():
        elem = ds.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement) or tag.group == 0x0002 or elem.VR not in FAST_VRS | CHARSET_VRS:
            continue
        if elem.VR in CHARSET_VRS and (several_charsets or (elem.VR == "PN" and b"=" in elem.value)):
            continue
        tags.add(int(tag))
    return tags


def test_it_leaves_sequences_and_multi_charset_text_to_pydicom() -> None:
    assert fast_element_json(RawDataElement(Tag(0x00081111), "SQ", 0, b"", 0, False, True), "iso8859") is None
    assert fast_element_json(RawDataElement(Tag(0x00100010), "PN", 4, b"A\x1b$B", 0, False, True), "latin_1") is None
    assert fast_element_json(RawDataElement(Tag(0x00100010), "PN", 2, b"AB", 0, False, True), None) is None
