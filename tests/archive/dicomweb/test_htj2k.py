"""High-Throughput JPEG 2000 (HTJ2K, ISO/IEC 15444-15) objects, end to end.

No Python HTJ2K encoder runs on Python 3.11, so the code streams come from an
independent implementation: OpenJPH compiled to WebAssembly, run by Node from
``tests/archive/dicomweb/htj2k`` (``npm --prefix tests/archive/dicomweb/htj2k ci``; ``make test`` does it). Each
synthetic image is encoded there, checked to really be HT (CAP marker, Rsiz
bit 14, HT code-block style, so a Part 1 stream cannot pass), wrapped in a
Part 10 object in one of the three HTJ2K transfer syntaxes (PS3.5 §8.2.14,
§10.18) and sent through STOW-RS. WADO-RS must then give back the stored
object and code streams byte for byte, and decode them (pylibjpeg-openjpeg)
to exactly the original pixels, or within a stated error for the lossy one.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openjpeg
import pydicom
import pytest
from django.test import Client
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.uid import UID, JPEG2000Lossless

from archive.dicom.synthetic import StudySpec, make_instance, phantom
from archive.models import Instance
from tests.archive.dicomweb.test_wado_retrieve import Stored, body_of, parts_of, store, syntax_of

ENCODER_DIR = Path(__file__).parent / "htj2k"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ROWS, COLUMNS = 48, 64  # not square, so a rows/columns mix-up shows

# JPEG 2000 markers (ISO/IEC 15444-1 Annex A, 15444-15 Annex A).
SOC, SOT, SIZ, CAP, COD, TLM = 0xFF4F, 0xFF90, 0xFF51, 0xFF50, 0xFF52, 0xFF55
RSIZ_CAP = 0x4000  # Rsiz bit 14: capabilities in a CAP marker segment
PCAP_PART15 = 1 << (32 - 15)  # Pcap bit 15 (MSB first): Part 15 capabilities follow
HT_BLOCK_STYLE = 0x40  # code-block style bit 6: HT code blocks
RPCL = 2


# --------------------------------------------------------------------------- synthetic pixels


def _crop(arr: np.ndarray) -> np.ndarray:
    top = (arr.shape[0] - ROWS) // 2
    return arr[top : top + ROWS, :COLUMNS]


def ct_frames(count: int) -> np.ndarray:
    """Signed 16-bit Hounsfield units: the CT phantom with scanner-like noise."""
    rng = np.random.default_rng(15444)
    frames = [_crop(phantom("CT", COLUMNS, slice_index=i)).astype(np.int32) - 1024 for i in range(count)]
    noisy = np.stack(frames) + rng.normal(0, 25, (count, ROWS, COLUMNS)).round().astype(np.int32)
    return np.clip(noisy, -2048, 3071).astype(np.int16)


def us_frames(count: int) -> np.ndarray:
    """Unsigned 8-bit ultrasound speckle frames."""
    return np.stack([_crop(phantom("US", COLUMNS, frame=f)) for f in range(count)])


def rgb_frames(count: int) -> np.ndarray:
    """8-bit RGB: a red ramp across, a green ramp down, blue noise."""
    rng = np.random.default_rng(815)
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    frames = []
    for f in range(count):
        blue = rng.integers(0, 256, (ROWS, COLUMNS))
        frames.append(np.stack([x * 4 + f, y * 5, blue], axis=-1))
    return np.asarray(frames, dtype=np.uint8)


# --------------------------------------------------------------------------- the encoder


def encode(frame: np.ndarray, *options: str) -> bytes:
    """One frame as an HTJ2K code stream, made by OpenJPH (WebAssembly) under Node."""
    node = shutil.which("node")
    if node is None or not (ENCODER_DIR / "node_modules" / "@cornerstonejs" / "codec-openjph").is_dir():
        pytest.fail("The HTJ2K test encoder is not installed: run `make test` (it runs npm ci there)")
    components = frame.shape[2] if frame.ndim == 3 else 1
    args = ["--width", str(frame.shape[1]), "--height", str(frame.shape[0])]
    args += ["--bits", str(frame.dtype.itemsize * 8), "--components", str(components)]
    if frame.dtype.kind == "i":
        args.append("--signed")
    raw = frame.astype(frame.dtype.newbyteorder("<")).tobytes()
    done = subprocess.run(
        [node, "encode.js", *args, *options], cwd=ENCODER_DIR, input=raw, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@dataclass(frozen=True)
class MainHeader:
    """What a test needs from a code stream's main header (SOC up to the first SOT)."""

    segments: dict[int, bytes]
    rsiz: int
    width: int
    height: int
    components: int
    precision: int
    signed: bool
    progression: int
    levels: int
    block_style: int
    reversible: bool
    colour_transform: bool

    @property
    def is_high_throughput(self) -> bool:
        cap = self.segments.get(CAP, b"")
        pcap = int.from_bytes(cap[:4], "big") if len(cap) >= 4 else 0
        return bool(self.rsiz & RSIZ_CAP and pcap & PCAP_PART15 and self.block_style & HT_BLOCK_STYLE)


