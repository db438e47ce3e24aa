"""Decoding one frame of a stored instance and presenting it as an 8-bit picture.

:func:`frame_array` returns the pixels of one frame as a numpy array. The fast
path reads the frame's precomputed byte ranges and, for native little endian
data, views them with ``np.frombuffer`` using the Image Pixel attributes of the
stored DICOM JSON: no ``dcmread``. Compressed frames are decoded from their
ranges with pydicom's decoder for the transfer syntax (plugins: pylibjpeg-libjpeg,
pylibjpeg-openjpeg, pylibjpeg-rle, pyjpegls, or pydicom's own RLE). Anything
odd (deflate, big endian, bit-packed, unknown frame boundaries) falls back to
pydicom reading the stored file.

:func:`present` applies the grayscale pipeline of PS3.4 N.2 — Modality LUT
(Rescale Slope/Intercept or (0028,3000) Modality LUT Sequence), VOI LUT (a
requested window, else the first (0028,1050)/(0028,1051) Window Center/Width,
else (0028,3010) VOI LUT Sequence, else the image's own range), MONOCHROME1
inversion — as one cached lookup table over all stored values, or the colour
pipeline (RGB, YBR to RGB, Palette Color). :func:`render` then crops and
scales for a viewport and encodes JPEG (baseline), PNG or GIF with Pillow.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, BinaryIO, Protocol, cast

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space, get_decoder, pixel_array
from pydicom.uid import UID

from archive.dicom.syntaxes import NATIVE_LITTLE_ENDIAN

GRAYSCALE = {"MONOCHROME1", "MONOCHROME2"}
#: Bumped whenever rendering changes, so cached results and ETags change too.
RENDER_VERSION = "1"

MEDIA_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}

# Tags read from the file (not the stored JSON) when lookup tables are needed.
LUT_TAGS = [
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
]


class StoredFrames(Protocol):
    """What decoding needs of a stored instance: its encoding, its frames' byte ranges, its bytes.

    :class:`archive.models.Instance` is one; this module stays free of Django.
    """

    metadata: str
    transfer_syntax_uid: str
    frames: Any

    def open_stored(self) -> BinaryIO: ...

    def read_stored_ranges(self, ranges: list[list[int]]) -> bytes: ...


class PixelError(ValueError):
    """The frame cannot be decoded or presented (the reason is safe to show)."""


class VoiFunction(StrEnum):
    """(0028,1056) VOI LUT Function, Defined Terms."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True)
class Window:
    """A window (PS3.3 C.11.2.1.2): center and width in modality units."""

    center: float
    width: float
    function: VoiFunction = VoiFunction.LINEAR


@dataclass(frozen=True)
class Viewport:
    """PS3.18 §8.3.5.1.3: fit into ``width`` × ``height``, optionally from a source region.

    ``region`` is (sx, sy, sw, sh) in source pixels; a negative sw or sh flips
    the image along that axis.
    """

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class RenderOptions:
    """What to render: media type, window, viewport, JPEG quality, thumbnail box."""

    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90
    #: Without a viewport, shrink (never enlarge) to fit a square of this size.
    max_box: int | None = None

    def key(self) -> str:
        """A canonical text of these options, for ETags and cache keys."""
        parts = [RENDER_VERSION, self.media_type, f"q={self.quality if self.media_type == 'image/jpeg' else ''}"]
        if self.window:
            parts.append(f"w={self.window.center!r},{self.window.width!r},{self.window.function.value}")
        if self.viewport:
            parts.append(f"v={self.viewport.width},{self.viewport.height},{self.viewport.region}")
        if self.max_box:
            parts.append(f"b={self.max_box}")
        return ";".join(parts)


# --- the stored DICOM JSON ---------------------------------------------------------


def value(meta: dict[str, Any], tag: str, default: Any = None, index: int = 0) -> Any:
    """Value number ``index`` of ``tag`` in DICOM JSON, or ``default``."""
    values = (meta.get(tag) or {}).get("Value")
    if not values or len(values) <= index or values[index] is None:
        return default
    return values[index]


def _number(meta: dict[str, Any], tag: str, default: float | None) -> float | None:
    try:
        number = float(value(meta, tag, default))
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


