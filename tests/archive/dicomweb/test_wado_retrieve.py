"""WADO-RS retrieve of studies, series and instances (PS3.18 §10.4.1.1.1).

Every transfer syntax found in pydicom's test files is stored through STOW-RS
and retrieved again: as stored (byte-identical), and transcoded to Explicit
VR Little Endian with pixels equal to pydicom's own decoding.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import pytest
from django.test import Client
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from archive.access import AccessPolicy, policy
from archive.dicom.synthetic import StudySpec, make_series
from archive.dicomweb.multipart import iter_parts, parse_content_type
from archive.models import Instance, Study
from archive.storage.registry import get_storage
from audit.models import AuditEvent
from tests.conftest import stow

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'

#: One pydicom test file per stored transfer syntax (and a few multi-frame ones).
SYNTAX_FILES = [
    ("MR_small_implicit.dcm", "1.2.840.10008.1.2"),
    ("CT_small.dcm", "1.2.840.10008.1.2.1"),
    ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"),
    ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50"),
    ("examples_ybr_color.dcm", "1.2.840.10008.1.2.4.50"),
    ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51"),
    ("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70"),
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
    ("emri_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
    ("JPEGLSNearLossless_08.dcm", "1.2.840.10008.1.2.4.81"),
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),
    ("emri_small_jpeg_2k_lossless.dcm", "1.2.840.10008.1.2.4.90"),
    ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
    ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),
    ("SC_rgb_rle_2frame.dcm", "1.2.840.10008.1.2.5"),
]
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}


@pytest.fixture
def api(admin_client_token: Client) -> Client:
    """An administrator's bearer client: stores, and sees every study under the site policy."""
    return admin_client_token


@dataclass
class Stored:
    """A test object as stored through STOW-RS, with its URLs."""

    raw: bytes
    ds: pydicom.Dataset

    @property
    def study(self) -> str:
        return str(self.ds.StudyInstanceUID)

    @property
    def series(self) -> str:
        return str(self.ds.SeriesInstanceUID)

    @property
    def sop(self) -> str:
        return str(self.ds.SOPInstanceUID)

    @property
    def url(self) -> str:
        return f"/dicom-web/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    @property
    def syntax(self) -> str:
        return str(self.ds.file_meta.TransferSyntaxUID)


def test_file_bytes(name: str) -> bytes:
    """The bytes of a pydicom test file, with identifying UIDs added if it lacks them."""
    path = get_testdata_file(name)
    assert path, f"pydicom test file {name} is not available"
    with open(path, "rb") as fh:
        raw = fh.read()
    ds = pydicom.dcmread(io.BytesIO(raw))
    if "StudyInstanceUID" in ds and "SeriesInstanceUID" in ds:
        return raw
    ds.StudyInstanceUID = ds.get("StudyInstanceUID") or generate_uid()
    ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


test_file_bytes.__test__ = False  # type: ignore[attr-defined]


def store(client: Client, raw: bytes) -> Stored:
    response = stow(client, [raw])
    assert response.status_code == 200, response.content
    return Stored(raw, pydicom.dcmread(io.BytesIO(raw)))


def store_test_file(client: Client, name: str) -> Stored:
    return store(client, test_file_bytes(name))


class Sink:
    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.buf.extend(data)


