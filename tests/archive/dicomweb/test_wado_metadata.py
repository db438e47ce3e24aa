"""WADO-RS metadata (PS3.18 §10.4.1.1.2): stored DICOM JSON, concatenated, cached."""

from __future__ import annotations

import io
import json
from typing import Any

import pydicom
import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.models import Instance
from audit.models import AuditEvent
from tests.archive.dicomweb.test_wado_retrieve import body_of, store, store_test_file
from tests.conftest import stow


def sop_of(raw: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID)


def sops_in(metadata: list[dict[str, Any]]) -> list[str]:
    return [item["00080018"]["Value"][0] for item in metadata]


@pytest.fixture
def api(admin_client_token: Client) -> Client:
    """An administrator's bearer client: stores, and sees every study under the site policy."""
    return admin_client_token


@pytest.fixture
def two_series(api: Client) -> dict[str, Any]:
    """A study with two series (numbers 1 and 2) stored out of order."""
    spec = StudySpec()
    series_uid = "2.25.1001"
    first = [make_instance(spec, "CT", series_uid=series_uid, series_number=1, instance_number=i) for i in (1, 2, 3)]
    second = [make_instance(spec, "MR", series_uid="2.25.1002", series_number=2, instance_number=i) for i in (1, 2)]
    assert stow(api, second[::-1] + first[::-1]).status_code == 200
    return {"spec": spec, "first": first, "second": second}


@pytest.mark.django_db
def test_study_metadata_lists_every_instance_in_series_and_instance_order(
    api: Client, two_series: dict[str, Any]
) -> None:
    response = api.get(f"/dicom-web/studies/{two_series['spec'].study_uid}/metadata")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    assert sops_in(response.json()) == [sop_of(r) for r in two_series["first"] + two_series["second"]]


@pytest.mark.django_db
def test_series_metadata_lists_the_series_only(api: Client, two_series: dict[str, Any]) -> None:
    response = api.get(f"/dicom-web/studies/{two_series['spec'].study_uid}/series/2.25.1002/metadata")
    assert sops_in(response.json()) == [sop_of(r) for r in two_series["second"]]


@pytest.mark.django_db
def test_instance_metadata_is_the_stored_json_with_absolute_bulk_data_uris(api: Client) -> None:
    obj = store_test_file(api, "CT_small.dcm")
    response = api.get(obj.url + "/metadata")
    [item] = response.json()
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": str(obj.ds.PatientName)}]}
    assert item["7FE00010"]["BulkDataURI"] == f"http://testserver{obj.url}/bulkdata/7FE00010"
    assert "\\u0001" not in response.content.decode()
    stored = Instance.objects.get(sop_instance_uid=obj.sop).metadata
    assert len(response.content) > len(stored)  # the marker became the real root


