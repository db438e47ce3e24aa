"""gzip applies to DICOM JSON only, and cached metadata still revalidates."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from django.test import Client


@pytest.mark.django_db
def test_series_metadata_is_gzipped_when_the_client_accepts_it(reader_client: Client, ct_study: dict[str, Any]) -> None:
    study = ct_study["spec"].study_uid
    plain = reader_client.get(f"/dicom-web/studies/{study}/metadata", HTTP_ACCEPT="application/dicom+json")
    packed = reader_client.get(
        f"/dicom-web/studies/{study}/metadata", HTTP_ACCEPT="application/dicom+json", HTTP_ACCEPT_ENCODING="gzip"
    )
    assert packed["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed["Vary"]
    assert json.loads(gzip.decompress(packed.content)) == json.loads(plain.content)
    assert len(packed.content) < len(plain.content) / 3
    again = reader_client.get(
        f"/dicom-web/studies/{study}/metadata",
        HTTP_ACCEPT="application/dicom+json",
        HTTP_ACCEPT_ENCODING="gzip",
        HTTP_IF_NONE_MATCH=packed["ETag"],
    )
    assert again.status_code == 304


@pytest.mark.django_db
def test_pages_and_pixels_are_never_gzipped(reader_client: Client, client: Client, ct_study: dict[str, Any]) -> None:
    page = client.get("/accounts/login/", HTTP_ACCEPT_ENCODING="gzip")
    assert page.status_code == 200 and not page.has_header("Content-Encoding")
    study = ct_study["spec"].study_uid
    series = json.loads(reader_client.get(f"/dicom-web/studies/{study}/series").content)[0]["0020000E"]["Value"][0]
    thumb = reader_client.get(f"/dicom-web/studies/{study}/series/{series}/thumbnail", HTTP_ACCEPT_ENCODING="gzip")
    assert thumb.status_code == 200 and not thumb.has_header("Content-Encoding")