def body_of(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def parts_of(response: Any) -> list[tuple[str, bytes]]:
    """(Content-Type, content) of every part of a multipart/related response."""
    media, params = parse_content_type(response["Content-Type"])
    assert media == "multipart/related", response["Content-Type"]
    body = body_of(response)
    return [
        (p.content_type, bytes(p.sink.buf)) for p in iter_parts(io.BytesIO(body), params["boundary"], lambda h: Sink())
    ]


def syntax_of(content_type: str) -> str:
    return parse_content_type(content_type)[1].get("transfer-syntax", "")


def reference_pixels(raw: bytes) -> np.ndarray:
    return pydicom.dcmread(io.BytesIO(raw)).pixel_array


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "syntax"), SYNTAX_FILES)
def test_it_returns_the_stored_bytes_when_any_syntax_is_accepted(api: Client, name: str, syntax: str) -> None:
    obj = store_test_file(api, name)
    assert obj.syntax == syntax
    response = api.get(obj.url, HTTP_ACCEPT=DICOM_ANY)
    assert response.status_code == 200
    [(ctype, content)] = parts_of(response)
    if syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2"):
        # PS3.18 §8.7.3: these two syntaxes are not used on the web.
        assert syntax_of(ctype) == EXPLICIT_LE
        assert np.array_equal(reference_pixels(content), reference_pixels(obj.raw))
    else:
        assert syntax_of(ctype) == syntax
        assert hashlib.sha256(content).hexdigest() == hashlib.sha256(obj.raw).hexdigest()


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "syntax"), SYNTAX_FILES)
def test_it_returns_the_stored_bytes_when_the_stored_syntax_is_named(api: Client, name: str, syntax: str) -> None:
    obj = store_test_file(api, name)
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    [(ctype, content)] = parts_of(api.get(obj.url, HTTP_ACCEPT=accept))
    assert syntax_of(ctype) == syntax
    assert content == obj.raw


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "syntax"), SYNTAX_FILES)
def test_it_transcodes_to_explicit_little_endian_when_asked(api: Client, name: str, syntax: str) -> None:
    obj = store_test_file(api, name)
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
    response = api.get(obj.url, HTTP_ACCEPT=accept)
    assert response.status_code == 200
    [(ctype, content)] = parts_of(response)
    assert syntax_of(ctype) == EXPLICIT_LE
    out = pydicom.dcmread(io.BytesIO(content))
    assert out.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert out.SOPInstanceUID == obj.sop
    assert np.array_equal(out.pixel_array, reference_pixels(obj.raw))


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "syntax"), SYNTAX_FILES)
def test_it_sends_explicit_little_endian_by_default_unless_the_pixels_are_lossy(
    api: Client, name: str, syntax: str
) -> None:
    obj = store_test_file(api, name)
    [(ctype, content)] = parts_of(api.get(obj.url, HTTP_ACCEPT='multipart/related; type="application/dicom"'))
    if syntax in LOSSY:
        assert syntax_of(ctype) == syntax and content == obj.raw
    else:
        assert syntax_of(ctype) == EXPLICIT_LE
        assert np.array_equal(reference_pixels(content), reference_pixels(obj.raw))


@pytest.mark.django_db
def test_it_refuses_a_syntax_it_cannot_produce(api: Client) -> None:
    obj = store_test_file(api, "CT_small.dcm")
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    response = api.get(obj.url, HTTP_ACCEPT=accept)
    assert response.status_code == 406
    assert "1.2.840.10008.1.2.4.50" in response.json()["detail"]


