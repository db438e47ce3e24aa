"""The shape of the STOW-RS response body (PS3.18 Table 10.5.3-3, Annex F.2), and 503 when the index is down.

Attributes in tag order at every level (F.2.2), the study's Retrieve URL
(Type 2: present, empty when the request spread over several studies), and a
body cut short told in the Warning header rather than with a Warning Reason,
which belongs to one stored instance.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pydicom
import pytest
from django.db import OperationalError
from django.http import HttpResponse
from django.test import Client, RequestFactory

from archive.dicom.synthetic import StudySpec, make_series
from archive.dicomweb.http import add_warnings
from archive.models import Instance
from archive.storage.registry import get_storage
from tests.conftest import multipart, stow


def tags_in_order(obj: dict[str, Any]) -> bool:
    keys = list(obj)
    return keys == sorted(keys)


@pytest.mark.django_db
def test_a_stow_into_one_study_names_it_and_lists_attributes_in_tag_order(upload_client: Client) -> None:
    spec = StudySpec(patient_id="SHAPE-1")
    parts = make_series(spec, "CT", count=2) + [b"not dicom at all"]
    response = stow(upload_client, parts)
    assert response.status_code == 202
    body = response.json()
    assert body["00081190"]["Value"] == [f"http://testserver/dicom-web/studies/{spec.study_uid}"]
    assert tags_in_order(body)
    for item in body["00081199"]["Value"] + body["00081198"]["Value"]:
        assert tags_in_order(item)
    assert "00081196" not in body


@pytest.mark.django_db
def test_a_stow_spread_over_two_studies_keeps_an_empty_retrieve_url(upload_client: Client) -> None:
    parts = make_series(StudySpec(patient_id="SHAPE-2"), "CT", count=1) + make_series(
        StudySpec(patient_id="SHAPE-3"), "MR", count=1
    )
    response = stow(upload_client, parts)
    assert response.status_code == 200
    assert response.json()["00081190"] == {"vr": "UR"}


@pytest.mark.django_db
def test_a_body_cut_short_is_told_in_the_warning_header(upload_client: Client) -> None:
    parts = make_series(StudySpec(patient_id="SHAPE-4"), "CT", count=2)
    body, ctype = multipart(parts)
    cut = body[: body.rindex(b"--XyZ123boundary--")] + b"--XyZ123boundary\r\nContent-Type: application/dicom\r\n\r\nabc"
    response = upload_client.post("/dicom-web/studies", cut, content_type=ctype, HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 202
    assert response["Warning"].startswith('299 http://testserver/dicom-web: "')  # as QIDO's (PS3.18 §8.3.4)
    payload = response.json()
    assert len(payload["00081199"]["Value"]) == 2
    assert "00081196" not in payload


@pytest.mark.django_db
def test_refusals_are_logged_without_the_instances_uids(
    upload_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    (part,) = make_series(StudySpec(patient_id="SHAPE-5"), "CT", count=1)
    ds = pydicom.dcmread(io.BytesIO(part))
    assert stow(upload_client, [part]).status_code == 200
    changed = make_series(StudySpec(patient_id="SHAPE-5"), "CT", count=1)[0]
    other = pydicom.dcmread(io.BytesIO(changed))
    other.SOPInstanceUID = ds.SOPInstanceUID  # a different object under a stored UID: a conflict
    buffer = io.BytesIO()
    other.save_as(buffer, enforce_file_format=True)
    with caplog.at_level(logging.INFO):
        assert stow(upload_client, [buffer.getvalue()]).status_code == 409
    assert "STOW refused a part: conflict" in caplog.text
    assert str(ds.SOPInstanceUID) not in caplog.text
    assert str(ds.StudyInstanceUID) not in caplog.text


@pytest.mark.django_db
@pytest.mark.parametrize("parts", [1, 3])
def test_an_index_that_cannot_be_reached_gets_503_with_retry_after_and_leaves_nothing(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch, parts: int
) -> None:
    import archive.ingest.store

    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr(archive.ingest.store, "_index_placed", down)
    response = stow(upload_client, make_series(StudySpec(patient_id="DOWN-1"), "CT", count=parts))
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "not available" in response.json()["detail"]
    assert Instance.objects.count() == 0
    assert list(get_storage("hot").keys()) == []
    assert list(get_storage("hot").staging_dir.iterdir()) == []


@pytest.mark.django_db
def test_a_search_while_the_index_is_down_gets_503_not_500(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import archive.dicomweb.qido

    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(archive.dicomweb.qido, "search_queryset", down)
    response = upload_client.get("/dicom-web/studies", HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 503 and response["Retry-After"] == "30"


def test_several_warnings_share_one_header_each_with_its_code_agent_and_quoted_text() -> None:
    request = RequestFactory().get("/dicom-web/studies")
    response = HttpResponse()
    add_warnings(response, request, ["the first", 'a "quoted" word, a back\\slash\r\nand a line break'])
    assert response["Warning"] == (
        '299 http://testserver/dicom-web: "the first", '
        '299 http://testserver/dicom-web: "a \\"quoted\\" word, a back\\\\slash  and a line break"'
    )


def test_no_warning_adds_no_header() -> None:
    response = HttpResponse()
    add_warnings(response, RequestFactory().get("/dicom-web/studies"), [])
    assert "Warning" not in response


@pytest.mark.django_db
def test_a_stow_to_a_malformed_study_uid_gets_400_naming_it(upload_client: Client) -> None:
    parts = make_series(StudySpec(patient_id="SHAPE-UID"), "CT", count=1)
    response = stow(upload_client, parts, study="1..2")  # an empty component (PS3.5 §9)
    assert response.status_code == 400
    assert "Study Instance UID" in response.json()["detail"]
    assert not Instance.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "allow"),
    [("/dicom-web/studies", "GET, HEAD, POST"), ("/dicom-web/studies/1.2.3", "GET, HEAD, POST, DELETE")],
)
def test_a_method_neither_stow_nor_its_neighbours_answer_gets_405_with_allow(
    upload_client: Client, url: str, allow: str
) -> None:
    response = upload_client.put(url, b"", content_type="application/dicom")
    assert response.status_code == 405
    assert response["Allow"] == allow
