"""DELETE of a study or series (to the trash): administrators only, rows and objects together."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import Instance, Series, Study
from audit.models import AuditEvent
from tests.conftest import stow


def stored_files(root) -> list:
    return [p for p in root.rglob("*.dcm") if p.is_file()]


@pytest.fixture
def two_series(admin_client_token: Client) -> dict[str, Any]:
    spec = StudySpec(patient_id="DEL-1")
    ct, mr = make_series(spec, "CT", count=2), make_series(spec, "MR", count=3)
    assert stow(admin_client_token, ct + mr).status_code == 200
    ct_series = Series.objects.get(modality="CT").series_instance_uid
    return {"study": spec.study_uid, "ct": ct_series}


@pytest.mark.django_db
def test_an_administrator_deletes_a_study_to_the_trash_and_the_purge_removes_its_objects(
    admin_client_token: Client, two_series: dict[str, Any], isolated_storage, django_capture_on_commit_callbacks
) -> None:
    from datetime import timedelta

    from archive.ingest.trash import purge

    assert len(stored_files(isolated_storage)) == 5
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_token.delete(f"/dicom-web/studies/{two_series['study']}")
    assert response.status_code == 204
    assert Study.objects.get().trashed_at is not None and len(stored_files(isolated_storage)) == 5
    event = AuditEvent.objects.filter(action="delete").get()
    assert event.study_instance_uid == two_series["study"] and event.detail["instances"] == 5
    assert event.detail["to"] == "trash"
    assert admin_client_token.get(f"/dicom-web/studies/{two_series['study']}/metadata").status_code == 404
    assert admin_client_token.delete(f"/dicom-web/studies/{two_series['study']}").status_code == 404
    assert purge(older_than=timedelta(0)).purged == [two_series["study"]]
    assert not Study.objects.exists() and not Instance.objects.exists()
    assert stored_files(isolated_storage) == []


@pytest.mark.django_db
def test_deleting_a_series_keeps_the_rest_of_the_study_consistent(
    admin_client_token: Client, two_series: dict[str, Any], isolated_storage, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        url = f"/dicom-web/studies/{two_series['study']}/series/{two_series['ct']}"
        response = admin_client_token.delete(url)
    assert response.status_code == 204
    study = Study.objects.get(trashed_at__isnull=True)
    assert (study.number_of_series, study.number_of_instances, study.modalities_in_study) == (1, 3, "MR")
    assert len(stored_files(isolated_storage)) == 5  # in the trash: the objects stay until the purge


@pytest.mark.django_db
def test_deleting_the_last_series_puts_the_study_in_the_trash(
    admin_client_token: Client, upload_client: Client
) -> None:
    spec = StudySpec()
    assert stow(admin_client_token, make_series(spec, "CT", count=1)).status_code == 200
    series = Series.objects.get().series_instance_uid
    assert admin_client_token.delete(f"/dicom-web/studies/{spec.study_uid}/series/{series}").status_code == 204
    assert Study.objects.get().trashed_at is not None


@pytest.mark.django_db
def test_a_user_without_the_delete_permission_is_refused(
    upload_client: Client, ct_study: dict[str, Any], isolated_storage
) -> None:
    response = upload_client.delete(f"/dicom-web/studies/{ct_study['spec'].study_uid}")
    assert response.status_code == 403
    assert Instance.objects.count() == 3 and len(stored_files(isolated_storage)) == 3
    assert AuditEvent.objects.filter(action="delete", outcome="denied").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path,status",
    [
        ("/dicom-web/studies/1.2.3.999", 404),
        ("/dicom-web/studies/1.2.x", 400),
        ("/dicom-web/studies/1.2.3/series/1.2.3.4", 404),
        ("/dicom-web/studies/1.2.3/series/abc", 400),
    ],
)
def test_deleting_what_does_not_exist_is_a_clear_4xx(admin_client_token: Client, path: str, status: int) -> None:
    assert admin_client_token.delete(path).status_code == status


@pytest.mark.django_db
def test_anonymous_deletes_are_refused(client: Client, ct_study: dict[str, Any]) -> None:
    assert client.delete(f"/dicom-web/studies/{ct_study['spec'].study_uid}").status_code == 401
    assert Instance.objects.count() == 3
