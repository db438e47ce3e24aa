"""WADO-RS frames and bulk data (PS3.18 §10.4.1.1.3, §10.4.1.1.5).

Frames are compared with pydicom's own view of the same object: stored
codestreams with ``pydicom.encaps.generate_frames``, decoded frames with
``pixel_array``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom
import pytest
from django.test import Client
from pydicom.encaps import generate_frames

from archive.dicom.synthetic import StudySpec, make_instance
from archive.models import Instance
from audit.models import AuditEvent
from tests.archive.dicomweb.test_wado_retrieve import Stored, body_of, parts_of, store, store_test_file, syntax_of

EXPLICIT_LE = "1.2.840.10008.1.2.1"
OCTETS_ANY = "multipart/related; type=application/octet-stream; transfer-syntax=*"  # what OHIF sends
OCTETS = 'multipart/related; type="application/octet-stream"'

ENCAPSULATED = [
    ("examples_ybr_color.dcm", "image/jpeg"),
    ("SC_rgb_jpeg_dcmtk.dcm", "image/jpeg"),
    ("JPGExtended.dcm", "image/jpeg"),
    ("JPEG-LL.dcm", "image/jpeg"),
    ("emri_small_jpeg_ls_lossless.dcm", "image/jls"),
    ("JPEGLSNearLossless_08.dcm", "image/jls"),
    ("emri_small_jpeg_2k_lossless.dcm", "image/jp2"),
    ("JPEG2000.dcm", "image/jp2"),
    ("emri_small_RLE.dcm", "image/dicom-rle"),
    ("SC_rgb_rle_2frame.dcm", "image/dicom-rle"),
]
#: Objects whose frames have no byte ranges in the index: pydicom reads them at request time.
NO_RANGES = ["image_dfl.dcm", "MR_small_bigendian.dcm", "SC_rgb_expb_2frame.dcm", "liver_1frame.dcm"]


def frame_count(ds: pydicom.Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def expected_frame(ds: pydicom.Dataset, index: int) -> np.ndarray:
    arr = ds.pixel_array
    return arr[index] if frame_count(ds) > 1 else arr


def as_array(data: bytes, ds: pydicom.Dataset) -> np.ndarray:
    """Native little-endian frame bytes shaped like pydicom's frame array."""
    bits = int(ds.BitsAllocated)
    if bits == 1:
        return np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: ds.Rows * ds.Columns].reshape(
            ds.Rows, ds.Columns
        )
    signed = int(ds.PixelRepresentation) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    arr = np.frombuffer(data, dtype)
    samples = int(ds.SamplesPerPixel)
    return arr.reshape((ds.Rows, ds.Columns, samples) if samples > 1 else (ds.Rows, ds.Columns))


def all_frames(n: int) -> str:
    return ",".join(str(i) for i in range(1, n + 1))


@pytest.fixture
def api(admin_client_token: Client) -> Client:
    """An administrator's bearer client: stores, and sees every study under the site policy."""
    return admin_client_token


@pytest.fixture
def us_clip(api: Client) -> Stored:
    """A synthetic 8-bit ultrasound clip of 6 frames (native, Explicit VR Little Endian)."""
    return store(api, make_instance(StudySpec(), "US", frames=6))


