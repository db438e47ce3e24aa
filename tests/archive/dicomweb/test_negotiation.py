"""Content negotiation (PS3.18 §8.7): Accept parsing and the choices WADO-RS makes from it."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from archive.dicomweb.http import parse_frame_list
from archive.dicomweb.negotiation import (
    Acceptable,
    PixelPlan,
    accept_header,
    acceptables,
    accepts_json,
    choose,
    output_syntax,
    parse_accept,
    pixel_plan,
)

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JLS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
HTJ2K = "1.2.840.10008.1.2.4.201"
OCTETS = "application/octet-stream"


def test_it_orders_ranges_by_q_and_keeps_the_order_of_equals() -> None:
    ranges = parse_accept("text/plain;q=0.2, image/png, image/jpeg;q=0.9, image/gif")
    assert [r.media_type for r in ranges] == ["image/png", "image/gif", "image/jpeg", "text/plain"]


def test_it_drops_q_zero_and_treats_a_bad_q_as_zero() -> None:
    assert [r.media_type for r in parse_accept("image/png;q=0, image/gif;q=abc, text/plain")] == ["text/plain"]


def test_an_empty_header_accepts_anything() -> None:
    assert [r.media_type for r in parse_accept(None)] == ["*/*"]
    assert [r.media_type for r in parse_accept("   ")] == ["*/*"]


def test_it_keeps_commas_and_semicolons_inside_quotes() -> None:
    [r] = parse_accept('multipart/related; type="application/dicom"; x="a,b;c"')
    assert r.params == {"type": "application/dicom", "x": "a,b;c"}


@pytest.mark.parametrize(
    "header",
    [
        'multipart/related; type="application/octet-stream"; transfer-syntax=*',
        "multipart/related; type=application/octet-stream; transfer-syntax=*",
        'multipart/related;type="application/octet-stream";transfer-syntax="*"',
        "MULTIPART/RELATED; TYPE=application/octet-stream; Transfer-Syntax=*",
    ],
)
def test_it_reads_quoted_and_unquoted_parameters_alike(header: str) -> None:
    assert acceptables(header, OCTETS) == [Acceptable(OCTETS, True, "*", 1.0)]


def test_multipart_without_a_type_means_the_resources_default_part_type() -> None:
    assert acceptables("multipart/related", "application/dicom") == [Acceptable("application/dicom", True, None)]
    assert acceptables("multipart/*", OCTETS) == [Acceptable(OCTETS, True, None)]


def test_a_wildcard_allows_either_packaging() -> None:
    assert acceptables("*/*;q=0.5, image/jpeg", OCTETS) == [
        Acceptable("image/jpeg", False, None, 1.0),
        Acceptable("*/*", None, None, 0.5),
    ]


def test_choose_returns_the_first_range_a_view_can_satisfy() -> None:
    assert choose("image/png, text/*;q=0.5", lambda r: "text" if r.matches("text/html") else None) == "text"
    assert choose("image/png", lambda r: "text" if r.matches("text/html") else None) is None


@pytest.mark.parametrize(
    ("header", "ok"),
    [("application/dicom+json", True), ("application/json", True), ("*/*", True), (None, True), ("text/html", False)],
)
def test_it_knows_when_json_is_acceptable(header: str | None, ok: bool) -> None:
    assert accepts_json(header) is ok


def test_the_accept_query_parameter_overrides_the_header() -> None:
    request = RequestFactory().get("/x?accept=application/dicom&accept=image/jpeg", HTTP_ACCEPT="text/html")
    assert accept_header(request) == "application/dicom,image/jpeg"
    assert accept_header(RequestFactory().get("/x", HTTP_ACCEPT="text/html")) == "text/html"


# --------------------------------------------------------------------------- transfer syntax of whole objects


@pytest.mark.parametrize(
    ("stored", "wanted", "result"),
    [
        (EXPLICIT, ["*"], (EXPLICIT, False)),
        (JPEG, ["*"], (JPEG, False)),
        (IMPLICIT, ["*"], (EXPLICIT, True)),  # implicit VR is not used on the web
        (IMPLICIT, [IMPLICIT], (IMPLICIT, False)),  # unless asked for by name
        (JLS, [None], (EXPLICIT, True)),  # default: Explicit VR Little Endian
        (JPEG, [None], (JPEG, False)),  # unless the pixels are lossy
        (EXPLICIT, [None], (EXPLICIT, False)),
        (JLS, [JLS], (JLS, False)),
        (JLS, [EXPLICIT], (EXPLICIT, True)),
        (EXPLICIT, [JPEG], None),
        (EXPLICIT, [JPEG, EXPLICIT], (EXPLICIT, False)),
        (RLE, [JPEG, "*"], (RLE, False)),
        ("1.2.3.4.5.6", [EXPLICIT], None),  # a private syntax nobody here can decode
        ("1.2.3.4.5.6", [None], ("1.2.3.4.5.6", False)),
    ],
)
def test_it_chooses_the_syntax_of_a_retrieved_object(
    stored: str, wanted: list[str | None], result: tuple[str, bool] | None
) -> None:
    assert output_syntax(stored, wanted, pixels=512 * 512) == result


def test_objects_too_large_for_explicit_vr_are_sent_as_stored() -> None:
    assert output_syntax(JLS, [None], pixels=4096 * 4096 * 200) == (JLS, False)


# --------------------------------------------------------------------------- pixel data representations


NATIVE = PixelPlan(True, False, OCTETS, EXPLICIT)


@pytest.mark.parametrize(
    ("header", "stored", "single_ok", "plan"),
    [
        # the OHIF / cornerstone request: stored bytes, labelled with what they really are
        ("multipart/related; type=application/octet-stream; transfer-syntax=*", EXPLICIT, True, NATIVE),
        ("multipart/related; type=application/octet-stream; transfer-syntax=*", IMPLICIT, True, NATIVE),
        (
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            JPEG,
            True,
            PixelPlan(True, False, "image/jpeg", JPEG),
        ),
        (
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            HTJ2K,
            True,
            PixelPlan(True, False, "image/jphc", HTJ2K),
        ),
        (
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            RLE,
            True,
            PixelPlan(True, False, "image/dicom-rle", RLE),
        ),
        # uncompressed asked for: decode
        ('multipart/related; type="application/octet-stream"', JLS, True, PixelPlan(True, True, OCTETS, EXPLICIT)),
        (f"application/octet-stream; transfer-syntax={EXPLICIT}", JLS, True, PixelPlan(False, True, OCTETS, EXPLICIT)),
        # the compressed media type of the stored syntax
        (
            'multipart/related; type="image/jpeg"',
            JPEG_LOSSLESS,
            True,
            PixelPlan(True, False, "image/jpeg", JPEG_LOSSLESS),
        ),
        ('multipart/related; type="image/x-dicom-rle"', RLE, True, PixelPlan(True, False, "image/dicom-rle", RLE)),
        (
            f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG}',
            JPEG,
            True,
            PixelPlan(True, False, "image/jpeg", JPEG),
        ),
        (f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG}', JPEG_LOSSLESS, True, None),
        ('multipart/related; type="image/jpeg"', EXPLICIT, True, None),
        # wildcards: lossless data goes uncompressed, lossy data as stored
        ("*/*", JLS, True, PixelPlan(True, True, OCTETS, EXPLICIT)),
        ("*/*", JPEG, True, PixelPlan(True, False, "image/jpeg", JPEG)),
        # single part only for one part
        ("application/octet-stream", EXPLICIT, False, None),
        ("application/octet-stream, multipart/related;q=0.5", EXPLICIT, False, NATIVE),
        ("text/html", EXPLICIT, True, None),
        ("multipart/related; type=application/octet-stream; transfer-syntax=1.2.3..4", EXPLICIT, True, None),
    ],
)
def test_it_plans_how_to_send_pixel_data(header: str, stored: str, single_ok: bool, plan: PixelPlan | None) -> None:
    assert pixel_plan(acceptables(header, OCTETS), stored, single_ok) == plan


def test_a_plan_names_the_part_content_type() -> None:
    assert PixelPlan(True, False, "image/jls", JLS).content_type == f"image/jls; transfer-syntax={JLS}"


@pytest.mark.parametrize(("value", "frames"), [("1", [1]), ("3,1,2", [3, 1, 2]), ("10000", [10000]), ("007", [7])])
def test_it_parses_frame_lists(value: str, frames: list[int]) -> None:
    assert parse_frame_list(value) == frames


@pytest.mark.parametrize(
    "value", ["", "0", "1,", ",1", "1;2", "1,1", "-1", "1.5", " 1", ",".join(str(i) for i in range(1, 10002))]
)
def test_it_rejects_bad_frame_lists(value: str) -> None:
    with pytest.raises(ValueError):
        parse_frame_list(value)
