"""Transfer syntaxes for WADO-RS: what each one is called on the web, and transcoding.

The archive keeps every object exactly as received; this module produces the
other representations a client may ask for (PS3.18 §8.7.3):

* :func:`to_explicit_little_endian` rewrites a whole Part 10 object in
  Explicit VR Little Endian (decompressing, inflating, byte-swapping or adding
  VRs as needed) into a spooled temporary file, one object at a time.
* :func:`decode_stored_frame` turns one stored compressed frame into native
  little-endian pixel bytes, given the Image Pixel attributes of the instance.
* :func:`frames_from_file` is the slow path for objects whose frame byte
  ranges are unknown (deflated, big endian, bit-packed, unknown fragment
  boundaries): pydicom reads the object and yields the requested frames.

Decoding uses pydicom's pixel decoders with the pylibjpeg, pyjpegls and
Pillow plugins; :func:`can_decode` says whether a syntax is decodable here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder, pixel_array
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID

from archive.dicom.syntaxes import (
    UNCOMPRESSED,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

OCTET_STREAM = "application/octet-stream"

#: The compressed bulk data media type of each encapsulated syntax (PS3.18 Table 8.7.3-5).
MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
#: Other syntaxes a stored syntax's code streams meet unchanged (PS3.5 §8.2.14, §10.18): an HTJ2K
#: Lossless RPCL stream is an HTJ2K Lossless one, and a lossless HTJ2K stream is an HTJ2K one.
ALSO_VALID_AS: dict[str, frozenset[str]] = {
    "1.2.840.10008.1.2.4.201": frozenset({"1.2.840.10008.1.2.4.203"}),
    "1.2.840.10008.1.2.4.202": frozenset({"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203"}),
}
#: Names clients use for the same media types (cornerstone, older dcm4che).
MEDIA_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}

#: Encapsulated syntaxes whose pixels are lossy: their default web form is the stored one.
LOSSY = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.4.111",
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.107",
        "1.2.840.10008.1.2.4.108",
    }
)
SPOOL_BYTES = 32 * 1024 * 1024
DEFER_BYTES = 1024
# Pixel module keywords -> pydicom decoding option names.
PIXEL_TAGS = {
    "00280002": "samples_per_pixel",
    "00280004": "photometric_interpretation",
    "00280006": "planar_configuration",
    "00280010": "rows",
    "00280011": "columns",
    "00280100": "bits_allocated",
    "00280101": "bits_stored",
    "00280103": "pixel_representation",
}


class TranscodeError(ValueError):
    """The stored object cannot be turned into the representation asked for."""


def canonical_media_type(media_type: str) -> str:
    return MEDIA_ALIASES.get(media_type, media_type)


def media_type_of(transfer_syntax: str) -> str:
    """The bulk data media type that carries frames of ``transfer_syntax`` unchanged."""
    return MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


def web_syntax(transfer_syntax: str) -> str:
    """The syntax to announce for stored bytes; native pixels are the same in both little endian forms."""
    return ExplicitVRLittleEndian if transfer_syntax == ImplicitVRLittleEndian else transfer_syntax


def is_encapsulated(transfer_syntax: str) -> bool:
    uid = UID(transfer_syntax)
    return bool(uid.is_encapsulated) and not uid.is_deflated


def can_decode(transfer_syntax: str) -> bool:
    """True if pixels stored in ``transfer_syntax`` can be made native here."""
    if transfer_syntax in UNCOMPRESSED:
        return True
    if transfer_syntax not in MEDIA_TYPES:
        return False
    try:
        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except NotImplementedError:
        return False


def pixel_options(metadata: dict[str, Any]) -> dict[str, Any]:
    """pydicom decoding options from an instance's DICOM JSON (Image Pixel module)."""
    opts: dict[str, Any] = {}
    for tag, name in PIXEL_TAGS.items():
        values = metadata.get(tag, {}).get("Value")
        if values:
            opts[name] = values[0]
    missing = {"rows", "columns", "bits_allocated"} - opts.keys()
    if missing:
        raise TranscodeError(f"the instance lacks Image Pixel attributes: {', '.join(sorted(missing))}")
    opts.setdefault("samples_per_pixel", 1)
    opts.setdefault("bits_stored", opts["bits_allocated"])
    opts.setdefault("pixel_representation", 0)
    opts.setdefault("photometric_interpretation", "MONOCHROME2")
    if opts["samples_per_pixel"] > 1:
        opts.setdefault("planar_configuration", 0)
    return opts