@dataclass(frozen=True)
class ImagePixel:
    """The Image Pixel module attributes that say how to read the pixel bytes."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    planar_configuration: int
    photometric: str
    number_of_frames: int

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ImagePixel:
        try:
            rows, columns = int(value(meta, "00280010", 0)), int(value(meta, "00280011", 0))
            bits_allocated = int(value(meta, "00280100", 0))
            pixel = cls(
                rows=rows,
                columns=columns,
                samples_per_pixel=int(value(meta, "00280002", 1)),
                bits_allocated=bits_allocated,
                bits_stored=int(value(meta, "00280101", bits_allocated)),
                pixel_representation=int(value(meta, "00280103", 0)),
                planar_configuration=int(value(meta, "00280006", 0)),
                photometric=str(value(meta, "00280004", "")).strip().upper(),
                number_of_frames=int(value(meta, "00280008", 1) or 1),
            )
        except (TypeError, ValueError):
            raise PixelError("the Image Pixel attributes are not valid numbers") from None
        if "7FE00010" not in meta or not rows or not columns or not bits_allocated:
            raise PixelError("the instance has no pixel data to render")
        return pixel


@dataclass
class Frame:
    """Decoded pixels of one frame and the photometric interpretation they are now in."""

    pixels: np.ndarray
    photometric: str
    meta: dict[str, Any]
    lut_source: Dataset | None = field(default=None, repr=False)


# --- decoding ----------------------------------------------------------------------


def _native(data: bytes, px: ImagePixel) -> np.ndarray:
    kind = "i" if px.pixel_representation else "u"
    dtype = np.dtype(f"<{kind}{px.bits_allocated // 8}")
    count = px.rows * px.columns * px.samples_per_pixel
    if len(data) < count * dtype.itemsize:
        raise PixelError("the frame is shorter than Rows × Columns × Samples require")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    if px.samples_per_pixel == 1:
        return arr.reshape(px.rows, px.columns)
    if px.planar_configuration == 0:
        return arr.reshape(px.rows, px.columns, px.samples_per_pixel)
    return arr.reshape(px.samples_per_pixel, px.rows, px.columns).transpose(1, 2, 0)


def _decoder_options(px: ImagePixel) -> dict[str, Any]:
    return {
        "rows": px.rows,
        "columns": px.columns,
        "samples_per_pixel": px.samples_per_pixel,
        "bits_allocated": px.bits_allocated,
        "bits_stored": px.bits_stored,
        "pixel_representation": px.pixel_representation,
        "photometric_interpretation": px.photometric,
        "planar_configuration": px.planar_configuration,
        "number_of_frames": 1,
    }


def _after_decoding(transfer_syntax: str, photometric: str) -> str:
    """The photometric interpretation pydicom's default processing leaves behind."""
    if photometric in ("YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"):
        return "RGB"  # pydicom converts YBR_FULL*; JPEG 2000 decoders undo ICT/RCT
    return photometric


def _from_file(fh: BinaryIO, index: int, transfer_syntax: str) -> tuple[np.ndarray, str | None]:
    """Decode through pydicom from the whole file (deflate, big endian, bit-packed...)."""
    try:
        return pixel_array(fh, index=index), None
    except AttributeError:
        fh.seek(0)  # e.g. deflated data sets, whose Pixel Data pixel_array cannot seek to
    ds = pydicom.dcmread(fh)
    arr, props = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=index)
    return arr, str(props.get("photometric_interpretation", ""))


