"""Conditional requests on every cacheable DICOMweb resource: one rule, 304 cacheable, 412 not."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

# (path under the instance or the study, Accept)
RESOURCES = [
    ("{i}", "application/dicom"),
    ("{i}/metadata", "application/dicom+json"),
    ("{se}/metadata", "application/dicom+json"),
    ("{st}/metadata", "application/dicom+json"),
    ("{i}/frames/1", "application/octet-stream"),
    ("{i}/frames/1", 'multipart/related; type="application/octet-stream"'),
    ("{i}/rendered", "image/jpeg"),
    ("{i}/thumbnail", "image/jpeg"),
    ("{st}/thumbnail", "image/jpeg"),
    ("{i}/bulkdata/7FE00010", "application/octet-stream"),
]


def url(study: dict[str, Any], template: str) -> str:
    st = f"/dicom-web/studies/{study['study']}"
    se = f"{st}/series/{study['series']}"
    return template.format(st=st, se=se, i=f"{se}/instances/{study['instance']}")


@pytest.mark.django_db
@pytest.mark.parametrize("template, accept", RESOURCES)
def test_a_failed_if_match_is_a_412_that_no_cache_may_keep(
    site_a_study: dict[str, Any], owner_client: Client, template: str, accept: str
) -> None:
    response = owner_client.get(url(site_a_study, template), HTTP_ACCEPT=accept, HTTP_IF_MATCH='"not-this-one"')
    assert response.status_code == 412
    assert "ETag" not in response
    assert "max-age" not in response.get("Cache-Control", "")
    assert "immutable" not in response.get("Cache-Control", "")


@pytest.mark.django_db
@pytest.mark.parametrize("template, accept", RESOURCES)
def test_a_matching_if_match_gets_the_resource(
    site_a_study: dict[str, Any], owner_client: Client, template: str, accept: str
) -> None:
    first = owner_client.get(url(site_a_study, template), HTTP_ACCEPT=accept)
    assert first.status_code == 200
    again = owner_client.get(url(site_a_study, template), HTTP_ACCEPT=accept, HTTP_IF_MATCH=first["ETag"])
    assert again.status_code == 200
    assert again["ETag"] == first["ETag"]


@pytest.mark.django_db
@pytest.mark.parametrize("template, accept", RESOURCES)
def test_a_matching_if_none_match_is_a_304_with_the_etag_and_caching_of_the_resource(
    site_a_study: dict[str, Any], owner_client: Client, template: str, accept: str
) -> None:
    first = owner_client.get(url(site_a_study, template), HTTP_ACCEPT=accept)
    assert first.status_code == 200
    again = owner_client.get(url(site_a_study, template), HTTP_ACCEPT=accept, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert again["ETag"] == first["ETag"]
    assert again["Cache-Control"] == first["Cache-Control"]


@pytest.mark.django_db
def test_a_failed_if_match_on_the_frame_fast_path_is_a_412_that_no_cache_may_keep(
    site_a_study: dict[str, Any], owner: Any
) -> None:
    from tests.conftest import bearer_client

    response = bearer_client(owner).get(
        url(site_a_study, "{i}/frames/1"), HTTP_ACCEPT="application/octet-stream", HTTP_IF_MATCH='"not-this-one"'
    )
    assert response.status_code == 412
    assert "ETag" not in response
    assert "immutable" not in response.get("Cache-Control", "")