def main_header(codestream: bytes) -> MainHeader:
    """Parse the marker segments of the main header (ISO/IEC 15444-1 A.5, A.6)."""
    assert int.from_bytes(codestream[:2], "big") == SOC, "not a JPEG 2000 code stream"
    segments: dict[int, bytes] = {}
    pos = 2
    while pos + 4 <= len(codestream):
        marker = int.from_bytes(codestream[pos : pos + 2], "big")
        if marker == SOT:
            break
        length = int.from_bytes(codestream[pos + 2 : pos + 4], "big")
        segments.setdefault(marker, codestream[pos + 4 : pos + 2 + length])
        pos += 2 + length
    siz, cod = segments[SIZ], segments[COD]
    ssiz = siz[36]
    return MainHeader(
        segments=segments,
        rsiz=int.from_bytes(siz[0:2], "big"),
        width=int.from_bytes(siz[2:6], "big") - int.from_bytes(siz[10:14], "big"),
        height=int.from_bytes(siz[6:10], "big") - int.from_bytes(siz[14:18], "big"),
        components=int.from_bytes(siz[34:36], "big"),
        precision=(ssiz & 0x7F) + 1,
        signed=bool(ssiz & 0x80),
        progression=cod[1],
        levels=cod[5],
        block_style=cod[8],
        reversible=cod[9] == 1,
        colour_transform=cod[4] == 1,
    )


# --------------------------------------------------------------------------- the DICOM objects


@dataclass(frozen=True)
class Case:
    """One HTJ2K object to make: pixels, how to encode them, how to label them."""

    name: str
    syntax: str
    photometric: str
    make_pixels: Callable[[int], np.ndarray]
    frames: int = 1
    encoder_options: tuple[str, ...] = ()
    window: tuple[float, float] | None = None
    #: Largest decoding error allowed per sample: 0 for lossless.
    tolerance: int = 0


CASES = [
    Case("ct-signed-16bit", HTJ2K_LOSSLESS, "MONOCHROME2", ct_frames, 2, ("--order", "LRCP"), (40, 400)),
    Case("ct-signed-16bit-rpcl", HTJ2K_LOSSLESS_RPCL, "MONOCHROME2", ct_frames, 1, ("--rpcl",), (40, 400)),
    Case("us-unsigned-8bit", HTJ2K_LOSSLESS, "MONOCHROME2", us_frames, 3, (), (128, 256)),
    Case("rgb-8bit", HTJ2K_LOSSLESS, "RGB", rgb_frames),
    Case("rgb-8bit-rct", HTJ2K_LOSSLESS, "YBR_RCT", rgb_frames, 2, ("--color-transform",)),
    Case("ct-signed-16bit-lossy", HTJ2K, "MONOCHROME2", ct_frames, 1, ("--lossy", "0.0001"), (40, 400), 16),
]

CASES_BY_NAME = {case.name: case for case in CASES}


@dataclass
class Made:
    """An HTJ2K Part 10 object, its code streams and the pixels they encode."""

    case: Case
    pixels: np.ndarray  # (frames, rows, columns[, 3])
    codestreams: list[bytes]
    part10: bytes = field(repr=False)