def native_bytes(arr: np.ndarray, bits_allocated: int) -> bytes:
    """Pixels as Explicit VR Little Endian stores them (colour-by-pixel, bits packed if 1-bit)."""
    if bits_allocated == 1:
        return bytes(pack_bits(arr))
    little = arr.dtype.newbyteorder("<")
    return arr.astype(little, copy=False).tobytes()


def decode_stored_frame(data: bytes, transfer_syntax: str, options: dict[str, Any]) -> bytes:
    """Decode one compressed frame (its whole codestream) to native little-endian bytes.

    Colour JPEG and JPEG 2000 frames come back as RGB, as the decoders and
    every mainstream archive deliver them.
    """
    try:
        decoder = get_decoder(UID(transfer_syntax))
        opts: dict[str, Any] = {**options, "number_of_frames": 1}
        arr, _ = decoder.as_array(encapsulate([data]), index=0, **opts)
    except (NotImplementedError, RuntimeError, ValueError, TypeError) as exc:
        raise TranscodeError(f"the stored frame could not be decoded: {exc}") from None
    return native_bytes(arr, int(options["bits_allocated"]))


def _swap_words(value: bytes, vr: str) -> bytes:
    width = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}.get(vr)
    if not width or len(value) % width:
        return value
    return np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _to_little_endian_pixels(ds: Dataset) -> None:
    """Rewrite big endian binary values so the dataset can be written little endian."""
    if "PixelData" in ds:
        arr = ds.pixel_array
        ds.PixelData = native_bytes(arr, int(ds.BitsAllocated))
        if ds.BitsAllocated > 8:
            ds["PixelData"].VR = "OW"
    for elem in ds.iterall():
        if elem.tag != 0x7FE00010 and isinstance(elem.value, bytes) and elem.VR in ("OW", "OF", "OL", "OD", "OV"):
            elem.value = _swap_words(elem.value, elem.VR)


def to_explicit_little_endian(fh: BinaryIO) -> BinaryIO:
    """The object in ``fh`` rewritten as Explicit VR Little Endian, in a file rewound to 0.

    The SOP Instance UID is kept: transcoding on retrieval changes the
    encoding, not the instance. Raises :class:`TranscodeError`.
    """
    try:
        ds = pydicom.dcmread(fh)
        ts = str(ds.file_meta.TransferSyntaxUID)
        if is_encapsulated(ts):
            ds.decompress(generate_instance_uid=False)
        elif ts == ExplicitVRBigEndian:
            _to_little_endian_pixels(ds)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned to the caller
        pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, AttributeError, KeyError, EOFError) as exc:
        raise TranscodeError(f"the stored object could not be transcoded: {exc}") from None
    out.seek(0)
    return out  # type: ignore[return-value]


def frames_from_file(fh: BinaryIO, indices: list[int], decode: bool) -> Iterator[bytes]:
    """Frames ``indices`` (0-based) of the object in ``fh`` by reading it with pydicom.

    With ``decode`` each frame is native little-endian bytes; otherwise the
    stored compressed codestream of each frame.
    """
    try:
        ds = pydicom.dcmread(fh)
        ts = str(ds.file_meta.TransferSyntaxUID)
        count = int(ds.get("NumberOfFrames") or 1)
        if not decode and is_encapsulated(ts):
            frames = list(generate_frames(ds.PixelData, number_of_frames=count))
            for index in indices:
                yield frames[index]
            return
        bits = int(ds.BitsAllocated)
        for index in indices:
            arr = pixel_array(ds, index=index) if count > 1 else pixel_array(ds)
            yield native_bytes(arr, bits)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise TranscodeError(f"the stored pixel data could not be read: {exc}") from None


def element_value(fh: BinaryIO, tag: int) -> bytes | None:
    """The little-endian value bytes of top-level binary element ``tag``, or None.

    A little-endian object's value is read as a byte range; deflated and big
    endian objects are read whole by pydicom.
    """
    try:
        ds = pydicom.dcmread(fh, defer_size=DEFER_BYTES)
        raw = ds.get_item(tag, keep_deferred=True)
        if raw is None:
            return None
        explicit_or_implicit_le = ds.original_encoding[1] and not UID(str(ds.file_meta.TransferSyntaxUID)).is_deflated
        value_tell = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        if explicit_or_implicit_le and value_tell is not None and length and getattr(raw, "value", None) is None:
            fh.seek(value_tell)
            data = fh.read(length)
            return data if len(data) == length else None
        elem = ds[tag]
        if not isinstance(elem.value, bytes):
            return None
        return elem.value if ds.original_encoding[1] else _swap_words(elem.value, elem.VR)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, AttributeError, KeyError, EOFError) as exc:
        raise TranscodeError(f"the stored value could not be read: {exc}") from None
