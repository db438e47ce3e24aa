"""Rendering matches pydicom for every transfer syntax the installed codecs decode.

Each case stores a file from pydicom's test data (or pydicom-data) through
STOW-RS, asks for it rendered as lossless PNG, and compares the picture with
pydicom's own ``pixel_array`` of the same file taken through pydicom's Modality
LUT, windowing / VOI LUT and colour functions and scaled to 8 bits.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.test import Client
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import (
    HTJ2K,
    UID,
    DeflatedExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGLSNearLossless,
    generate_uid,
)

from archive.dicom.pixels import RenderOptions, Viewport, VoiFunction, Window, fit, render, render_refusal
from archive.models import Instance
from tests.conftest import stow

# (transfer syntax, file, 0-based frame, window query or None)
CASES = [
    ("1.2.840.10008.1.2.1", "CT_small.dcm", 0, None),
    ("1.2.840.10008.1.2.1", "CT_small.dcm", 0, "40,400"),
    ("1.2.840.10008.1.2.1", "CT_small.dcm", 0, "40,400,sigmoid"),
    ("1.2.840.10008.1.2.1", "MR_small.dcm", 0, "600,1600,linear-exact"),
    ("1.2.840.10008.1.2.1", "emri_small.dcm", 3, None),
    ("1.2.840.10008.1.2.1", "mlut_18.dcm", 0, None),
    ("1.2.840.10008.1.2.1", "vlut_04.dcm", 0, None),
    ("1.2.840.10008.1.2.1", "RG3_UNCR.dcm", 0, None),
    ("1.2.840.10008.1.2.1", "SC_rgb_16bit.dcm", 0, None),
    ("1.2.840.10008.1.2.1", "color-pl.dcm", 0, None),
    ("1.2.840.10008.1.2.1", "SC_ybr_full_uncompressed.dcm", 0, None),
    ("1.2.840.10008.1.2.1", "OBXXXX1A.dcm", 0, None),
    ("1.2.840.10008.1.2.1", "liver_1frame.dcm", 0, None),
    ("1.2.840.10008.1.2", "MR_small_implicit.dcm", 0, None),
    ("1.2.840.10008.1.2", "rtdose_1frame.dcm", 0, None),
    ("1.2.840.10008.1.2", "gdcm-US-ALOKA-16.dcm", 0, None),
    ("1.2.840.10008.1.2", "SC_rgb_jpeg_dcmd.dcm", 0, None),
    ("1.2.840.10008.1.2.2", "MR_small_bigendian.dcm", 0, None),
    ("1.2.840.10008.1.2.2", "emri_small_big_endian.dcm", 5, "300,600"),
    ("1.2.840.10008.1.2.2", "SC_rgb_expb_16bit.dcm", 0, None),
    ("1.2.840.10008.1.2.2", "OBXXXX1A_expb_2frame.dcm", 1, None),
    ("1.2.840.10008.1.2.1.99", "image_dfl.dcm", 0, None),
    ("1.2.840.10008.1.2.4.50", "SC_rgb_jpeg_dcmtk.dcm", 0, None),
    ("1.2.840.10008.1.2.4.50", "SC_rgb_dcmtk_+eb+cy+np.dcm", 0, None),
    ("1.2.840.10008.1.2.4.50", "SC_jpeg_no_color_transform.dcm", 0, None),
    ("1.2.840.10008.1.2.4.50", "examples_ybr_color.dcm", 10, None),
    ("1.2.840.10008.1.2.4.51", "JPGExtended.dcm", 0, None),
    ("1.2.840.10008.1.2.4.70", "JPEG-LL.dcm", 0, None),
    ("1.2.840.10008.1.2.4.70", "JPGLosslessP14SV1_1s_1f_8b.dcm", 0, None),
    ("1.2.840.10008.1.2.4.70", "SC_rgb_jpeg_gdcm.dcm", 0, None),
    ("1.2.840.10008.1.2.4.80", "MR_small_jpeg_ls_lossless.dcm", 0, None),
    ("1.2.840.10008.1.2.4.80", "emri_small_jpeg_ls_lossless.dcm", 2, None),
    ("1.2.840.10008.1.2.4.81", "JPEGLSNearLossless_16.dcm", 0, None),
    ("1.2.840.10008.1.2.4.81", "SC_rgb_jls_lossy_line.dcm", 0, None),
    ("1.2.840.10008.1.2.4.90", "MR_small_jp2klossless.dcm", 0, None),
    ("1.2.840.10008.1.2.4.90", "US1_J2KR.dcm", 0, None),
    ("1.2.840.10008.1.2.4.90", "emri_small_jpeg_2k_lossless.dcm", 4, None),
    ("1.2.840.10008.1.2.4.90", "RG1_J2KR.dcm", 0, None),
    ("1.2.840.10008.1.2.4.91", "693_J2KI.dcm", 0, None),
    ("1.2.840.10008.1.2.4.91", "JPEG2000.dcm", 0, "0,2000"),
    ("1.2.840.10008.1.2.4.91", "US1_J2KI.dcm", 0, None),
    ("1.2.840.10008.1.2.4.91", "SC_rgb_gdcm_KY.dcm", 0, None),
    ("1.2.840.10008.1.2.5", "MR_small_RLE.dcm", 0, None),
    ("1.2.840.10008.1.2.5", "SC_rgb_rle_16bit.dcm", 0, None),
    ("1.2.840.10008.1.2.5", "OBXXXX1A_rle_2frame.dcm", 1, None),
    ("1.2.840.10008.1.2.5", "emri_small_RLE.dcm", 7, None),
    ("1.2.840.10008.1.2.5", "rtdose_rle_1frame.dcm", 0, None),
]

# Files re-encoded here, for syntaxes the shipped test data has too few (or no) files of.
DERIVED = [
    (DeflatedExplicitVRLittleEndian, "CT_small.dcm", 0, None),
    (DeflatedExplicitVRLittleEndian, "SC_rgb.dcm", 0, None),
    (DeflatedExplicitVRLittleEndian, "emri_small.dcm", 2, None),
    (JPEGLSNearLossless, "CT_small.dcm", 0, None),
    (HTJ2KLossless, "MR_small.dcm", 0, None),
    (HTJ2KLosslessRPCL, "CT_small.dcm", 0, "40,400"),
    (HTJ2K, "SC_rgb.dcm", 0, None),
]


def data_file(name: str) -> str:
    """The path of a file of pydicom's test data or of pydicom-data."""
    path = get_testdata_file(name)
    assert isinstance(path, str), f"{name} is not installed (pydicom or pydicom-data)"
    return path