@pytest.mark.django_db
def test_the_root_follows_the_host_and_scheme_of_the_request(api: Client, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["pacs.example.org", "testserver"]
    obj = store_test_file(api, "CT_small.dcm")
    response = api.get(obj.url + "/metadata", HTTP_HOST="pacs.example.org", secure=True)
    uri = response.json()[0]["7FE00010"]["BulkDataURI"]
    assert uri == f"https://pacs.example.org{obj.url}/bulkdata/7FE00010"


@pytest.mark.django_db
def test_the_bulk_data_uri_in_metadata_returns_the_pixel_bytes(api: Client) -> None:
    obj = store_test_file(api, "MR_small_implicit.dcm")
    uri = api.get(obj.url + "/metadata").json()[0]["7FE00010"]["BulkDataURI"]
    response = api.get(uri.removeprefix("http://testserver"), HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200
    assert body_of(response) == obj.ds.PixelData


@pytest.mark.django_db
def test_study_metadata_revalidates_with_a_strong_etag(api: Client, two_series: dict[str, Any]) -> None:
    url = f"/dicom-web/studies/{two_series['spec'].study_uid}/metadata"
    first = api.get(url)
    etag = first["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first["Cache-Control"].startswith("private, max-age=")
    cached = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert cached.status_code == 304 and cached.content == b""
    assert api.get(url, HTTP_IF_NONE_MATCH=f'"other", {etag}').status_code == 304
    # A new instance changes the study, so the old ETag no longer matches.
    extra = make_instance(two_series["spec"], "CT", series_uid="2.25.1001", series_number=1, instance_number=9)
    assert stow(api, [extra]).status_code == 200
    changed = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert sop_of(extra) in sops_in(changed.json())


@pytest.mark.django_db
def test_instance_metadata_is_kept_but_revalidated_by_its_etag(api: Client) -> None:
    obj = store_test_file(api, "CT_small.dcm")
    response = api.get(obj.url + "/metadata")
    assert response["Cache-Control"] == "private, no-cache"  # a correction or a tier move changes it
    assert api.get(obj.url + "/metadata", HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("application/dicom+json", "application/dicom+json"),
        ("application/json", "application/json"),
        ("application/json, application/dicom+json;q=0.5", "application/json"),
        ("*/*", "application/dicom+json"),
        ("", "application/dicom+json"),
        ("application/*", "application/dicom+json"),
    ],
)
def test_it_answers_json_to_json_friendly_accept_headers_labelled_as_asked(
    api: Client, two_series: dict[str, Any], accept: str, media_type: str
) -> None:
    response = api.get(f"/dicom-web/studies/{two_series['spec'].study_uid}/metadata", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"] == media_type
    assert "Accept" in response["Vary"]
    assert len(response.json()) == 5


@pytest.mark.django_db
def test_the_two_json_labels_have_distinct_etags(api: Client, two_series: dict[str, Any]) -> None:
    url = f"/dicom-web/studies/{two_series['spec'].study_uid}/metadata"
    dicom_json = api.get(url, HTTP_ACCEPT="application/dicom+json")["ETag"]
    plain_json = api.get(url, HTTP_ACCEPT="application/json")["ETag"]
    assert dicom_json != plain_json
    assert api.get(url, HTTP_ACCEPT="application/json", HTTP_IF_NONE_MATCH=plain_json).status_code == 304
    assert api.get(url, HTTP_ACCEPT="application/json", HTTP_IF_NONE_MATCH=dicom_json).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "accept", ['multipart/related; type="application/dicom+xml"', "text/html", "application/dicom"]
)
def test_it_refuses_metadata_formats_it_does_not_produce(api: Client, two_series: dict[str, Any], accept: str) -> None:
    response = api.get(f"/dicom-web/studies/{two_series['spec'].study_uid}/metadata", HTTP_ACCEPT=accept)
    assert response.status_code == 406


@pytest.mark.django_db
def test_it_answers_404_for_unknown_resources(api: Client, two_series: dict[str, Any]) -> None:
    study = two_series["spec"].study_uid
    for url in (
        "/dicom-web/studies/1.2.3.4/metadata",
        f"/dicom-web/studies/{study}/series/1.2.3.4/metadata",
        f"/dicom-web/studies/{study}/series/2.25.1001/instances/1.2.3.4/metadata",
        "/dicom-web/studies/1.2.3.4/series/2.25.1001/metadata",
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert api.get(url, HTTP_IF_NONE_MATCH='"x"').status_code == 404


@pytest.mark.django_db
def test_it_allows_only_get_and_head_on_metadata(api: Client, two_series: dict[str, Any]) -> None:
    url = f"/dicom-web/studies/{two_series['spec'].study_uid}/metadata"
    assert api.post(url).status_code == 405
    head = api.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head["Content-Length"]) == len(api.get(url).content)


@pytest.mark.django_db
def test_metadata_views_are_audited(api: Client, two_series: dict[str, Any]) -> None:
    spec = two_series["spec"]
    api.get(f"/dicom-web/studies/{spec.study_uid}/series/2.25.1002/metadata")
    event = AuditEvent.objects.get(action="view")
    assert (event.study_instance_uid, event.patient_id, event.detail) == (
        spec.study_uid,
        spec.patient_id,
        {"level": "series"},
    )


@pytest.mark.django_db
def test_series_metadata_costs_one_query_besides_auth_and_audit(
    api: Client, django_assert_max_num_queries: Any
) -> None:
    spec = StudySpec()
    parts = make_series(spec, "CT", count=50)
    assert stow(api, parts).status_code == 200
    series = pydicom.dcmread(io.BytesIO(parts[0])).SeriesInstanceUID
    url = f"/dicom-web/studies/{spec.study_uid}/series/{series}/metadata"
    # token, metadata, audit (savepoint, head, insert, update, release), the last access (once an hour per study)
    with django_assert_max_num_queries(8):
        response = api.get(url)
    assert len(json.loads(response.content)) == 50
    with django_assert_max_num_queries(2):  # token, the ETag query
        assert api.get(url, HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


@pytest.mark.django_db
def test_metadata_of_many_syntaxes_is_valid_json(api: Client) -> None:
    for raw in (make_instance(StudySpec(), "US", frames=3), make_instance(StudySpec(), "MR")):
        obj = store(api, raw)
        [item] = api.get(obj.url + "/metadata").json()
        assert item["0020000D"]["Value"] == [obj.study]