def wrap(case: Case, pixels: np.ndarray, codestreams: list[bytes]) -> bytes:
    """A Part 10 object holding ``codestreams`` as encapsulated frames in ``case.syntax``."""
    grey = pixels.ndim == 3
    modality = "CT" if pixels.dtype == np.int16 else "US"
    ds = pydicom.dcmread(io.BytesIO(make_instance(StudySpec(), modality, frames=case.frames)))
    if not grey:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(SECONDARY_CAPTURE)
        ds.Modality = "OT"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1 if grey else 3
    ds.PhotometricInterpretation = case.photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if not grey:
        ds.PlanarConfiguration = 0
    for keyword in ("RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    if modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
    if case.window:
        ds.WindowCenter, ds.WindowWidth = (f"{v:g}" for v in case.window)
    if case.frames > 1:
        ds.NumberOfFrames = case.frames
    elif "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    if case.tolerance:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = f"{pixels.nbytes / sum(map(len, codestreams)):.2f}"
        ds.LossyImageCompressionMethod = "ISO_15444_15"
    ds.PixelData = encapsulate(codestreams, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID(case.syntax)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@functools.cache
def make(case: Case) -> Made:
    """``case`` encoded and wrapped, once per test run (the encoder is a Node subprocess)."""
    pixels = case.make_pixels(case.frames)
    codestreams = [encode(frame, *case.encoder_options) for frame in pixels]
    return Made(case, pixels, codestreams, wrap(case, pixels, codestreams))


@pytest.fixture(params=CASES, ids=lambda case: case.name)
def made(request: pytest.FixtureRequest) -> Made:
    return make(request.param)


@pytest.fixture
def api(admin_client_token: Client) -> Client:
    """An administrator's bearer client: stores, and sees every study under the site policy."""
    return admin_client_token


@pytest.fixture
def stored(api: Client, made: Made) -> Stored:
    return store(api, made.part10)


def padded(codestream: bytes) -> bytes:
    """A code stream as an encapsulated fragment holds it: padded to even length (PS3.5 A.4)."""
    return codestream + b"\x00" * (len(codestream) % 2)


def assert_pixels(got: np.ndarray, want: np.ndarray, tolerance: int) -> None:
    """Equal, or for a lossy case within ``tolerance`` yet not equal (the lossy path really ran)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    error = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
    assert error <= tolerance, f"largest error {error}"
    if tolerance:
        assert error > 0, "a lossy code stream decoded exactly"


def frame_array(data: bytes, made: Made) -> np.ndarray:
    """Native little-endian frame bytes shaped like one of the original frames."""
    like = made.pixels[0]
    return np.frombuffer(data, like.dtype.newbyteorder("<")).reshape(like.shape)


def windowed(frame: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``frame`` through pydicom's Modality LUT and linear VOI window, scaled to 8 bits."""
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = window
    ds.VOILUTFunction = "LINEAR"
    ds.BitsStored, ds.PixelRepresentation = frame.dtype.itemsize * 8, int(frame.dtype.kind == "i")
    m = apply_modality_lut(frame, ds).astype(np.float64)
    with np.errstate(over="ignore"):
        low, high = apply_windowing(np.array([-1e12, 1e12]), ds)
    y = (apply_windowing(m, ds) - low) / (high - low)
    return (np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- the code streams


def test_the_encoder_writes_high_throughput_code_streams(made: Made) -> None:
    case = made.case
    for frame, codestream in zip(made.pixels, made.codestreams, strict=True):
        header = main_header(codestream)
        assert header.is_high_throughput
        assert (header.width, header.height) == (COLUMNS, ROWS)
        assert header.components == (3 if frame.ndim == 3 else 1)
        assert header.precision == frame.dtype.itemsize * 8
        assert header.signed == (frame.dtype.kind == "i")
        assert header.reversible == (case.tolerance == 0)
        assert header.colour_transform == (case.photometric in ("YBR_RCT", "YBR_ICT"))
        assert codestream.endswith(b"\xff\xd9")  # EOC


@pytest.mark.parametrize("case", [c for c in CASES if c.syntax == HTJ2K_LOSSLESS_RPCL], ids=lambda c: c.name)
def test_lossless_rpcl_code_streams_meet_ps3_5_section_10_18(case: Case) -> None:
    for codestream in make(case).codestreams:
        header = main_header(codestream)
        assert header.progression == RPCL
        assert TLM in header.segments
        assert max(header.width, header.height) / 2**header.levels <= 64
        assert header.reversible


def test_the_high_throughput_check_tells_a_part_1_code_stream_apart() -> None:
    """The HT check is what keeps these tests honest: a classic JPEG 2000 stream fails it."""
    ds = pydicom.dcmread(io.BytesIO(make_instance(StudySpec(), "CT")))
    ds.compress(JPEG2000Lossless)
    classic = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert not main_header(classic).is_high_throughput
    assert main_header(encode(ct_frames(1)[0])).is_high_throughput


def test_an_independent_decoder_reads_the_code_streams(made: Made) -> None:
    for frame, codestream in zip(made.pixels, made.codestreams, strict=True):
        assert_pixels(openjpeg.decode(codestream), frame, made.case.tolerance)


# --------------------------------------------------------------------------- the archive


@pytest.mark.django_db
def test_it_stores_htj2k_and_returns_the_identical_object(api: Client, made: Made, stored: Stored) -> None:
    inst = Instance.objects.get(sop_instance_uid=stored.sop)
    assert inst.transfer_syntax_uid == made.case.syntax
    assert inst.frames is not None and len(inst.frames) == made.case.frames
    for accept in ("*", made.case.syntax):
        response = api.get(
            stored.url, HTTP_ACCEPT=f'multipart/related; type="application/dicom"; transfer-syntax={accept}'
        )
        assert response.status_code == 200
        [(content_type, body)] = parts_of(response)
        assert syntax_of(content_type) == made.case.syntax
        assert body == made.part10


@pytest.mark.django_db
@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="image/jphc"; transfer-syntax={syntax}',
        'multipart/related; type="image/jphc"',
        "multipart/related; type=application/octet-stream; transfer-syntax=*",  # what OHIF sends
    ],
    ids=["jphc-stored-syntax", "jphc-default-syntax", "any-syntax"],
)
def test_it_returns_frames_as_the_stored_code_streams(api: Client, made: Made, stored: Stored, accept: str) -> None:
    numbers = ",".join(str(n) for n in range(1, made.case.frames + 1))
    response = api.get(f"{stored.url}/frames/{numbers}", HTTP_ACCEPT=accept.format(syntax=made.case.syntax))
    assert response.status_code == 200, body_of(response)
    parts = parts_of(response)
    assert [body for _, body in parts] == [padded(c) for c in made.codestreams]
    for content_type, body in parts:
        assert content_type == f"image/jphc; transfer-syntax={made.case.syntax}"
        assert main_header(body).is_high_throughput


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "asked", "status"),
    [
        ("ct-signed-16bit-rpcl", HTJ2K_LOSSLESS, 200),  # an RPCL stream is a lossless HTJ2K stream
        ("ct-signed-16bit-rpcl", HTJ2K, 200),
        ("ct-signed-16bit", HTJ2K, 200),  # HTJ2K allows lossless streams
        ("ct-signed-16bit", HTJ2K_LOSSLESS_RPCL, 406),  # LRCP, no TLM: not RPCL
        ("ct-signed-16bit-lossy", HTJ2K_LOSSLESS, 406),  # lossy is never lossless
    ],
)
def test_it_sends_stored_code_streams_under_each_htj2k_syntax_they_meet(
    api: Client, name: str, asked: str, status: int
) -> None:
    made = make(CASES_BY_NAME[name])
    stored = store(api, made.part10)
    response = api.get(
        f"{stored.url}/frames/1", HTTP_ACCEPT=f'multipart/related; type="image/jphc"; transfer-syntax={asked}'
    )
    assert response.status_code == status, body_of(response)
    if status == 200:
        [(content_type, body)] = parts_of(response)
        assert content_type == f"image/jphc; transfer-syntax={asked}"
        assert body == padded(made.codestreams[0])