@pytest.mark.django_db
def test_it_picks_the_first_syntax_it_can_produce_in_q_order(api: Client) -> None:
    obj = store_test_file(api, "MR_small_RLE.dcm")
    accept = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.9, '
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.5; q=0.5, '
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}; q=0.7'
    )
    [(ctype, _)] = parts_of(api.get(obj.url, HTTP_ACCEPT=accept))
    assert syntax_of(ctype) == EXPLICIT_LE


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["application/dicom", "application/dicom; transfer-syntax=*", "application/*"])
def test_it_returns_the_bare_object_for_single_part_dicom(api: Client, accept: str) -> None:
    obj = store_test_file(api, "CT_small.dcm")
    response = api.get(obj.url, HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    assert response["Content-Length"] == str(len(obj.raw))
    assert body_of(response) == obj.raw


@pytest.mark.django_db
def test_a_single_instance_answers_304_to_its_own_etag_and_to_a_star(api: Client) -> None:
    obj = store_test_file(api, "CT_small.dcm")
    first = api.get(obj.url, HTTP_ACCEPT="application/dicom")
    etag = first["ETag"]
    assert first["Cache-Control"] == "private, no-cache"  # a correction writes a new version at this URL
    for condition in (etag, "*", f'"other", {etag}'):
        again = api.get(obj.url, HTTP_ACCEPT="application/dicom", HTTP_IF_NONE_MATCH=condition)
        assert again.status_code == 304, condition
        assert again["ETag"] == etag and again.content == b""
    changed = api.get(obj.url, HTTP_ACCEPT="application/dicom", HTTP_IF_NONE_MATCH='"something-else"')
    assert changed.status_code == 200 and body_of(changed) == obj.raw


@pytest.mark.django_db
def test_it_streams_a_study_in_series_and_instance_order(api: Client) -> None:
    spec = StudySpec()
    first = make_series(spec, "CT", count=3)
    second = make_series(spec, "CT", count=2)
    second = [pydicom.dcmread(io.BytesIO(b)) for b in second]
    for ds in second:
        ds.SeriesNumber = 2
    second_raw = []
    for ds in second:
        buf = io.BytesIO()
        ds.save_as(buf)
        second_raw.append(buf.getvalue())
    assert stow(api, list(reversed(second_raw)) + list(reversed(first))).status_code == 200
    response = api.get(f"/dicom-web/studies/{spec.study_uid}", HTTP_ACCEPT=DICOM_ANY)
    assert response.status_code == 200
    assert response.streaming
    parts = parts_of(response)
    assert [content for _, content in parts] == first + second_raw
    assert int(response["Content-Length"]) == len(body_of(api.get(f"/dicom-web/studies/{spec.study_uid}")))


@pytest.mark.django_db
def test_it_retrieves_one_series_of_a_study(api: Client, ct_study: dict[str, Any]) -> None:
    spec = ct_study["spec"]
    other = make_series(spec, "CT", count=2)
    assert stow(api, other).status_code == 200
    series_uid = pydicom.dcmread(io.BytesIO(other[0])).SeriesInstanceUID
    response = api.get(f"/dicom-web/studies/{spec.study_uid}/series/{series_uid}", HTTP_ACCEPT=DICOM_ANY)
    assert [content for _, content in parts_of(response)] == other


@pytest.mark.django_db
def test_a_retrieved_study_with_an_unreadable_instance_ends_without_its_closing_delimiter(
    api: Client, ct_study: dict[str, Any]
) -> None:
    spec = ct_study["spec"]
    stored = list(Instance.objects.order_by("instance_number"))
    get_storage(stored[1].tier).delete(stored[1].storage_key)
    response = api.get(f"/dicom-web/studies/{spec.study_uid}", HTTP_ACCEPT=DICOM_ANY)
    assert response.status_code == 200  # the status went out with the first part
    boundary = response["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    body = body_of(response)
    assert not body.rstrip().endswith(f"--{boundary}--".encode())
    assert body.count(f"--{boundary}".encode()) == 1
    assert ct_study["parts"][0] in body


@pytest.mark.django_db
@pytest.mark.parametrize(
    "accept",
    [
        "application/dicom",
        'multipart/related; type="application/octet-stream"',
        "application/dicom+json",
        "image/jpeg",
    ],
)
def test_it_refuses_representations_a_study_does_not_have(api: Client, ct_study: dict[str, Any], accept: str) -> None:
    response = api.get(f"/dicom-web/studies/{ct_study['spec'].study_uid}", HTTP_ACCEPT=accept)
    assert response.status_code == 406
    assert response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "accept",
    [
        "*/*",
        "multipart/related",
        "multipart/*",
        "multipart/related; type=application/dicom",
        'image/png, multipart/related; type="application/dicom"; q=0.2',
    ],
)
def test_it_accepts_the_usual_ways_of_asking_for_a_study(api: Client, ct_study: dict[str, Any], accept: str) -> None:
    response = api.get(f"/dicom-web/studies/{ct_study['spec'].study_uid}", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert [c for _, c in parts_of(response)] == ct_study["parts"]


@pytest.mark.django_db
def test_it_honours_the_accept_query_parameter(api: Client) -> None:
    obj = store_test_file(api, "CT_small.dcm")
    response = api.get(obj.url + "?accept=application/dicom", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert body_of(response) == obj.raw


@pytest.mark.django_db
def test_it_answers_404_for_what_does_not_exist(api: Client, ct_study: dict[str, Any]) -> None:
    study = ct_study["spec"].study_uid
    sop = pydicom.dcmread(io.BytesIO(ct_study["parts"][0]))
    series = sop.SeriesInstanceUID
    for url in (
        "/dicom-web/studies/1.2.3.999",
        f"/dicom-web/studies/{study}/series/1.2.3.999",
        f"/dicom-web/studies/{study}/series/{series}/instances/1.2.3.999",
        f"/dicom-web/studies/1.2.3.999/series/{series}/instances/{sop.SOPInstanceUID}",
    ):
        assert api.get(url).status_code == 404, url


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/dicom-web/studies/1.2.abc",
        "/dicom-web/studies/1.2.3/series/1.2.3;DROP",
        "/dicom-web/studies/1.2.3/series/1.2.3/instances/" + "1" * 65,
        "/dicom-web/studies/1.2..3/series/1.2.3/instances/1.2.3/metadata",
    ],
)
def test_it_answers_400_for_malformed_uids(api: Client, url: str) -> None:
    response = api.get(url)
    assert response.status_code == 400
    assert "UID" in response.json()["detail"]


class NothingPolicy(AccessPolicy):
    """Sees no study at all."""

    def studies(self, user: Any) -> Any:
        return Study.objects.none()


@pytest.fixture
def nothing_visible(settings: Any) -> Any:
    settings.PACS_ACCESS_POLICY = f"{__name__}.NothingPolicy"
    policy.cache_clear()
    yield
    policy.cache_clear()


@pytest.mark.django_db
def test_it_hides_a_study_the_policy_does_not_show(api: Client, nothing_visible: None) -> None:
    obj = store_test_file(api, "CT_small.dcm")
    for url in (
        obj.url,
        obj.url + "/metadata",
        obj.url + "/frames/1",
        obj.url + "/bulkdata/7FE00010",
        f"/dicom-web/studies/{obj.study}",
        f"/dicom-web/studies/{obj.study}/series/{obj.series}/metadata",
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert b"1.3.6" not in response.content


@pytest.mark.django_db
def test_it_requires_authentication(client: Client, ct_study: dict[str, Any]) -> None:
    assert client.get(f"/dicom-web/studies/{ct_study['spec'].study_uid}").status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_it_allows_only_get_and_head_on_an_instance(api: Client, method: str) -> None:
    obj = store_test_file(api, "CT_small.dcm")
    response = getattr(api, method)(obj.url)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.django_db
def test_it_answers_head_with_headers_only(api: Client, ct_study: dict[str, Any]) -> None:
    url = f"/dicom-web/studies/{ct_study['spec'].study_uid}"
    get = api.get(url)
    head = api.head(url)
    assert head.status_code == 200
    assert head["Content-Type"] == get["Content-Type"]
    assert head["Content-Length"] == get["Content-Length"]
    assert head.content == b""


@pytest.mark.django_db
def test_it_audits_each_retrieve_with_its_level(api: Client, ct_study: dict[str, Any]) -> None:
    spec = ct_study["spec"]
    body_of(api.get(f"/dicom-web/studies/{spec.study_uid}"))
    event = AuditEvent.objects.filter(action="retrieve").get()
    assert (event.study_instance_uid, event.patient_id, event.detail) == (
        spec.study_uid,
        spec.patient_id,
        {"level": "study"},
    )


@pytest.mark.django_db
def test_it_retrieves_a_study_in_few_queries(api: Client, django_assert_max_num_queries: Any) -> None:
    spec = StudySpec()
    assert stow(api, make_series(spec, "CT", count=10)).status_code == 200
    # token lookup, one instance query, the audit record (savepoint, head, insert, update, release)
    # and the last access (once an hour per study: archive/ingest/lastaccess.py)
    with django_assert_max_num_queries(8):
        response = api.get(f"/dicom-web/studies/{spec.study_uid}", HTTP_ACCEPT=DICOM_ANY)
        assert len(parts_of(response)) == 10


@pytest.mark.django_db(transaction=True)
def test_dicomweb_client_retrieves_instances_metadata_and_frames(live_server: Any, admin_user: Any) -> None:
    from dicomweb_client.api import DICOMwebClient

    from archive.models import ApiToken

    _, token = ApiToken.issue(admin_user, "dicomweb-client")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    obj = store_test_file(api, "emri_small_jpeg_ls_lossless.dcm")
    client = DICOMwebClient(url=live_server.url + "/dicom-web", headers={"Authorization": f"Bearer {token}"})
    instance = client.retrieve_instance(obj.study, obj.series, obj.sop)
    assert instance.file_meta.TransferSyntaxUID == obj.syntax
    assert np.array_equal(instance.pixel_array, obj.ds.pixel_array)
    [metadata] = client.retrieve_series_metadata(obj.study, obj.series)
    assert metadata["00080018"]["Value"] == [obj.sop]
    frames = client.retrieve_instance_frames(obj.study, obj.series, obj.sop, frame_numbers=[2, 10])
    assert frames == [obj.ds.pixel_array[1].tobytes(), obj.ds.pixel_array[9].tobytes()]
    [jls] = client.retrieve_instance_frames(
        obj.study, obj.series, obj.sop, frame_numbers=[1], media_types=(("image/jls", obj.syntax),)
    )
    assert jls == list(generate_frames(obj.ds.PixelData, number_of_frames=10))[0]
    [study] = list(client.iter_study(obj.study))
    assert study.SOPInstanceUID == obj.sop


@pytest.mark.django_db
def test_an_object_no_decoder_can_read_is_a_406_not_a_server_error(api: Client) -> None:
    # JPEG-lossy.dcm's 12-bit codestream defeats both installed JPEG decoders.
    obj = store_test_file(api, "JPEG-lossy.dcm")
    explicit = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
    for url, accept in (
        (obj.url, explicit),
        (obj.url, f"application/dicom; transfer-syntax={EXPLICIT_LE}"),
        (obj.url + "/frames/1", 'multipart/related; type="application/octet-stream"'),
        (obj.url + "/bulkdata/7FE00010", "application/octet-stream"),
    ):
        response = api.get(url, HTTP_ACCEPT=accept)
        assert response.status_code == 406, url
        assert "decode" in response.json()["detail"]
    [(_, content)] = parts_of(api.get(obj.url, HTTP_ACCEPT=DICOM_ANY))
    assert content == obj.raw  # the stored bytes are still there for a client that can decode them
