"""Reading one stored Part 10 file into everything the index precomputes.

:func:`parse_instance` is called once per object at ingest (and by
``reindex``). It reads the file with large values deferred, so a 2 GB
multi-frame object is never held in memory, and returns the identifying UIDs,
the query attributes, the instance's DICOM JSON (bulk values as BulkDataURIs)
and the byte ranges of every frame, which make a WADO-RS frame request a ranged
read of the stored file.

Hostile input is refused here, as :class:`InvalidInstance`, rather than at the
index: an object cut short (an element, Pixel Data among them, that ends past
the end of the file), a deflated data set that inflates beyond
``PACS_INFLATE_MAX_BYTES`` (inflated into a temporary file with a bounded
decompressor, never into memory), sequences nested too deeply, and an
attribute the archive addresses pixels with ((0028,0010) Rows, (0028,0011)
Columns, (0028,0008) Number of Frames, (0028,0002) Samples per Pixel,
(0028,0100) Bits Allocated) whose value is unreadable or outside its range.
Values kept only for searching are indexed only when the index can hold them:
an integer outside 32 bits is not indexed, upper-cased text is cut to its
column's length, NUL characters are dropped from index values and from the
study and series JSON copies (the stored object keeps its bytes), and a
non-finite number becomes ``null`` in the DICOM JSON.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from archive.dicom.dicomjson import dataset_json, scalars, without_nul
from archive.dicom.elements import PIXEL_DATA, UNDEFINED_LENGTH, InvalidInstance, int_value, text_value
from archive.dicom.frames import encapsulated_frames, native_frames
from archive.dicom.syntaxes import NATIVE_LITTLE_ENDIAN
from archive.dicom.uid import InvalidUID, validate_uid

log = logging.getLogger(__name__)

#: Stands for the DICOMweb root URL inside stored JSON. json.dumps escapes every
#: control character, so this byte sequence can never occur in encoded data.
BASE_MARK = "\x01BASE\x01"
DEFER_SIZE = 2048
#: The range of an IS value (PS3.5 Table 6.2-1) and of the index's integer columns.
INT32 = (-(2**31), 2**31 - 1)
#: What an attribute that addresses pixels may hold: US values, Number of Frames as a non-negative IS,
#: and Bits Allocated up to 64 (the widest any pixel format uses).
PIXEL_INT_RANGES = {
    "Rows": (0, 0xFFFF),
    "Columns": (0, 0xFFFF),
    "SamplesPerPixel": (0, 0xFFFF),
    "BitsAllocated": (0, 64),
    "NumberOfFrames": (0, INT32[1]),
}
#: Default of ``PACS_INFLATE_MAX_BYTES``: the largest data set a deflated object may inflate to.
INFLATE_MAX_BYTES = 512 * 1024**2
INFLATE_CHUNK = 1024 * 1024

# Attributes kept at study and series level for QIDO responses (PS3.18 §10.6.3.3).
STUDY_TAGS = (
    "00080005 00080020 00080030 00080050 00080051 00080080 00080090 00080201 00081030 00081060 "
    "00100010 00100020 00100021 00100030 00100040 00101010 00101020 00101030 00102160 00104000 "
    "0020000D 00200010"
).split()
SERIES_TAGS = (
    "00080005 00080021 00080031 00080060 00080070 0008103E 00081090 00180015 0020000E 00200011 "
    "00200052 00200060 00400244 00400245 00400275"
).split()


@dataclass(frozen=True, slots=True)
class IndexAttributes:
    """The query attributes of one instance as the index's columns hold them.

    Text is stripped of padding and NUL characters and cut to its column's
    length; an integer outside 32 bits is None (not indexed). The upper-cased
    name groups that case-insensitive matching searches are derived on demand.
    """

    patient_id: str
    """(0010,0020) Patient ID."""
    issuer_of_patient_id: str
    """(0010,0021) Issuer of Patient ID."""
    patient_name: str
    """(0010,0010) Patient's Name, every component group."""
    patient_birth_date: str
    """(0010,0030) Patient's Birth Date."""
    patient_sex: str
    """(0010,0040) Patient's Sex."""
    study_date: str
    """(0008,0020) Study Date."""
    study_time: str
    """(0008,0030) Study Time, as :func:`index_time` compares it."""
    accession_number: str
    """(0008,0050) Accession Number."""
    study_id: str
    """(0020,0010) Study ID."""
    study_description: str
    """(0008,1030) Study Description."""
    referring_physician_name: str
    """(0008,0090) Referring Physician's Name, every component group."""
    institution_name: str
    """(0008,0080) Institution Name."""
    modality: str
    """(0008,0060) Modality, upper-cased."""
    series_number: int | None
    """(0020,0011) Series Number."""
    series_description: str
    """(0008,103E) Series Description."""
    series_date: str
    """(0008,0021) Series Date."""
    series_time: str
    """(0008,0031) Series Time, as :func:`index_time` compares it."""
    body_part_examined: str
    """(0018,0015) Body Part Examined."""
    instance_number: int | None
    """(0020,0013) Instance Number."""

    @property
    def patient_name_search(self) -> str:
        """The alphabetic group of (0010,0010) Patient's Name, upper-cased, for case-insensitive matching."""
        return _upper(person_name_search(self.patient_name), 1024)

    @property
    def referring_physician_search(self) -> str:
        """The alphabetic group of (0008,0090) Referring Physician's Name, upper-cased."""
        return _upper(person_name_search(self.referring_physician_name), 1024)


