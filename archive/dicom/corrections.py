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

Each copy records its correction the way PS3.3 C.12.1 asks: a new item of
(0400,0561) Original Attributes Sequence with the previous values in
(0400,0550) Modified Attributes Sequence, (0400,0562) Attribute Modification
DateTime, (0400,0563) Modifying System and (0400,0565) Reason for the
Attribute Modification ``CORRECT``. The modification time makes every
corrected copy a new object, never byte for byte an earlier version (a
correction back to the first values included), so an earlier version and the
current object never share a storage key.
"""

from __future__ import annotations

import copy
import io
import re
from datetime import UTC, date, datetime
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


#: (0400,0563) Modifying System of the corrections this archive makes.
MODIFYING_SYSTEM = "Cloud PACS"


def rewrite(source: BinaryIO, changes: dict[str, str], when: datetime | None = None) -> bytes:
    """The Part 10 bytes of ``source`` with ``changes`` (keyword -> value; "" removes the attribute) applied.

    ``changes`` must have passed :func:`invalid`. The whole object is read
    into memory (a corrected copy is written once per instance). ``when``
    (now by default) is the Attribute Modification DateTime recorded in the copy.
    """
    ds = pydicom.dcmread(source, force=False)
    _record_original(ds, changes, when or datetime.now(UTC))
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


def _record_original(ds: Dataset, changes: dict[str, str], when: datetime) -> None:
    """Append the previous values of ``changes`` to (0400,0561) Original Attributes Sequence (PS3.3 C.12.1)."""
    modified = Dataset()
    for keyword in changes:
        if keyword in ds:
            modified[keyword] = copy.deepcopy(ds[keyword])  # its own element: the data set's is changed next
    item = Dataset()
    item.ModifiedAttributesSequence = [modified]
    item.AttributeModificationDateTime = when.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f+0000")
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.SourceOfPreviousValues = ""
    item.ReasonForTheAttributeModification = "CORRECT"
    if "OriginalAttributesSequence" not in ds:
        ds.OriginalAttributesSequence = []
    ds.OriginalAttributesSequence.append(item)


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
