"""Corrected patient and study attributes: which may be corrected, what a valid value is, the corrected bytes.

Pure DICOM (no Django). :data:`CORRECTABLE` names the attributes a technologist
may correct, each with its VR; :func:`invalid` says why a value cannot be
stored under its VR (PS3.5 §6.2: length, character repertoire, a real date
for DA, the Defined Terms of (0010,0040) Patient's Sex), and :func:`rewrite`
writes a corrected copy of a Part 10 object: the same File Meta Information
and transfer syntax, every other element byte for byte as it was read (Pixel
Data is never decoded), the corrected values set or removed (an empty value).
A value outside ASCII is written in UTF-8: the copy's (0008,0005) Specific
Character Set becomes ``ISO_IR 192`` after every text value was decoded under
the old one.
"""

from __future__ import annotations

import io
import re
from datetime import date
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset

#: Keyword -> (VR, the longest value in characters, a label for people).
CORRECTABLE: dict[str, tuple[str, int, str]] = {
    "PatientID": ("LO", 64, "Patient ID"),
    "IssuerOfPatientID": ("LO", 64, "Issuer of Patient ID"),
    "PatientName": ("PN", 64, "Patient's Name"),
    "PatientBirthDate": ("DA", 8, "Patient's Birth Date"),
    "PatientSex": ("CS", 16, "Patient's Sex"),
    "AccessionNumber": ("SH", 16, "Accession Number"),
    "StudyID": ("SH", 16, "Study ID"),
    "StudyDescription": ("LO", 64, "Study Description"),
    "StudyDate": ("DA", 8, "Study Date"),
    "ReferringPhysicianName": ("PN", 64, "Referring Physician's Name"),
}
#: (0010,0040) Patient's Sex: the Defined Terms.
SEXES = ("M", "F", "O")
#: Control characters (ESC included: ISO 2022 code extensions are not offered here) and the value separator.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


def invalid(keyword: str, value: str) -> str:
    """Why ``value`` cannot be the corrected ``keyword`` (empty when it can); the empty value removes it."""
    if keyword not in CORRECTABLE:
        return "this attribute cannot be corrected"
    vr, longest, _ = CORRECTABLE[keyword]
    if value == "":
        return "a Patient ID is required" if keyword == "PatientID" else ""
    if _FORBIDDEN.search(value):
        return "no control characters or backslashes"
    if vr == "DA":
        if not re.fullmatch(r"[0-9]{8}", value):
            return "a date as YYYYMMDD"
        try:
            date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            return "not a date in the calendar"
        return ""
    if vr == "CS":
        return "" if value in SEXES else "M, F or O"
    if vr == "PN":
        groups = value.split("=")
        if len(groups) > 3:
            return "at most three component groups"
        if any(len(g) > longest for g in groups) or any(g.count("^") > 4 for g in groups):
            return f"at most {longest} characters and five components per group"
        return ""
    if len(value) > longest:
        return f"at most {longest} characters"
    if value != value.strip(" ") and vr in ("LO", "SH"):
        return "no leading or trailing spaces"
    return ""


def rewrite(source: BinaryIO, changes: dict[str, str]) -> bytes:
    """The Part 10 bytes of ``source`` with ``changes`` (keyword -> value; "" removes the attribute) applied.

    ``changes`` must have passed :func:`invalid`. The whole object is read
    into memory (a corrected copy is written once per instance).
    """
    ds = pydicom.dcmread(source, force=False)
    if any(not v.isascii() for v in changes.values()) and "ISO_IR 192" not in _charsets(ds):
        for _ in ds.iterall():  # decode every text value under the old character set first
            pass
        ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in changes.items():
        if value == "":
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _charsets(ds: Dataset) -> list[str]:
    value = ds.get("SpecificCharacterSet", "")
    return [str(v) for v in value] if isinstance(value, list | pydicom.multival.MultiValue) else [str(value)]


def current_values(metadata: dict[str, object]) -> dict[str, str]:
    """The correctable attributes as an instance's DICOM JSON holds them (PN as its Alphabetic group)."""
    values: dict[str, str] = {}
    for keyword, (vr, _, _) in CORRECTABLE.items():
        tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
        element = metadata.get(tag)
        found = element.get("Value") if isinstance(element, dict) else None
        first = found[0] if isinstance(found, list) and found else ""
        if vr == "PN" and isinstance(first, dict):
            first = first.get("Alphabetic", "")
        values[keyword] = str(first) if isinstance(first, str | int | float) else ""
    return values