@dataclass(slots=True)
class ParsedInstance:
    """What ingest needs to index one instance."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    metadata: dict[str, Any]
    frames: list[list[list[int]]] | None
    number_of_frames: int
    rows: int | None
    columns: int | None
    index: IndexAttributes

    def metadata_text(self) -> str:
        return json.dumps(self.metadata, separators=(",", ":"))

    def study_attributes(self) -> dict[str, Any]:
        return {t: scalars(self.metadata[t], without_nul) for t in STUDY_TAGS if t in self.metadata}

    def series_attributes(self) -> dict[str, Any]:
        return {t: scalars(self.metadata[t], without_nul) for t in SERIES_TAGS if t in self.metadata}


def index_time(value: str) -> str:
    """A TM value as the index compares it: ``HHMMSS[.F…]``, the missing minutes and seconds as zeros.

    TM may omit its minutes and seconds (``08`` and ``0800`` are both 08:00:00,
    PS3.5 Table 6.2-1), and ACR-NEMA wrote ``08:00:00``. Range matching
    compares index strings, so ``0800`` stored as is would fall outside
    ``080000-``. A value that is not a time is kept as it is.
    """
    text = value.replace(":", "")
    whole, dot, fraction = text.partition(".")
    if not whole.isascii() or not whole.isdigit() or len(whole) not in (2, 4, 6) or (dot and len(whole) != 6):
        return value
    return whole.ljust(6, "0") + dot + fraction


def _known_text(ds: Dataset, metadata: dict[str, Any], keyword: str, limit: int = 1024) -> str:
    """:func:`text_value`, read from the instance's DICOM JSON when it holds plain strings."""
    item = metadata.get(_TAG_HEX[keyword]) if keyword in _TAG_HEX else None
    if item is None:
        return "" if keyword in _TAG_HEX else text_value(ds, keyword, limit)
    values = item.get("Value")
    if values is None:
        return ""
    if all(isinstance(v, str) for v in values):
        return "\\".join(values).replace("\x00", "").strip()[:limit]
    return text_value(ds, keyword, limit)


def _known_int(ds: Dataset, metadata: dict[str, Any], keyword: str) -> int | None:
    """:func:`int_value`, read from the instance's DICOM JSON when it holds one integer (or nothing)."""
    item = metadata.get(_TAG_HEX[keyword])
    if item is None:
        return None  # the JSON holds every top-level element: absent from it is absent from ds
    values = item.get("Value")
    if values and len(values) == 1 and type(values[0]) is int:
        return values[0]
    return int_value(ds, keyword)


def _ascii_text(ds: Dataset, keyword: str, limit: int = 80) -> str:
    """:func:`text_value` for an element of an ASCII VR (UI, CS), from its raw bytes when not yet converted.

    The bytes are what pydicom would decode; only the conversion work (and
    its validation, which merely warns) is skipped. UIDs read this way are
    validated by :func:`archive.dicom.uid.validate_uid` like any other.
    """
    raw = ds.get_item(_TAG[keyword], keep_deferred=True)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        return raw.value.decode("latin_1").replace("\x00", "").strip()[:limit]
    return text_value(ds, keyword, limit)


def _index_int(ds: Dataset, metadata: dict[str, Any], keyword: str) -> int | None:
    """:func:`_known_int` for an integer kept only for searching: not indexed when it does not fit 32 bits."""
    value = _known_int(ds, metadata, keyword)
    return value if value is not None and INT32[0] <= value <= INT32[1] else None