@pytest.mark.django_db
def test_it_returns_native_frames_equal_to_pydicoms(api: Client, us_clip: Stored) -> None:
    response = api.get(us_clip.url + "/frames/1,3,6", HTTP_ACCEPT=OCTETS)
    assert response.status_code == 200
    parts = parts_of(response)
    assert [ctype for ctype, _ in parts] == [f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"] * 3
    for (_, data), index in zip(parts, [0, 2, 5], strict=True):
        assert np.array_equal(as_array(data, us_clip.ds), us_clip.ds.pixel_array[index])


@pytest.mark.django_db
def test_it_returns_the_frames_in_the_order_asked(api: Client, us_clip: Stored) -> None:
    parts = parts_of(api.get(us_clip.url + "/frames/5,2", HTTP_ACCEPT=OCTETS))
    assert [as_array(d, us_clip.ds).tobytes() for _, d in parts] == [
        us_clip.ds.pixel_array[4].tobytes(),
        us_clip.ds.pixel_array[1].tobytes(),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["application/octet-stream", "application/octet-stream; transfer-syntax=*"])
def test_it_returns_one_frame_as_a_single_part(api: Client, us_clip: Stored, accept: str) -> None:
    response = api.get(us_clip.url + "/frames/2", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    assert body_of(response) == us_clip.ds.pixel_array[1].tobytes()


@pytest.mark.django_db
def test_it_refuses_a_single_part_for_several_frames(api: Client, us_clip: Stored) -> None:
    assert api.get(us_clip.url + "/frames/1,2", HTTP_ACCEPT="application/octet-stream").status_code == 406


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["", "*/*", "multipart/related", "multipart/*", OCTETS_ANY])
def test_it_answers_the_usual_accept_headers_with_multipart_octets(api: Client, us_clip: Stored, accept: str) -> None:
    response = api.get(us_clip.url + "/frames/1", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    [(ctype, data)] = parts_of(response)
    assert syntax_of(ctype) == EXPLICIT_LE
    assert data == us_clip.ds.pixel_array[0].tobytes()


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "media_type"), ENCAPSULATED)
def test_it_returns_stored_compressed_frames_labelled_with_their_media_type(
    api: Client, name: str, media_type: str
) -> None:
    obj = store_test_file(api, name)
    n = frame_count(obj.ds)
    response = api.get(obj.url + f"/frames/{all_frames(n)}", HTTP_ACCEPT=OCTETS_ANY)
    assert response.status_code == 200
    parts = parts_of(response)
    assert [ctype for ctype, _ in parts] == [f"{media_type}; transfer-syntax={obj.syntax}"] * n
    assert [data for _, data in parts] == list(generate_frames(obj.ds.PixelData, number_of_frames=n))


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "media_type"), ENCAPSULATED)
def test_it_decodes_compressed_frames_when_octets_are_asked(api: Client, name: str, media_type: str) -> None:
    obj = store_test_file(api, name)
    n = frame_count(obj.ds)
    wanted = sorted({1, n, (n + 1) // 2})
    response = api.get(obj.url + f"/frames/{','.join(map(str, wanted))}", HTTP_ACCEPT=OCTETS)
    assert response.status_code == 200
    parts = parts_of(response)
    assert [syntax_of(ctype) for ctype, _ in parts] == [EXPLICIT_LE] * len(wanted)
    for (_, data), number in zip(parts, wanted, strict=True):
        assert np.array_equal(as_array(data, obj.ds), expected_frame(obj.ds, number - 1))


@pytest.mark.django_db
def test_it_returns_compressed_frames_for_their_own_media_type(api: Client) -> None:
    obj = store_test_file(api, "emri_small_jpeg_ls_lossless.dcm")
    for accept in ('multipart/related; type="image/jls"', 'multipart/related; type="image/x-jls"', "image/jls"):
        response = api.get(obj.url + "/frames/3", HTTP_ACCEPT=accept)
        assert response.status_code == 200, accept
    assert body_of(response) == list(generate_frames(obj.ds.PixelData, number_of_frames=10))[2]
    assert response["Content-Type"] == f"image/jls; transfer-syntax={obj.syntax}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "accept"),
    [
        ("CT_small.dcm", 'multipart/related; type="image/jpeg"'),
        ("emri_small_RLE.dcm", 'multipart/related; type="image/jpeg"'),
        (
            "emri_small_RLE.dcm",
            'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.50',
        ),
        ("CT_small.dcm", "application/dicom"),
        ("CT_small.dcm", "text/html"),
    ],
)
def test_it_refuses_frame_representations_it_cannot_produce(api: Client, name: str, accept: str) -> None:
    obj = store_test_file(api, name)
    response = api.get(obj.url + "/frames/1", HTTP_ACCEPT=accept)
    assert response.status_code == 406
    assert "application/octet-stream" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", NO_RANGES)
def test_it_reads_frames_with_pydicom_when_the_index_has_no_ranges(api: Client, name: str) -> None:
    obj = store_test_file(api, name)
    assert Instance.objects.get(sop_instance_uid=obj.sop).frames is None
    n = frame_count(obj.ds)
    parts = parts_of(api.get(obj.url + f"/frames/{all_frames(n)}", HTTP_ACCEPT=OCTETS_ANY))
    assert len(parts) == n
    for index, (ctype, data) in enumerate(parts):
        assert syntax_of(ctype) == EXPLICIT_LE
        assert np.array_equal(as_array(data, obj.ds), expected_frame(obj.ds, index))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ("0", "start at 1"),
        ("1,,2", "comma-separated"),
        ("a", "comma-separated"),
        ("1,-2", "comma-separated"),
        ("2,2", "more than once"),
        ("1%202", "comma-separated"),
    ],
)
def test_it_rejects_a_malformed_frame_list(api: Client, us_clip: Stored, frames: str, reason: str) -> None:
    response = api.get(us_clip.url + f"/frames/{frames}")
    assert response.status_code == 400
    assert reason in response.json()["detail"]


@pytest.mark.django_db
def test_it_answers_404_for_a_frame_beyond_the_last(api: Client, us_clip: Stored) -> None:
    response = api.get(us_clip.url + "/frames/2,7")
    assert response.status_code == 404
    assert response.json()["detail"] == "Frame 7 does not exist: the instance has 6 frame(s)"


@pytest.mark.django_db
def test_it_answers_404_for_frames_of_an_instance_without_pixels(api: Client) -> None:
    obj = store_test_file(api, "rtplan.dcm")
    assert api.get(obj.url + "/frames/1").status_code == 404


