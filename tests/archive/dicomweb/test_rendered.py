"""WADO-RS rendered and thumbnail resources: media types, parameters, caching, access, audit."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.core.cache import cache
from django.test import Client
from PIL import Image

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.dicomweb import rendered
from archive.models import Instance
from archive.storage.registry import get_storage
from audit.models import AuditEvent
from tests.conftest import stow


@pytest.fixture(autouse=True)
def private_data_dir(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """Thumbnails are cached under DATA_DIR: give every test its own, and a clean cache."""
    settings.DATA_DIR = tmp_path / "data"
    cache.clear()
    yield settings.DATA_DIR
    cache.clear()


def base(inst: Instance) -> str:
    return (
        f"/dicom-web/studies/{inst.series.study.study_instance_uid}"
        f"/series/{inst.series.series_instance_uid}/instances/{inst.sop_instance_uid}"
    )


def study_url(inst: Instance) -> str:
    return f"/dicom-web/studies/{inst.series.study.study_instance_uid}"


def series_url(inst: Instance) -> str:
    return f"{study_url(inst)}/series/{inst.series.series_instance_uid}"


def image(response: Any) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def parts(response: Any) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response body."""
    return split_parts(response["Content-Type"], b"".join(response.streaming_content))


def split_parts(ctype: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related ``body`` of Content-Type ``ctype``."""
    boundary = ctype.split("boundary=")[1].split(";")[0].strip('"')
    out = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().strip().split("\r\n"))
        out.append((headers, content.removesuffix(b"\r\n")))
    return out


@pytest.fixture
def ct(upload_client: Client) -> list[Instance]:
    """A stored three-slice 256×256 CT series, ordered by instance number."""
    assert stow(upload_client, make_series(StudySpec(), "CT", count=3, size=256)).status_code == 200
    return list(Instance.objects.select_related("series__study").order_by("instance_number"))


@pytest.fixture
def cine(upload_client: Client) -> Instance:
    """A stored eight-frame ultrasound clip."""
    assert stow(upload_client, [make_instance(StudySpec(), "US", size=64, frames=8)]).status_code == 200
    return Instance.objects.select_related("series__study").get()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "accept, media_type, fmt",
    [
        ("*/*", "image/jpeg", "JPEG"),
        ("image/*", "image/jpeg", "JPEG"),
        ("image/jpeg", "image/jpeg", "JPEG"),
        ("image/png", "image/png", "PNG"),
        ("image/gif", "image/gif", "GIF"),
        ("application/dicom, image/png;q=0.5", "image/png", "PNG"),
    ],
)
def test_it_renders_an_instance_in_the_accepted_media_type(
    admin_client_token: Client, ct: list[Instance], accept: str, media_type: str, fmt: str
) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/rendered", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == media_type
    assert image(response).format == fmt and image(response).size == (256, 256)


@pytest.mark.django_db
def test_it_renders_jpeg_when_no_accept_header_is_sent(admin_client_token: Client, ct: list[Instance]) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/rendered")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"


@pytest.mark.django_db
def test_the_accept_query_parameter_overrides_the_header(admin_client_token: Client, ct: list[Instance]) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/rendered?accept=image/png", HTTP_ACCEPT="image/jpeg")
    assert response["Content-Type"] == "image/png"


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["application/dicom", "video/mp4", "text/html"])
def test_it_refuses_media_types_it_cannot_render(admin_client_token: Client, ct: list[Instance], accept: str) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/rendered", HTTP_ACCEPT=accept)
    assert response.status_code == 406
    assert "image/jpeg" in response.json()["detail"]


@pytest.mark.django_db
def test_it_applies_the_requested_window(admin_client_token: Client, ct: list[Instance]) -> None:
    url = f"{base(ct[0])}/rendered"
    default = np.asarray(image(admin_client_token.get(url, HTTP_ACCEPT="image/png")), dtype=float)
    lung = np.asarray(image(admin_client_token.get(url + "?window=-600,1500", HTTP_ACCEPT="image/png")), dtype=float)
    # Soft tissue window (40/400 from the file) shows lungs black; a lung window does not.
    centre_of_left_lung = (128, 128 - 46)
    assert default[centre_of_left_lung] == 0
    assert 0 < lung[centre_of_left_lung] < 255


@pytest.mark.django_db
def test_it_fits_the_viewport_keeping_the_aspect_ratio(admin_client_token: Client, ct: list[Instance]) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/rendered?viewport=100,50")
    assert image(response).size == (50, 50)
    cropped = admin_client_token.get(f"{base(ct[0])}/rendered?viewport=200,200,0,0,128,64")
    assert image(cropped).size == (200, 100)


@pytest.mark.django_db
def test_a_lower_quality_gives_a_smaller_jpeg(admin_client_token: Client, ct: list[Instance]) -> None:
    url = f"{base(ct[0])}/rendered?window=40,400"
    high = admin_client_token.get(url + "&quality=100")
    low = admin_client_token.get(url + "&quality=5")
    assert len(low.content) < len(high.content)


@pytest.mark.django_db
def test_annotation_is_accepted_and_ignored(admin_client_token: Client, ct: list[Instance]) -> None:
    plain = admin_client_token.get(f"{base(ct[0])}/rendered", HTTP_ACCEPT="image/png")
    annotated = admin_client_token.get(f"{base(ct[0])}/rendered?annotation=patient", HTTP_ACCEPT="image/png")
    assert annotated.status_code == 200 and annotated.content == plain.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, reason",
    [
        ("window=abc,400", "window center"),
        ("window=40", "window must be"),
        ("window=40,0", "at least 1"),
        ("window=40,400,cubic", "window function"),
        ("window=40,nan", "finite"),
        ("window=40,400&window=50,500", "only once"),
        ("viewport=0,10", "between 1"),
        ("viewport=a,10", "integer"),
        ("viewport=10,10,1,2,3", "vw,vh"),
        ("viewport=10,10,-1,0,5,5", "source region"),
        ("viewport=10,10,0,0,0,5", "source region"),
        ("viewport=99999,10", "between 1"),
        ("quality=0", "quality"),
        ("quality=101", "quality"),
        ("quality=high", "integer"),
        ("quality=--5", "integer"),
        ("quality=%C2%B2", "integer"),
        ("viewport=--1,5", "integer"),
        ("viewport=%C2%B2,5", "integer"),
    ],
)
def test_it_rejects_malformed_parameters_with_a_reason(
    admin_client_token: Client, ct: list[Instance], query: str, reason: str
) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/rendered?{query}")
    assert response.status_code == 400
    assert reason in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("window", ["40,0.5,sigmoid", "40,0.5,linear-exact", "40,1,linear"])
def test_narrow_windows_are_allowed_where_ps3_3_allows_them(
    admin_client_token: Client, ct: list[Instance], window: str
) -> None:
    assert admin_client_token.get(f"{base(ct[0])}/rendered?window={window}").status_code == 200


@pytest.mark.django_db
def test_a_source_region_outside_the_image_is_refused(admin_client_token: Client, ct: list[Instance]) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/rendered?viewport=10,10,300,300,10,10")
    assert response.status_code == 406
    assert "outside the image" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "frames, reason", [("0", "positive"), ("a", "positive"), ("1,1", "repeat"), ("%C2%B2", "positive")]
)
def test_it_rejects_bad_frame_lists(admin_client_token: Client, ct: list[Instance], frames: str, reason: str) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/frames/{frames}/rendered")
    assert response.status_code == 400
    assert reason in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["/frames/2/rendered", "/frames/2/thumbnail"])
def test_a_frame_the_instance_does_not_have_is_not_found(
    admin_client_token: Client, ct: list[Instance], suffix: str
) -> None:
    response = admin_client_token.get(f"{base(ct[0])}{suffix}")
    assert response.status_code == 404  # as for the frames resource: well formed, but no such frame
    assert "Frame 2 does not exist" in response.json()["detail"]


@pytest.mark.django_db
def test_it_renders_one_frame_of_a_clip(admin_client_token: Client, cine: Instance) -> None:
    first = admin_client_token.get(f"{base(cine)}/frames/1/rendered", HTTP_ACCEPT="image/png")
    fifth = admin_client_token.get(f"{base(cine)}/frames/5/rendered", HTTP_ACCEPT="image/png")
    assert first.status_code == fifth.status_code == 200
    assert first.content != fifth.content


@pytest.mark.django_db
def test_several_frames_come_as_multipart_with_a_location_each(admin_client_token: Client, cine: Instance) -> None:
    response = admin_client_token.get(f"{base(cine)}/frames/2,4,6/rendered", HTTP_ACCEPT="image/png")
    assert response.status_code == 200
    assert response["Content-Type"].startswith('multipart/related; type="image/png"')
    got = parts(response)
    assert [h["Content-Location"].rsplit("/frames/", 1)[1] for h, _ in got] == [
        "2/rendered",
        "4/rendered",
        "6/rendered",
    ]
    single = admin_client_token.get(f"{base(cine)}/frames/4/rendered", HTTP_ACCEPT="image/png")
    assert got[1][1] == single.content


@pytest.mark.django_db
def test_a_clip_as_gif_is_an_animation_of_every_frame(admin_client_token: Client, cine: Instance) -> None:
    response = admin_client_token.get(f"{base(cine)}/rendered", HTTP_ACCEPT="image/gif")
    assert response.status_code == 200
    gif = image(response)
    assert gif.format == "GIF" and getattr(gif, "n_frames", 1) == 8


@pytest.mark.django_db
def test_a_series_is_rendered_as_one_part_per_instance_in_order(admin_client_token: Client, ct: list[Instance]) -> None:
    response = admin_client_token.get(f"{series_url(ct[0])}/rendered", HTTP_ACCEPT="image/jpeg")
    assert response.status_code == 200
    assert response["Content-Type"].startswith('multipart/related; type="image/jpeg"')
    got = parts(response)
    assert [h["Content-Location"] for h, _ in got] == [f"http://testserver{base(i)}/rendered" for i in ct]
    assert all(Image.open(io.BytesIO(content)).format == "JPEG" for _, content in got)


@pytest.mark.django_db
def test_a_study_is_rendered_with_the_multipart_type_asked_for(admin_client_token: Client, ct: list[Instance]) -> None:
    response = admin_client_token.get(f"{study_url(ct[0])}/rendered", HTTP_ACCEPT='multipart/related; type="image/png"')
    assert response.status_code == 200
    got = parts(response)
    assert len(got) == 3 and all(h["Content-Type"] == "image/png" for h, _ in got)


@pytest.mark.django_db
def test_an_instance_thumbnail_fits_128_pixels(admin_client_token: Client, ct: list[Instance]) -> None:
    response = admin_client_token.get(f"{base(ct[0])}/thumbnail")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert image(response).size == (128, 128)
    assert admin_client_token.get(f"{base(ct[0])}/thumbnail?viewport=64,32").status_code == 200
    assert image(admin_client_token.get(f"{base(ct[0])}/thumbnail?viewport=64,32")).size == (32, 32)


@pytest.mark.django_db
def test_a_frame_thumbnail_shows_that_frame(admin_client_token: Client, cine: Instance) -> None:
    thumb = admin_client_token.get(f"{base(cine)}/frames/5/thumbnail", HTTP_ACCEPT="image/png")
    full = admin_client_token.get(f"{base(cine)}/frames/5/rendered", HTTP_ACCEPT="image/png")
    assert thumb.status_code == 200 and thumb.content == full.content  # 64×64 is never enlarged


@pytest.mark.django_db
def test_a_study_thumbnail_is_the_middle_image_of_its_first_series(
    upload_client: Client, admin_client_token: Client
) -> None:
    spec = StudySpec()
    second = make_series(spec, "MR", count=2, size=64, series_number=2)
    first = make_series(spec, "CT", count=5, size=64, series_number=1)
    assert stow(upload_client, second + first).status_code == 200
    middle = Instance.objects.select_related("series__study").get(series__series_number=1, instance_number=3)
    study_thumb = admin_client_token.get(f"{study_url(middle)}/thumbnail", HTTP_ACCEPT="image/png")
    series_thumb = admin_client_token.get(f"{series_url(middle)}/thumbnail", HTTP_ACCEPT="image/png")
    expected = admin_client_token.get(f"{base(middle)}/thumbnail", HTTP_ACCEPT="image/png")
    assert study_thumb.status_code == series_thumb.status_code == 200
    assert study_thumb.content == series_thumb.content == expected.content
    assert study_thumb["ETag"] == expected["ETag"]
    assert study_thumb["Cache-Control"] == "private, no-cache"


@pytest.mark.django_db
def test_thumbnails_are_cached_on_disk_and_served_without_decoding(
    admin_client_token: Client, ct: list[Instance], private_data_dir: Path
) -> None:
    url = f"{base(ct[1])}/thumbnail"
    first = admin_client_token.get(url)
    cached = list((private_data_dir / "cache" / "thumbnails").rglob("*"))
    assert [p for p in cached if p.is_file() and not p.name.startswith(".tmp")]
    # With the stored object gone, only the cache can answer.
    get_storage(ct[1].tier).path(ct[1].storage_key).unlink()
    second = admin_client_token.get(url)
    assert second.status_code == 200 and second.content == first.content
    assert admin_client_token.get(f"{base(ct[1])}/rendered").status_code == 503


@pytest.mark.django_db
def test_instance_results_are_immutable_with_a_strong_etag(admin_client_token: Client, ct: list[Instance]) -> None:
    url = f"{base(ct[0])}/rendered?window=40,400"
    response = admin_client_token.get(url)
    etag = response["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert response["Cache-Control"] == "private, max-age=31536000, immutable"
    again = admin_client_token.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    other = admin_client_token.get(f"{base(ct[0])}/rendered?window=40,401", HTTP_IF_NONE_MATCH=etag)
    assert other.status_code == 200 and other["ETag"] != etag
    png = admin_client_token.get(url, HTTP_ACCEPT="image/png", HTTP_IF_NONE_MATCH=etag)
    assert png.status_code == 200 and png["ETag"] != etag


@pytest.mark.django_db
def test_the_etag_does_not_depend_on_parameter_spelling(admin_client_token: Client, ct: list[Instance]) -> None:
    one = admin_client_token.get(f"{base(ct[0])}/rendered?window=40,400,LINEAR")
    two = admin_client_token.get(f"{base(ct[0])}/rendered?window=40.0,400")
    assert one["ETag"] == two["ETag"]


@pytest.mark.django_db
def test_an_instance_without_pixels_is_not_acceptable(upload_client: Client, admin_client_token: Client) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_instance(StudySpec())))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert stow(upload_client, [buf.getvalue()]).status_code == 200
    inst = Instance.objects.select_related("series__study").get()
    response = admin_client_token.get(f"{base(inst)}/rendered")
    assert response.status_code == 406
    assert "no pixel data" in response.json()["detail"]
    assert admin_client_token.get(f"{study_url(inst)}/thumbnail").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["rendered", "thumbnail", "frames/1/rendered", "frames/1/thumbnail"])
def test_unknown_and_invisible_instances_are_not_found(
    colleague_client: Client, outsider_client: Client, ct: list[Instance], suffix: str
) -> None:
    assert colleague_client.get(f"{base(ct[0])}/{suffix}").status_code == 200
    assert outsider_client.get(f"{base(ct[0])}/{suffix}").status_code == 404
    unknown = f"{series_url(ct[0])}/instances/1.2.3.4.5/{suffix}"
    assert colleague_client.get(unknown).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["rendered", "thumbnail"])
def test_invisible_studies_and_series_are_not_found(
    colleague_client: Client, outsider_client: Client, ct: list[Instance], suffix: str
) -> None:
    for url in (study_url(ct[0]), series_url(ct[0])):
        assert colleague_client.get(f"{url}/{suffix}").status_code == 200
        assert outsider_client.get(f"{url}/{suffix}").status_code == 404
    assert colleague_client.get(f"/dicom-web/studies/1.2.3.4/{suffix}").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/dicom-web/studies/1.2.x/rendered",
        "/dicom-web/studies/1.2.3/series/1.2.3;DROP/thumbnail",
        "/dicom-web/studies/1.2.3/series/1.2.4/instances/1..5/rendered",
        "/dicom-web/studies/1.2.3/series/1.2.4/instances/abc/frames/1/thumbnail",
    ],
)
def test_a_malformed_uid_is_a_bad_request(admin_client_token: Client, url: str) -> None:
    response = admin_client_token.get(url)
    assert response.status_code == 400
    assert "not a valid UID" in response.json()["detail"]


@pytest.mark.django_db
def test_anonymous_requests_are_unauthorized(ct: list[Instance]) -> None:
    assert Client().get(f"{base(ct[0])}/rendered").status_code == 401


@pytest.mark.django_db
def test_only_get_and_head_are_allowed(admin_client_token: Client, ct: list[Instance]) -> None:
    response = admin_client_token.post(f"{base(ct[0])}/rendered")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"


@pytest.mark.django_db
def test_viewing_is_audited_once_per_study_and_user_per_five_minutes(
    admin_client_token: Client, ct: list[Instance]
) -> None:
    for inst in ct:
        assert admin_client_token.get(f"{base(inst)}/rendered").status_code == 200
    assert admin_client_token.get(f"{base(ct[0])}/thumbnail").status_code == 200
    study_uid = ct[0].series.study.study_instance_uid
    events = AuditEvent.objects.filter(study_instance_uid=study_uid, action__startswith="view_")
    assert list(events.values_list("action", "actor")) == [("view_rendered", "admin"), ("view_thumbnail", "admin")]
    assert events[0].patient_id == "PAT-0001"


@pytest.mark.django_db
def test_a_rendered_frame_takes_at_most_two_queries(
    admin_client_token: Client, ct: list[Instance], django_assert_max_num_queries: Any
) -> None:
    url = f"{base(ct[0])}/frames/1/rendered"
    admin_client_token.get(url)  # audit event and token bookkeeping happen on the first request
    with django_assert_max_num_queries(2):
        assert admin_client_token.get(url + "?window=10,100").status_code == 200


def test_the_cache_key_covers_content_frame_and_options() -> None:
    from archive.dicom.pixels import RenderOptions

    inst = Instance(sha256="a" * 64)
    other = Instance(sha256="b" * 64)
    jpeg, png = RenderOptions(), RenderOptions(media_type="image/png")
    keys = {
        rendered.cache_key(inst, [0], jpeg),
        rendered.cache_key(inst, [1], jpeg),
        rendered.cache_key(inst, [0], png),
        rendered.cache_key(other, [0], jpeg),
    }
    assert len(keys) == 4


@pytest.mark.django_db
def test_a_rendered_series_with_an_unreadable_instance_ends_without_its_closing_delimiter(
    admin_client_token: Client, ct: list[Instance]
) -> None:
    get_storage(ct[1].tier).delete(ct[1].storage_key)
    response = admin_client_token.get(f"{series_url(ct[0])}/rendered", HTTP_ACCEPT="image/jpeg")
    assert response.status_code == 200  # the status went out with the first part
    boundary = response["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    body = b"".join(response.streaming_content)
    # Cut off where the unreadable instance stands, like WADO retrieve: the client sees a failure, not a gap.
    assert not body.rstrip().endswith(f"--{boundary}--".encode())
    assert body.count(f"--{boundary}".encode()) == 1
    assert f"{base(ct[0])}/rendered".encode() in body
    assert f"{base(ct[2])}/rendered".encode() not in body


def with_photometric(part10: bytes, photometric: str) -> bytes:
    """``part10`` relabelled with another (0028,0004) Photometric Interpretation."""
    ds = pydicom.dcmread(io.BytesIO(part10))
    ds.PhotometricInterpretation = photometric
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.django_db
def test_a_series_with_one_unrenderable_image_comes_whole_without_it_and_says_so(
    upload_client: Client, admin_client_token: Client
) -> None:
    spec = StudySpec()
    series = make_series(spec, "CT", count=3)
    series[0] = with_photometric(series[0], "HSV")  # a permanent property: no decoder will ever present it
    assert stow(upload_client, series).status_code == 200
    images = list(Instance.objects.select_related("series__study").order_by("instance_number"))
    response = admin_client_token.get(f"{series_url(images[0])}/rendered", HTTP_ACCEPT="image/jpeg")
    assert response.status_code == 206  # PS3.18 Table 10.4.3-1: some, but not all, of the target resources
    assert response["Warning"].startswith("299 ")
    assert '"1 instance(s) could not be rendered' in response["Warning"]
    boundary = response["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    body = b"".join(response.streaming_content)
    assert body.endswith(f"--{boundary}--\r\n".encode())
    got = split_parts(response["Content-Type"], body)
    assert [headers["Content-Location"] for headers, _ in got] == [
        f"http://testserver{base(i)}/rendered" for i in images[1:]
    ]


@pytest.mark.django_db
def test_a_series_of_only_unrenderable_images_is_not_acceptable(
    upload_client: Client, admin_client_token: Client
) -> None:
    series = [with_photometric(part10, "HSV") for part10 in make_series(StudySpec(), "CT", count=2)]
    assert stow(upload_client, series).status_code == 200
    inst = Instance.objects.select_related("series__study").first()
    assert inst is not None
    for url in (series_url(inst), study_url(inst)):
        response = admin_client_token.get(f"{url}/rendered", HTTP_ACCEPT="image/jpeg")
        assert response.status_code == 406
        assert "photometric interpretation HSV" in response.json()["detail"]


@pytest.mark.django_db
def test_several_frames_of_an_unrenderable_clip_are_refused_before_the_status_line(
    upload_client: Client, admin_client_token: Client
) -> None:
    clip = with_photometric(make_instance(StudySpec(), "US", size=64, frames=4), "HSV")
    assert stow(upload_client, [clip]).status_code == 200
    inst = Instance.objects.select_related("series__study").get()
    response = admin_client_token.get(f"{base(inst)}/frames/1,2/rendered", HTTP_ACCEPT="image/jpeg")
    assert response.status_code == 406
    assert "HSV" in response.json()["detail"]
