"""DICOM JSON (PS3.18 F.2) of a data set, as stored for metadata and QIDO-RS.

:func:`dataset_json` encodes every top-level element; :func:`fast_element_json`
encodes the common single-byte text and number elements straight from their raw
bytes, giving exactly what pydicom's encoder gives, faster.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from archive.dicom.elements import BULK_THRESHOLD, PIXEL_DATA, int_value

log = logging.getLogger(__name__)


def scalars(value: Any, change: Callable[[Any], Any]) -> Any:
    """``value`` (DICOM JSON) with ``change`` applied to every string and number in it."""
    if isinstance(value, dict):
        return {k: scalars(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [scalars(v, change) for v in value]
    return change(value)


def without_nul(value: Any) -> Any:
    """NUL characters dropped from strings: a JSON column cannot hold them."""
    return value.replace("\x00", "") if isinstance(value, str) else value


def _finite(value: Any) -> Any:
    """A non-finite number as ``null``: JSON has no infinity or NaN."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def tag_hex(tag: int) -> str:
    return f"{tag:08X}"


def _element_json(ds: Dataset, tag: int, bulk_prefix: str) -> dict[str, Any] | None:
    raw = ds.get_item(tag, keep_deferred=True)
    if raw is None:
        return None
    vr = raw.VR
    if vr is None or vr in ("OB or OW", "US or SS", "US or OW", "US or SS or OW"):
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        if tag == PIXEL_DATA or vr == "OB or OW":
            bits = int_value(ds, "BitsAllocated") or 8
            vr = "OW" if bits > 8 else "OB"
        elif " or " in vr:
            vr = "US" if not int_value(ds, "PixelRepresentation") else "SS"
    deferred = isinstance(raw, RawDataElement) and raw.value is None and raw.length not in (0, None)
    if tag == PIXEL_DATA or (deferred and vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN", "UT", "UC", "LT")):
        return {"vr": vr, "BulkDataURI": f"{bulk_prefix}/bulkdata/{tag_hex(tag)}"}
    elem: DataElement = ds[tag]
    try:
        return scalars(
            elem.to_json_dict(
                bulk_data_element_handler=None,
                bulk_data_threshold=BULK_THRESHOLD if vr not in ("OB", "OW", "UN") else 10**12,
            ),
            _finite,
        )
    except RecursionError:
        raise  # sequences nested too deeply: the instance is refused
    except Exception as exc:  # noqa: BLE001 - one bad value must not lose the instance
        log.warning("element %s could not be encoded as JSON: %s", tag_hex(tag), type(exc).__name__)
        return {"vr": vr}


def dataset_json(ds: Dataset, bulk_prefix: str) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) for the top level of ``ds``; bulk values become URIs.

    Elements still in their raw form with a common VR are encoded directly
    from their bytes by :func:`fast_element_json`, which gives exactly what
    pydicom's ``to_json_dict`` gives (``tests/archive/dicom/test_part10.py`` compares
    both over pydicom's test files) at a fraction of the cost; everything
    else goes through pydicom.
    """
    out: dict[str, Any] = {}
    encoding = _single_byte_encoding(ds)
    for tag in sorted(ds.keys()):
        if tag.element == 0 or tag.group in (0x0002, 0xFFFC, 0xFFFA):
            continue  # group lengths, file meta, padding, signatures
        raw = ds.get_item(tag, keep_deferred=True)
        item = fast_element_json(raw, encoding) if isinstance(raw, RawDataElement) else None
        if item is None:
            item = _element_json(ds, tag, bulk_prefix)
        if item is not None:
            out[tag_hex(tag)] = item
    return out


#: (0008,0005) values whose text decodes with one single-byte or UTF-8 codec.
_CHARSETS = {"": "iso8859", "ISO_IR 6": "iso8859", "ISO_IR 100": "latin_1", "ISO_IR 192": "UTF8"}
_SPLIT_STRIP_VRS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})  # decoded as ASCII, stripped, then split
_TEXT_VRS = frozenset({"SH", "LO", "UC"})  # split, then each value stripped
_SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_INT = re.compile(r"[ ]*[+-]?[0-9]+[ ]*")
_DECIMAL = re.compile(r"[ ]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ ]*")


def _single_byte_encoding(ds: Dataset) -> str | None:
    raw = ds.get_item(0x00080005, keep_deferred=True)
    if raw is None:
        return _CHARSETS[""]
    value = raw.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip(" \x00")
    elif not isinstance(value, str):
        return None  # several character sets (ISO 2022): leave it to pydicom
    return _CHARSETS.get(value.strip())


def fast_element_json(raw: RawDataElement, encoding: str | None) -> dict[str, Any] | None:
    """The DICOM JSON of a raw element of a common VR, or None to let pydicom do it."""
    vr, value = raw.VR, raw.value
    if vr is None or not isinstance(value, bytes) or not raw.is_little_endian:
        return None
    components: list[Any]
    if vr in _SPLIT_STRIP_VRS:
        text = value.decode("latin_1").rstrip(" \x00")
        if not text:
            return {"vr": vr}
        components = text.split("\\")
    elif vr in _TEXT_VRS or vr in _SINGLE_TEXT_VRS or vr == "PN":
        if encoding is None or 0x1B in value:  # escape sequences switch character sets
            return None
        try:
            text = value.decode(encoding)
        except UnicodeDecodeError:
            return None
        if vr in _SINGLE_TEXT_VRS:
            text = text.rstrip("\x00 ")
            return {"vr": vr, "Value": [text]} if text else {"vr": vr}
        if vr == "PN":
            text = text.rstrip("\x00 ")
            if not text:
                return {"vr": vr}
            names = text.split("\\")
            if any(not n or "=" in n for n in names):
                return None
            return {"vr": vr, "Value": [{"Alphabetic": n} for n in names]}
        components = [c.rstrip("\x00 ") for c in text.split("\\")]
        if components == [""]:
            return {"vr": vr}
    elif vr == "IS" or vr == "DS":
        text = value.decode("latin_1")
        text = text.rstrip(" \x00") if vr == "IS" else text.strip().rstrip(" \x00")
        if not text:
            return {"vr": vr}
        pattern = _INT if vr == "IS" else _DECIMAL
        parts = text.split("\\")
        if not all(pattern.fullmatch(p) for p in parts):
            return None
        components = [int(p) for p in parts] if vr == "IS" else [float(p) for p in parts]
        if vr == "DS" and not all(math.isfinite(c) for c in components):
            return None  # "1e400" is a decimal to the pattern but infinite to float: pydicom's path nulls it
    elif vr in _NUMBER_FORMATS:
        fmt = _NUMBER_FORMATS[vr]
        size = struct.calcsize("<" + fmt)
        if len(value) % size:
            return None
        if not value:
            return {"vr": vr}
        components = list(struct.unpack(f"<{len(value) // size}{fmt}", value))
        if vr in ("FL", "FD") and not all(math.isfinite(c) for c in components):
            return None
    else:
        return None
    return {"vr": vr, "Value": components}