@pytest.mark.django_db
def test_frames_are_immutable_and_revalidate_with_304(api: Client, us_clip: Stored) -> None:
    url = us_clip.url + "/frames/1"
    first = api.get(url, HTTP_ACCEPT=OCTETS_ANY)
    assert first["Cache-Control"] == "private, max-age=31536000, immutable"
    again = api.get(url, HTTP_ACCEPT=OCTETS_ANY, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert again["ETag"] == first["ETag"]
    assert body_of(api.get(url, HTTP_ACCEPT=OCTETS_ANY)) == body_of(first)  # same bytes, same strong ETag
    other = api.get(url, HTTP_ACCEPT="application/octet-stream")
    assert other["ETag"] != first["ETag"]


@pytest.mark.django_db
def test_it_records_one_frames_view_per_user_and_study(api: Client, us_clip: Stored) -> None:
    for n in range(1, 7):
        assert api.get(us_clip.url + f"/frames/{n}").status_code == 200
    events = AuditEvent.objects.filter(action="view_frames")
    assert events.count() == 1
    assert events.get().study_instance_uid == us_clip.study


@pytest.mark.django_db
def test_a_frame_costs_two_queries_once_audited(
    api: Client, us_clip: Stored, django_assert_max_num_queries: Any
) -> None:
    api.get(us_clip.url + "/frames/1")
    with django_assert_max_num_queries(2):  # the token, the instance
        response = api.get(us_clip.url + "/frames/2", HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200


@pytest.mark.django_db
def test_it_answers_head_for_frames_without_a_body(api: Client, us_clip: Stored) -> None:
    response = api.head(us_clip.url + "/frames/1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("multipart/related")
    assert response.content == b""


# --------------------------------------------------------------------------- bulk data


def bulk_uri(metadata: list[dict[str, Any]], tag: str) -> str:
    uri = metadata[0][tag]["BulkDataURI"]
    assert uri.startswith("http://testserver/dicom-web/studies/")
    return uri.removeprefix("http://testserver")


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "SC_rgb_small_odd.dcm", "liver_1frame.dcm"])
def test_the_pixel_data_bulk_uri_returns_the_stored_value(api: Client, name: str) -> None:
    obj = store_test_file(api, name)
    uri = bulk_uri(api.get(obj.url + "/metadata").json(), "7FE00010")
    response = api.get(uri, HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(obj.ds.PixelData))
    assert body_of(response) == obj.ds.PixelData
    [(ctype, data)] = parts_of(api.get(uri))
    assert data == obj.ds.PixelData and syntax_of(ctype) == EXPLICIT_LE


@pytest.mark.django_db
def test_compressed_pixel_data_comes_one_part_per_frame_or_decoded(api: Client) -> None:
    obj = store_test_file(api, "emri_small_jpeg_2k_lossless.dcm")
    uri = bulk_uri(api.get(obj.url + "/metadata").json(), "7FE00010")
    stored = parts_of(api.get(uri, HTTP_ACCEPT=OCTETS_ANY))
    assert [d for _, d in stored] == list(generate_frames(obj.ds.PixelData, number_of_frames=10))
    assert {c for c, _ in stored} == {f"image/jp2; transfer-syntax={obj.syntax}"}
    [(ctype, data)] = parts_of(api.get(uri, HTTP_ACCEPT=OCTETS))
    assert syntax_of(ctype) == EXPLICIT_LE
    assert data == obj.ds.pixel_array.astype("<u2").tobytes()
    assert api.get(uri, HTTP_ACCEPT="image/jp2").status_code == 406  # ten frames cannot be one part


@pytest.mark.django_db
def test_other_bulk_data_resolves_to_its_bytes(api: Client) -> None:
    profile = bytes(range(256)) * 20
    obj = store(api, make_instance(StudySpec(), "CT", extra={"ICCProfile": profile}))
    uri = bulk_uri(api.get(obj.url + "/metadata").json(), "00282000")
    response = api.get(uri, HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200
    assert body_of(response) == profile
    [(_, data)] = parts_of(api.get(uri, HTTP_ACCEPT=OCTETS))
    assert data == profile


@pytest.mark.django_db
@pytest.mark.parametrize(("tag", "status"), [("7FE0001", 400), ("XYZ00010", 400), ("00100010", 404), ("00282000", 404)])
def test_it_rejects_bad_or_missing_bulk_data_tags(api: Client, us_clip: Stored, tag: str, status: int) -> None:
    assert api.get(us_clip.url + f"/bulkdata/{tag}").status_code == status


@pytest.mark.django_db
def test_bulk_data_retrieves_are_audited(api: Client, us_clip: Stored) -> None:
    body_of(api.get(us_clip.url + "/bulkdata/7FE00010"))
    event = AuditEvent.objects.get(action="retrieve")
    assert event.detail == {"level": "bulkdata", "tag": "7FE00010"}