def _case_id(case: tuple[str, str, int, str | None]) -> str:
    ts, name, frame, window = case
    return f"{UID(ts).name}-{name}-{frame}" + (f"-w{window}" if window else "")


def derive(name: str, syntax: str, tmp_path: Path) -> Path:
    """``name`` re-encoded in ``syntax`` (HTJ2K ones hold a lossless JPEG 2000 code stream).

    No HTJ2K encoder runs in Python here, so the HTJ2K cases carry a Part 1 code
    stream (which every Part 15 decoder also reads): they prove the transfer
    syntax is routed to the HTJ2K decoder on pydicom's test files. Real HT code
    streams (made by OpenJPH under Node) are stored, retrieved, decoded and
    rendered in tests/archive/dicomweb/test_htj2k.py.
    """
    ds = pydicom.dcmread(data_file(name))
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elif syntax == JPEGLSNearLossless:
        ds.compress(JPEGLSNearLossless, jls_error=2)
    else:
        ds.compress(JPEG2000Lossless)
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = tmp_path / f"{syntax}-{name}"
    ds.save_as(out, enforce_file_format=True)
    return out


def reference(path: Path | str, frame: int, window: str | None) -> np.ndarray:
    """pydicom's pixels of ``frame`` through pydicom's own LUT functions, as 8 bits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    pi = ds.PhotometricInterpretation
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return _scaled(rgb, rgb.dtype.itemsize * 8)
    if pi not in ("MONOCHROME1", "MONOCHROME2"):
        return _scaled(arr, int(ds.BitsStored))
    m = apply_modality_lut(arr, ds).astype(np.float64)
    if window:
        center, width, *function = window.split(",")
        ds.WindowCenter, ds.WindowWidth = center, width
        ds.VOILUTFunction = (function or ["linear"])[0].upper().replace("-", "_")
    if "WindowCenter" in ds and "WindowWidth" in ds:
        with np.errstate(over="ignore"):
            y_min, y_max = apply_windowing(np.array([-1e12, 1e12]), ds)
        y = (apply_windowing(m, ds) - y_min) / (y_max - y_min)
    elif "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        y = apply_voi(np.rint(m).astype(np.int64), ds) / (2**bits - 1)
    else:
        y = (m - m.min()) / (m.max() - m.min())
    out = (np.clip(y, 0, 1) * 255 + 0.5).astype(np.uint8)
    return 255 - out if pi == "MONOCHROME1" else out


def _scaled(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    return (arr.astype(np.float64) * (255 / (2**bits - 1)) + 0.5).astype(np.uint8)


def with_identity(path: Path | str, tmp_path: Path) -> Path:
    """``path``, or a copy given the Study/Series Instance UIDs some test files lack."""
    ds = pydicom.dcmread(path)
    if "StudyInstanceUID" in ds and "SeriesInstanceUID" in ds:
        return Path(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    out = tmp_path / f"identified-{Path(path).name}"
    ds.save_as(out, enforce_file_format=True)
    return out


def stored_url(client: Client, path: Path | str) -> str:
    response = stow(client, [Path(path).read_bytes()])
    assert response.status_code == 200, response.content
    inst = Instance.objects.select_related("series__study").get()
    return (
        f"/dicom-web/studies/{inst.series.study.study_instance_uid}/series/{inst.series.series_instance_uid}"
        f"/instances/{inst.sop_instance_uid}"
    )


def rendered_png(client: Client, url: str, frame: int, window: str | None) -> np.ndarray:
    query = f"?window={window}" if window else ""
    response = client.get(f"{url}/frames/{frame + 1}/rendered{query}", HTTP_ACCEPT="image/png")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 2, f"max difference {diff.max()}"
    assert diff.mean() <= 0.5, f"mean difference {diff.mean()}"


def assert_not_refused(inst: Instance) -> None:
    """The cheap check before a rendered series lets through every image the renderer renders."""
    assert render_refusal(json.loads(inst.metadata), inst.transfer_syntax_uid) is None


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_it_renders_like_pydicom(
    admin_client_token: Client, tmp_path: Path, case: tuple[str, str, int, str | None]
) -> None:
    syntax, name, frame, window = case
    path = with_identity(data_file(name), tmp_path)
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    url = stored_url(admin_client_token, path)
    assert_not_refused(Instance.objects.get())
    assert_close(rendered_png(admin_client_token, url, frame, window), reference(path, frame, window))


@pytest.mark.django_db
@pytest.mark.parametrize("case", DERIVED, ids=_case_id)
def test_it_renders_re_encoded_files_like_pydicom(
    admin_client_token: Client, tmp_path: Path, case: tuple[str, str, int, str | None]
) -> None:
    syntax, name, frame, window = case
    path = derive(name, syntax, tmp_path)
    url = stored_url(admin_client_token, path)
    assert Instance.objects.get().transfer_syntax_uid == syntax
    assert_not_refused(Instance.objects.get())
    assert_close(rendered_png(admin_client_token, url, frame, window), reference(path, frame, window))


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["CT_small.dcm", "US1_J2KR.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_its_jpeg_output_stays_close_to_pydicom(admin_client_token: Client, name: str) -> None:
    path = data_file(name)
    url = stored_url(admin_client_token, path)
    response = admin_client_token.get(f"{url}/rendered?quality=95", HTTP_ACCEPT="image/jpeg")
    assert response.status_code == 200
    got = np.asarray(Image.open(io.BytesIO(response.content)))
    want = reference(path, 0, None)
    assert got.shape == want.shape
    assert np.abs(got.astype(np.int16) - want.astype(np.int16)).mean() < 3


def test_the_fast_path_reads_native_frames_without_dcmread(
    monkeypatch: pytest.MonkeyPatch, admin_client_token: Client, db: Any
) -> None:
    url = stored_url(admin_client_token, data_file("CT_small.dcm"))
    inst = Instance.objects.get()
    assert inst.frames and url
    want = reference(data_file("CT_small.dcm"), 0, "40,400")

    def refuse(*args: Any, **kwargs: Any) -> Dataset:
        raise AssertionError("dcmread was called on the fast path")

    monkeypatch.setattr(pydicom, "dcmread", refuse)
    options = RenderOptions(media_type="image/png", window=Window(40, 400))
    got = np.asarray(Image.open(io.BytesIO(render(inst, [0], options))))
    assert_close(got, want)


@pytest.mark.parametrize(
    "viewport, size",
    [
        (Viewport(64, 64), (64, 32)),
        (Viewport(512, 512), (512, 256)),
        (Viewport(100, 10), (20, 10)),
        (Viewport(50, 50, (10, 0, 20, 10)), (50, 25)),
    ],
)
def test_it_fits_the_viewport_keeping_the_aspect_ratio(viewport: Viewport, size: tuple[int, int]) -> None:
    image = Image.fromarray(np.zeros((100, 200), np.uint8))
    assert fit(image, RenderOptions(viewport=viewport)).size == size


def test_a_negative_source_width_flips_the_image() -> None:
    arr = np.tile(np.arange(10, dtype=np.uint8) * 20, (4, 1))
    flipped = np.asarray(fit(Image.fromarray(arr), RenderOptions(viewport=Viewport(10, 4, (0, 0, -10, 4)))))
    assert (flipped == arr[:, ::-1]).all()


def test_thumbnails_shrink_but_never_enlarge() -> None:
    big, small = Image.new("L", (512, 256)), Image.new("L", (64, 64))
    assert fit(big, RenderOptions(max_box=128)).size == (128, 64)
    assert fit(small, RenderOptions(max_box=128)).size == (64, 64)


def test_an_exact_integer_reduction_averages_each_block_of_source_pixels() -> None:
    arr = np.random.default_rng(3).integers(0, 256, (512, 384), dtype=np.uint8)
    half = np.asarray(fit(Image.fromarray(arr), RenderOptions(viewport=Viewport(192, 256))))
    blocks = arr.reshape(256, 2, 192, 2).astype(np.float64).mean(axis=(1, 3))
    assert half.shape == (256, 192)
    assert np.abs(half.astype(np.float64) - blocks).max() <= 0.5  # each pixel the rounded mean of its 2x2 block
    odd = fit(Image.fromarray(arr), RenderOptions(viewport=Viewport(100, 100)))
    assert odd.size == (75, 100)  # not an integer factor: resampled, aspect ratio kept


def test_the_window_functions_follow_ps3_3() -> None:
    from archive.dicom.pixels import _voi

    m = np.array([-1000.0, 39.5, 40.0, 240.0, 1000.0])
    linear = _voi(m, Window(40, 400))
    assert linear[0] == 0 and linear[-1] == 1 and abs(linear[1] - 0.5) < 0.01
    exact = _voi(m, Window(40, 400, VoiFunction.LINEAR_EXACT))
    assert exact[2] == 0.5 and exact[3] == 1.0
    sigmoid = _voi(m, Window(40, 400, VoiFunction.SIGMOID))
    assert sigmoid[2] == 0.5 and 0 < sigmoid[0] < 0.001 and sigmoid[-1] > 0.999


def image_pixel(photometric: str = "MONOCHROME2", samples: int = 1, allocated: int = 16, stored: int = 12) -> dict:
    """The stored DICOM JSON of a 4×4 image's Image Pixel module."""
    return {
        "00280002": {"vr": "US", "Value": [samples]},
        "00280004": {"vr": "CS", "Value": [photometric]},
        "00280010": {"vr": "US", "Value": [4]},
        "00280011": {"vr": "US", "Value": [4]},
        "00280100": {"vr": "US", "Value": [allocated]},
        "00280101": {"vr": "US", "Value": [stored]},
        "00280103": {"vr": "US", "Value": [0]},
        "7FE00010": {"vr": "OW", "BulkDataURI": "x"},
    }