def frame_array(inst: StoredFrames, index: int, meta: dict[str, Any] | None = None) -> Frame:
    """Pixels of frame ``index`` (0-based) of ``inst``, colour converted to RGB where pydicom would."""
    meta = json.loads(inst.metadata) if meta is None else meta
    px = ImagePixel.from_metadata(meta)
    if not 0 <= index < px.number_of_frames:
        raise PixelError(f"frame {index + 1} does not exist; the instance has {px.number_of_frames}")
    ts = inst.transfer_syntax_uid
    ranges = inst.frames[index] if inst.frames and index < len(inst.frames) else None
    try:
        if ranges and ts in NATIVE_LITTLE_ENDIAN and px.bits_allocated in (8, 16, 32, 64):
            if px.photometric not in ("YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420"):
                arr = _native(inst.read_stored_ranges(ranges), px)
                if px.photometric == "YBR_FULL":
                    return Frame(convert_color_space(arr, "YBR_FULL", "RGB"), "RGB", meta)
                return Frame(arr, px.photometric, meta)
        uid = UID(ts)
        if ranges and uid.is_encapsulated and not uid.is_deflated:
            decoder = get_decoder(uid)
            if not decoder.is_available:
                raise PixelError(f"no decoder is installed for transfer syntax {ts}")
            data = encapsulate([inst.read_stored_ranges(ranges)])
            arr, props = decoder.as_array(data, **_decoder_options(px))
            photometric = str(props.get("photometric_interpretation", px.photometric))
            return Frame(arr, _after_decoding(ts, photometric), meta)
        with inst.open_stored() as fh:
            arr, photometric_after = _from_file(fh, index, ts)
        return Frame(arr, _after_decoding(ts, photometric_after or px.photometric), meta)
    except PixelError:
        raise
    except (NotImplementedError, RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PixelError(f"the frame could not be decoded ({type(exc).__name__})") from None


def _lut_source(inst: StoredFrames) -> Dataset:
    """The lookup-table attributes, read from the stored file (rare images only)."""
    with inst.open_stored() as fh:
        return pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=LUT_TAGS)


def needs_lut_source(meta: dict[str, Any], photometric: str) -> bool:
    return photometric == "PALETTE COLOR" or "00283000" in meta or "00283010" in meta


#: What :func:`present` can show, by photometric interpretation as stored: the samples per pixel each needs.
#: YBR_FULL, YBR_FULL_422 and the JPEG 2000 YBR_ICT / YBR_RCT reach it as RGB (:func:`_after_decoding`).
PRESENTABLE = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
}
#: (0028,0100) Bits Allocated values the decoders (native views, pydicom) give an array for.
DECODABLE_BITS = {1, 8, 16, 32, 64}


def render_refusal(meta: dict[str, Any], transfer_syntax: str) -> str | None:
    """Why an instance can never be rendered, from its stored DICOM JSON and transfer syntax; None if it may be.

    A cheap check (no file read, no decoding) of what is a permanent property of
    the instance: pixel data and valid Image Pixel attributes, a decoder
    installed for the transfer syntax, a photometric interpretation
    :func:`present` supports with the matching (0028,0002) Samples per Pixel, and
    bit depths the decoders read. It foresees what it can: an instance it lets
    through may still fail to decode (corrupt bytes, an unreadable file).
    """
    try:
        px = ImagePixel.from_metadata(meta)
    except PixelError as exc:
        return str(exc)
    samples = PRESENTABLE.get(px.photometric)
    if samples is None:
        return f"photometric interpretation {px.photometric or '(none)'} cannot be rendered"
    if px.samples_per_pixel != samples:
        return f"{px.photometric} needs {samples} sample(s) per pixel, the instance has {px.samples_per_pixel}"
    if px.bits_allocated not in DECODABLE_BITS or not 1 <= px.bits_stored <= px.bits_allocated:
        return f"bits allocated {px.bits_allocated}, bits stored {px.bits_stored} cannot be decoded"
    try:
        available = get_decoder(UID(transfer_syntax)).is_available
    except NotImplementedError:
        available = False
    if not available:
        return f"no decoder is installed for transfer syntax {transfer_syntax}"
    return None


# --- presentation --------------------------------------------------------------


def _voi(m: np.ndarray, window: Window) -> np.ndarray:
    """VOI windowing (PS3.3 C.11.2.1.2, C.11.2.1.3) of modality values into 0..1."""
    c, w = window.center, window.width
    if window.function is VoiFunction.SIGMOID:
        return cast(np.ndarray, 1.0 / (1.0 + np.exp(np.clip(-4.0 * (m - c) / w, -700, 700))))
    if window.function is VoiFunction.LINEAR:
        c, w = c - 0.5, w - 1.0
    if w <= 0:
        return (m > c).astype(np.float64)
    return cast(np.ndarray, np.clip((m - c) / w + 0.5, 0.0, 1.0))