@pytest.mark.django_db
def test_it_decodes_frames_to_the_original_pixels(api: Client, made: Made, stored: Stored) -> None:
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'
    numbers = ",".join(str(n) for n in range(made.case.frames, 0, -1))  # last first: order is the client's
    response = api.get(f"{stored.url}/frames/{numbers}", HTTP_ACCEPT=accept)
    assert response.status_code == 200, body_of(response)
    parts = parts_of(response)
    assert [content_type for content_type, _ in parts] == [
        f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    ] * made.case.frames
    for (_, body), frame in zip(parts, made.pixels[::-1], strict=True):
        assert_pixels(frame_array(body, made), frame, made.case.tolerance)


@pytest.mark.django_db
def test_it_transcodes_the_object_to_explicit_little_endian(api: Client, made: Made, stored: Stored) -> None:
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
    response = api.get(stored.url, HTTP_ACCEPT=accept)
    assert response.status_code == 200
    [(content_type, body)] = parts_of(response)
    assert syntax_of(content_type) == EXPLICIT_LE
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert ds.SOPInstanceUID == stored.sop
    arr = ds.pixel_array.reshape(made.pixels.shape)
    assert_pixels(arr, made.pixels, made.case.tolerance)
    if made.pixels.ndim == 4:
        assert ds.PhotometricInterpretation == "RGB"


@pytest.mark.django_db
def test_it_renders_the_original_pixels(api: Client, made: Made, stored: Stored) -> None:
    last = made.case.frames
    response = api.get(f"{stored.url}/frames/{last}/rendered", HTTP_ACCEPT="image/png")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(response.content)))
    frame = made.pixels[last - 1]
    if made.case.window is None:
        want = frame  # 8-bit colour is shown as stored
    else:
        want = windowed(frame, made.case.window)
    # A window maps a lossy error of up to ``tolerance`` to at most this many grey levels.
    slope = 255 / made.case.window[1] if made.case.window else 1
    assert_pixels(got, want, int(np.ceil(made.case.tolerance * slope)))