@pytest.mark.parametrize(
    "meta, syntax, reason",
    [
        (image_pixel("HSV", samples=3), "1.2.840.10008.1.2.1", "photometric interpretation HSV"),
        (image_pixel("YBR_PARTIAL_420", samples=3), "1.2.840.10008.1.2.1", "YBR_PARTIAL_420"),
        (image_pixel("RGB", samples=1), "1.2.840.10008.1.2.1", "needs 3 sample(s)"),
        (image_pixel("MONOCHROME2", samples=3), "1.2.840.10008.1.2.1", "needs 1 sample(s)"),
        (image_pixel(allocated=12, stored=12), "1.2.840.10008.1.2.1", "bits allocated 12"),
        (image_pixel(allocated=8, stored=12), "1.2.840.10008.1.2.1", "bits stored 12"),
        (
            image_pixel(),
            "1.2.840.10008.1.2.4.100",
            "no decoder is installed for transfer syntax 1.2.840.10008.1.2.4.100",
        ),
        (image_pixel(), "1.2.3.4", "no decoder is installed"),
        ({k: v for k, v in image_pixel().items() if k != "7FE00010"}, "1.2.840.10008.1.2.1", "no pixel data"),
    ],
)
def test_the_cheap_check_says_why_an_image_can_never_be_rendered(meta: dict, syntax: str, reason: str) -> None:
    refusal = render_refusal(meta, syntax)
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("photometric, samples", [("MONOCHROME1", 1), ("PALETTE COLOR", 1), ("YBR_FULL_422", 3)])
def test_the_cheap_check_lets_presentable_images_through(photometric: str, samples: int) -> None:
    assert render_refusal(image_pixel(photometric, samples=samples), "1.2.840.10008.1.2.4.50") is None