def _metadata_window(meta: dict[str, Any]) -> Window | None:
    center, width = _number(meta, "00281050", None), _number(meta, "00281051", None)
    if center is None or width is None:
        return None
    name = str(value(meta, "00281056", "LINEAR")).strip().upper()
    function = VoiFunction(name) if name in VoiFunction.__members__ else VoiFunction.LINEAR
    if width < (1 if function is VoiFunction.LINEAR else 0) or width == 0:
        return None
    return Window(center, width, function)


def _voi_lut(m: np.ndarray, source: Dataset) -> np.ndarray:
    """(0028,3010) VOI LUT Sequence, first item, scaled into 0..1 by its bit depth."""
    item = source.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    data = item.LUTData
    if isinstance(data, bytes):
        little = source.original_encoding[1] is not False
        data = np.frombuffer(data, dtype="<u2" if little else ">u2")
    lut = np.asarray(data, dtype=np.float64).ravel()[: entries or 65536]
    index = np.clip(np.rint(m) - first, 0, len(lut) - 1).astype(np.intp)
    return cast(np.ndarray, lut[index] / float(2**bits - 1))


def _to_u8(y: np.ndarray, invert: bool) -> np.ndarray:
    out = (np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return 255 - out if invert else out


@lru_cache(maxsize=128)
def _simple_lut(bits: int, signed: bool, slope: float, intercept: float, window: Window, invert: bool) -> np.ndarray:
    """Stored value (as unsigned ``bits``-bit index) → 8-bit output; cached per window."""
    stored = np.arange(2**bits, dtype=np.int64)
    if signed:
        stored = np.where(stored >= 2 ** (bits - 1), stored - 2**bits, stored)
    lut = _to_u8(_voi(stored * slope + intercept, window), invert)
    lut.flags.writeable = False
    return lut


def _grayscale(frame: Frame, window: Window | None) -> np.ndarray:
    meta, arr = frame.meta, frame.pixels
    if arr.ndim != 2:
        raise PixelError("a grayscale frame must have one sample per pixel")
    invert = frame.photometric == "MONOCHROME1"
    slope = _number(meta, "00281053", 1.0) or 1.0
    intercept = _number(meta, "00281052", 0.0) or 0.0
    source = frame.lut_source
    modality_lut = source is not None and "ModalityLUTSequence" in source
    voi_lut = source is not None and "VOILUTSequence" in source
    window = window or _metadata_window(meta)
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    signed = arr.dtype.kind == "i"
    bits = min(int(value(meta, "00280101", arr.dtype.itemsize * 8) or 8), arr.dtype.itemsize * 8)
    if arr.dtype.kind in "iu" and bits <= 16:
        # Index a table of every possible stored value; masking also drops unused high bits.
        index = arr.view(arr.dtype.str.replace("i", "u")) if signed else arr
        if bits < arr.dtype.itemsize * 8:
            index = index & np.array(2**bits - 1, dtype=index.dtype)
        if window is not None and not modality_lut:
            return _simple_lut(bits, signed, slope, intercept, window, invert)[index]
        stored = np.arange(2**bits, dtype=np.int64)
        if signed:
            stored = np.where(stored >= 2 ** (bits - 1), stored - 2**bits, stored)
        values: np.ndarray = stored
        gather = index
    else:
        values, gather = arr.astype(np.float64), None
    if modality_lut:
        assert source is not None
        m = apply_modality_lut(values, source).astype(np.float64)
    else:
        m = values * slope + intercept
    if window is not None:
        y = _voi(m, window)
    elif voi_lut:
        assert source is not None
        y = _voi_lut(m, source)
    else:
        present = m[gather] if gather is not None else m
        lo, hi = float(present.min()), float(present.max())
        y = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    table = _to_u8(y, invert)
    return table[gather] if gather is not None else table


def _scale_to_u8(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8 and bits >= 8:
        return arr
    top = float(2 ** min(bits, arr.dtype.itemsize * 8) - 1)
    return (np.clip(arr.astype(np.float64) * (255.0 / top), 0, 255) + 0.5).astype(np.uint8)


def _color(frame: Frame) -> np.ndarray:
    arr, meta = frame.pixels, frame.meta
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    if frame.photometric == "PALETTE COLOR":
        if frame.lut_source is None:
            raise PixelError("the palette could not be read")
        try:
            rgb = apply_color_lut(arr, frame.lut_source)
        except (ValueError, AttributeError, KeyError, IndexError) as exc:
            raise PixelError(f"the palette could not be applied ({type(exc).__name__})") from None
        return _scale_to_u8(rgb, rgb.dtype.itemsize * 8)
    if frame.photometric != "RGB" or arr.ndim != 3 or arr.shape[2] != 3:
        raise PixelError(f"photometric interpretation {frame.photometric or '(none)'} cannot be rendered")
    bits = int(value(meta, "00280101", arr.dtype.itemsize * 8) or 8)
    return np.ascontiguousarray(_scale_to_u8(arr, bits))


def present(frame: Frame, window: Window | None = None) -> np.ndarray:
    """8-bit display values: (rows, columns) grayscale or (rows, columns, 3) RGB."""
    if frame.photometric in GRAYSCALE:
        return _grayscale(frame, window)
    return _color(frame)


# --- geometry and encoding --------------------------------------------------------


def fit(image: Image.Image, options: RenderOptions) -> Image.Image:
    """Crop to the viewport's source region, flip if asked, scale keeping the aspect ratio."""
    viewport = options.viewport
    if viewport and viewport.region:
        sx, sy, sw, sh = viewport.region
        box = (sx, sy, min(sx + abs(sw), image.width), min(sy + abs(sh), image.height))
        if box[0] >= box[2] or box[1] >= box[3]:
            raise PixelError("the viewport's source region lies outside the image")
        image = image.crop(box)
        if sw < 0:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if viewport:
        scale = min(viewport.width / image.width, viewport.height / image.height)
    elif options.max_box:
        scale = min(1.0, options.max_box / image.width, options.max_box / image.height)
    else:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    if scale < 1:
        factor = image.width // size[0]
        if factor >= 2 and (image.width, image.height) == (size[0] * factor, size[1] * factor):
            # An exact integer reduction (512 to 256, or to a 128 thumbnail): the box filter averages
            # every source pixel with equal weight, the fair reduction, in a fifteenth of Lanczos' time.
            return image.reduce(factor)
        return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return image.resize(size, Image.Resampling.BICUBIC)


def encode(images: list[Image.Image], options: RenderOptions, frame_time_ms: float = 100.0) -> bytes:
    """Encode one image (or, for GIF, an animation of several)."""
    buf = io.BytesIO()
    fmt = MEDIA_FORMATS[options.media_type]
    first = images[0]
    if fmt == "JPEG":
        first.save(buf, "JPEG", quality=options.quality)
    elif fmt == "PNG":
        first.save(buf, "PNG", compress_level=1)
    else:
        frames = [im if im.mode == "L" else im.quantize(256) for im in images]
        extra = {"save_all": True, "append_images": frames[1:], "duration": frame_time_ms, "loop": 0}
        frames[0].save(buf, "GIF", **(extra if len(frames) > 1 else {}))
    return buf.getvalue()


def picture(inst: StoredFrames, index: int, options: RenderOptions, meta: dict[str, Any] | None = None) -> Image.Image:
    """Frame ``index`` of ``inst`` decoded, presented and fitted, as a Pillow image."""
    frame = frame_array(inst, index, meta)
    if needs_lut_source(frame.meta, frame.photometric):
        frame.lut_source = _lut_source(inst)
    pixels = present(frame, options.window)
    return fit(Image.fromarray(pixels), options)


def render(inst: StoredFrames, indices: list[int], options: RenderOptions) -> bytes:
    """Encoded bytes of frame(s) ``indices`` (0-based); several only for an animated GIF."""
    meta = json.loads(inst.metadata)
    images = [picture(inst, i, options, meta) for i in indices]
    frame_time = _number(meta, "00181063", 100.0) or 100.0
    return encode(images, options, frame_time_ms=frame_time)