def _pixel_int(ds: Dataset, metadata: dict[str, Any], keyword: str) -> int | None:
    """:func:`_known_int` for an attribute the archive addresses pixels with.

    Absent or empty is None; a value that is not an integer within
    :data:`PIXEL_INT_RANGES` makes the instance one the archive cannot read.
    """
    item = metadata.get(_TAG_HEX[keyword])
    if item is None or not item.get("Value"):
        return None
    value = _known_int(ds, metadata, keyword)
    low, high = PIXEL_INT_RANGES[keyword]
    if value is None or not low <= value <= high:
        tag = _TAG_HEX[keyword]
        raise InvalidInstance(f"({tag[:4]},{tag[4:]}) {keyword} is not an integer from {low} to {high}")
    return value


_TAG_HEX = {
    keyword: f"{tag_for_keyword(keyword):08X}"
    for keyword in (
        "PatientID IssuerOfPatientID PatientBirthDate PatientSex StudyDate StudyTime AccessionNumber StudyID "
        "StudyDescription InstitutionName Modality SeriesDescription SeriesDate SeriesTime BodyPartExamined "
        "SeriesNumber InstanceNumber NumberOfFrames Rows Columns SamplesPerPixel BitsAllocated"
    ).split()
}
_TAG = {
    keyword: int(tag_for_keyword(keyword) or 0)
    for keyword in "StudyInstanceUID SeriesInstanceUID SOPInstanceUID SOPClassUID".split()
}


def person_name_search(name: str) -> str:
    """The alphabetic component group of a PN, upper-cased, for case-insensitive matching."""
    return name.split("=")[0].upper()


def _upper(text: str, limit: int) -> str:
    """``text`` upper-cased and cut to ``limit`` again: upper-casing may lengthen it ("ß" is "SS")."""
    return text.upper()[:limit]


def _mapped(file: BinaryIO) -> Any:
    """``file`` as a read-only memory map: pydicom asks for its position once per element,
    which on a file is a system call each time and in a map is not."""
    try:
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:  # an empty file cannot be mapped
        raise InvalidInstance("not a readable DICOM Part 10 object: the file is empty") from None


