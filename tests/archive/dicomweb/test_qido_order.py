"""QIDO-RS results and WADO-RS metadata list their attributes in tag order (PS3.18 F.2.2).

Each result merges the level's own attributes with its parents' (a series
search without a study in the path carries the study's too), and every
result object must still be ordered by tag.
"""

from __future__ import annotations

import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from tests.conftest import stow


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/dicom-web/studies?includefield=all",
        "/dicom-web/series?includefield=all",
        "/dicom-web/instances?includefield=all",
        "/dicom-web/studies/{study}/series",
        "/dicom-web/studies/{study}/instances?includefield=00200013",
    ],
)
def test_every_result_lists_its_attributes_in_tag_order(upload_client: Client, url: str) -> None:
    spec = StudySpec(patient_id="ORDER-1", patient_name="ORDER^ALICE")
    assert stow(upload_client, make_series(spec, "CT", count=2)).status_code == 200
    response = upload_client.get(url.format(study=spec.study_uid), HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 200
    results = response.json()
    assert results
    for result in results:
        assert list(result) == sorted(result)


@pytest.mark.django_db
def test_stored_metadata_lists_its_attributes_in_tag_order(upload_client: Client) -> None:
    spec = StudySpec(patient_id="ORDER-2")
    assert stow(upload_client, make_series(spec, "CT", count=1)).status_code == 200
    response = upload_client.get(f"/dicom-web/studies/{spec.study_uid}/metadata", HTTP_ACCEPT="application/dicom+json")
    (instance,) = response.json()
    assert "00080056" in instance and list(instance) == sorted(instance)