def _inflate(source: Any, start: int, spool: BinaryIO, limit: int) -> None:
    """Inflate the raw deflate stream of ``source`` from ``start`` into ``spool``, never more than ``limit`` bytes.

    The decompressor yields at most :data:`INFLATE_CHUNK` bytes at a time, so
    memory stays bounded however well the stream compresses.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pos, end = 0, start, len(source)
    pending = b""
    while not inflater.eof:
        if not pending and pos < end:
            pending, pos = source[pos : pos + INFLATE_CHUNK], pos + INFLATE_CHUNK
        out = inflater.decompress(pending, INFLATE_CHUNK)  # with no input left, what zlib still holds
        pending = inflater.unconsumed_tail
        if not out and not pending and pos >= end and not inflater.eof:
            raise InvalidInstance("the deflated data set is truncated")
        total += len(out)
        if total > limit:
            raise InvalidInstance(f"the deflated data set inflates to more than {limit} bytes, the most accepted")
        spool.write(out)
    if not total:
        raise InvalidInstance("the deflated data set is empty")
    spool.flush()


_DEFLATED = DeflatedExplicitVRLittleEndian.encode()
#: Where (0002,0010) Transfer Syntax UID can be: group 2 elements come in tag order, and the three before it
#: hold at most 3 × 64 KiB.
_META_SCAN = 132 + 3 * (12 + 0xFFFF) + 8 + 64


def _may_be_deflated(fh: Any) -> bool:
    """Whether the File Meta Information of ``fh`` may name the deflated transfer syntax.

    Only then does :func:`_read` read the meta with pydicom first; the bytes
    of the UID anywhere in reach is enough (a false alarm costs that read).
    """
    return fh[128:132] == b"DICM" and fh.find(_DEFLATED, 132, _META_SCAN) >= 0


@contextmanager
def _read(fh: Any, path: Path, max_inflated: int | None) -> Iterator[tuple[FileDataset, Any]]:
    """The data set of the mapped Part 10 file ``fh``, large values deferred, and the buffer it is read from.

    A deflated data set (PS3.5 A.5) is inflated into a temporary file beside
    ``path`` first and read from there, since pydicom would inflate it whole
    into memory.
    """
    meta = None
    if _may_be_deflated(fh):
        preamble = read_preamble(fh, False)
        # Private: the public read_file_meta_info() opens a path and loses the offset the data set starts at.
        meta = _read_file_meta_info(fh)  # exactly as dcmread reads it
    if meta is None or meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        fh.seek(0)
        yield pydicom.dcmread(fh, defer_size=DEFER_SIZE, force=False), fh
        return
    start = fh.tell()
    with tempfile.TemporaryFile(dir=path.parent, prefix=".inflate-") as spool:
        _inflate(fh, start, spool, INFLATE_MAX_BYTES if max_inflated is None else max_inflated)
        with _mapped(spool) as body:
            dataset = read_dataset(body, False, True, defer_size=DEFER_SIZE)
            yield FileDataset(body, dataset, preamble, meta), body


def _check_complete(ds: Dataset, source: Any, uids: dict[str, str]) -> None:
    """Refuse an object cut short: no element of defined length may end past the end of ``source``,
    and the last one may not be followed by part of an element header (fewer than 8 bytes that are
    not all zero: zero bytes after the last element are padding, which some writers add).

    pydicom reads a short value without complaint, skips deferred ones and
    stops silently at a partial header, so a truncated object would otherwise
    be stored and never be readable (or lack what followed the cut). A cut
    at or before (0020,000E) Series Instance UID may have cut a UID short:
    ``uids`` is then emptied, so the refusal names no instance.
    """
    size = len(source)
    end, last = 0, None
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value_tell is not None and raw.length != UNDEFINED_LENGTH:
            if raw.value_tell + raw.length > size:
                if tag <= 0x0020000E:
                    uids.clear()
                raise InvalidInstance(f"the object is truncated: ({tag.group:04X},{tag.element:04X}) ends past its end")
            end = max(end, raw.value_tell + raw.length)
        last = raw
    if isinstance(last, RawDataElement) and last.length != UNDEFINED_LENGTH and 0 < size - end < 8:
        if any(source[end:size]):
            raise InvalidInstance("the object is truncated: it ends inside an element header")


#: VRs whose explicit little endian element header has a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def file_meta_end(fh: BinaryIO) -> int | None:
    """Where the data set of a Part 10 file begins: the offset after its last (0002,xxxx) element.

    Found by walking the File Meta Information elements (always explicit VR
    little endian, PS3.10 7.1), not by trusting (0002,0000) Group Length: a
    sender's wrong group length must not make two files look alike. None when
    the file is no Part 10 file, an element runs past its end, or the group
    length is missing or disagrees with the elements.
    """
    fh.seek(0)
    head = fh.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    position, stated = 132, None
    while True:
        header = fh.read(8)
        if len(header) < 8 or int.from_bytes(header[0:2], "little") != 0x0002:
            break
        vr = header[4:6]
        if vr in _LONG_VRS:
            extra = fh.read(4)
            if len(extra) < 4:
                return None
            length, start = int.from_bytes(extra, "little"), position + 12
        else:
            length, start = int.from_bytes(header[6:8], "little"), position + 8
        if length == UNDEFINED_LENGTH:
            return None
        value = fh.read(length)
        if len(value) < length:
            return None
        if header[2:4] == b"\x00\x00" and length == 4:
            stated = int.from_bytes(value, "little"), start + 4
        position = start + length
    if stated is None or stated[1] + stated[0] != position:
        return None  # (0002,0000) is Type 1: without it, or disagreeing, the end is not certain
    return position


def parse_instance(path: Path | str, base_prefix: str = BASE_MARK, max_inflated: int | None = None) -> ParsedInstance:
    """Parse the Part 10 file at ``path`` into a :class:`ParsedInstance`.

    Raises :class:`InvalidInstance` for anything that is not a complete DICOM
    instance with valid identifying UIDs and readable pixel attributes.
    ``max_inflated`` (ingest passes ``PACS_INFLATE_MAX_BYTES``) bounds a deflated
    data set.
    """
    uids: dict[str, str] = {}  # filled by _parse once the identifying UIDs are read
    try:
        with open(path, "rb") as file, _mapped(file) as fh, _read(fh, Path(path), max_inflated) as (ds, source):
            # Everything that reads ds happens in here: deferred values are read from the open map.
            return _parse(ds, source, base_prefix, uids)
    except InvalidInstance as exc:
        exc.uids = exc.uids or uids
        raise
    except InvalidUID as exc:
        raise InvalidInstance(str(exc), uids) from None
    except RecursionError:
        raise InvalidInstance("not a readable DICOM Part 10 object: sequences nested too deeply", uids) from None
    except (
        InvalidDicomError,
        EOFError,
        struct.error,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OverflowError,
        IndexError,
        NotImplementedError,
        zlib.error,
    ) as exc:
        raise InvalidInstance(f"not a readable DICOM Part 10 object: {type(exc).__name__}", uids) from None


def _parse(ds: FileDataset, source: Any, base_prefix: str, uids: dict[str, str]) -> ParsedInstance:
    """:func:`parse_instance` once the data set is read; ``source`` is the open buffer it was read from.

    ``uids`` receives the identifying UIDs as soon as they are known to be valid.
    """
    meta = ds.file_meta
    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if not ts:
        raise InvalidInstance("file meta has no (0002,0010) Transfer Syntax UID")
    study = validate_uid(_ascii_text(ds, "StudyInstanceUID"), "Study Instance UID")
    series = validate_uid(_ascii_text(ds, "SeriesInstanceUID"), "Series Instance UID")
    sop = validate_uid(_ascii_text(ds, "SOPInstanceUID"), "SOP Instance UID")
    sop_class = validate_uid(
        _ascii_text(ds, "SOPClassUID") or str(meta.get("MediaStorageSOPClassUID", "")), "SOP Class UID"
    )
    validate_uid(ts, "Transfer Syntax UID")
    uids.update(sop_class_uid=sop_class, sop_instance_uid=sop, study_instance_uid=study, series_instance_uid=series)
    _check_complete(ds, source, uids)
    prefix = f"{base_prefix}/studies/{study}/series/{series}/instances/{sop}"
    metadata = dataset_json(ds, prefix)  # first: the integers below are read from it
    pixels = {keyword: _pixel_int(ds, metadata, keyword) for keyword in PIXEL_INT_RANGES}
    n_frames = pixels["NumberOfFrames"] or (1 if PIXEL_DATA in ds else 0)
    frames = None
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if raw is not None and isinstance(raw, RawDataElement) and raw.value_tell is not None:
        uid = UID(ts)
        if uid.is_encapsulated and not uid.is_deflated:
            eot = None
            if 0x7FE00001 in ds:
                eot_raw = ds[0x7FE00001].value
                eot = list(struct.unpack(f"<{len(eot_raw) // 8}Q", eot_raw))
            frames = encapsulated_frames(source, raw.value_tell, n_frames, eot)
        elif ts in NATIVE_LITTLE_ENDIAN:
            frames = native_frames(ds, pixels, raw.value_tell, raw.length, n_frames)
    metadata["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    metadata = dict(sorted(metadata.items()))  # tag order (PS3.18 F.2.2), Instance Availability included
    index = IndexAttributes(
        patient_id=_known_text(ds, metadata, "PatientID", 64),
        issuer_of_patient_id=_known_text(ds, metadata, "IssuerOfPatientID", 64),
        patient_name=text_value(ds, "PatientName"),
        patient_birth_date=_known_text(ds, metadata, "PatientBirthDate", 8),
        patient_sex=_known_text(ds, metadata, "PatientSex", 16),
        study_date=_known_text(ds, metadata, "StudyDate", 8),
        study_time=index_time(_known_text(ds, metadata, "StudyTime", 16)),
        accession_number=_known_text(ds, metadata, "AccessionNumber", 64),
        study_id=_known_text(ds, metadata, "StudyID", 64),
        study_description=_known_text(ds, metadata, "StudyDescription"),
        referring_physician_name=text_value(ds, "ReferringPhysicianName"),
        institution_name=_known_text(ds, metadata, "InstitutionName"),
        modality=_upper(_known_text(ds, metadata, "Modality", 16), 16),
        series_number=_index_int(ds, metadata, "SeriesNumber"),
        series_description=_known_text(ds, metadata, "SeriesDescription"),
        series_date=_known_text(ds, metadata, "SeriesDate", 8),
        series_time=index_time(_known_text(ds, metadata, "SeriesTime", 16)),
        body_part_examined=_known_text(ds, metadata, "BodyPartExamined", 64),
        instance_number=_index_int(ds, metadata, "InstanceNumber"),
    )
    return ParsedInstance(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=sop_class,
        transfer_syntax_uid=ts,
        metadata=metadata,
        frames=frames,
        number_of_frames=n_frames,
        rows=pixels["Rows"],
        columns=pixels["Columns"],
        index=index,
    )
