"""TM matching compares times, not strings: 0800 is 08:00:00 (PS3.4 C.2.2.2.5, PS3.5 Table 6.2-1).

The index keeps study and series times as HHMMSS[.F…] (archive.dicom.part10.index_time),
so a time stored with fewer components falls inside the ranges it belongs to; the
DICOM JSON returned keeps the value as received. Migration 0005 brings older rows
to the same form.
"""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.test import Client

from archive.dicom.part10 import index_time
from archive.dicom.synthetic import StudySpec, make_series
from archive.models import Series, Study
from tests.conftest import stow


@pytest.mark.parametrize(
    ("stored", "indexed"),
    [
        ("08", "080000"),
        ("0800", "080000"),
        ("080000", "080000"),
        ("080000.25", "080000.25"),
        ("08:00:00", "080000"),
        ("0800.5", "0800.5"),  # a fraction needs whole seconds: not a time, kept as it is
        ("", ""),
        ("late", "late"),
    ],
)
def test_the_index_keeps_times_in_full(stored: str, indexed: str) -> None:
    assert index_time(stored) == indexed


def found(client: Client, query: str) -> set[str]:
    response = client.get(f"/dicom-web/studies?{query}", HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 200, response.content
    return {r["0020000D"]["Value"][0] for r in response.json()}


@pytest.mark.django_db
def test_a_time_stored_without_seconds_matches_the_ranges_it_lies_in(upload_client: Client) -> None:
    spec = StudySpec(patient_id="TIME-1", study_time="0800")
    assert stow(upload_client, make_series(spec, "CT", count=1)).status_code == 200
    uid = spec.study_uid
    for query in (
        "StudyTime=080000-",
        "StudyTime=080000",
        "StudyTime=0800",
        "StudyTime=075959-080001",
        "StudyTime=-0800",
    ):
        assert found(upload_client, query) == {uid}, query
    for query in ("StudyTime=080001-", "StudyTime=-075959"):
        assert found(upload_client, query) == set(), query
    response = upload_client.get(f"/dicom-web/studies?StudyInstanceUID={uid}", HTTP_ACCEPT="application/dicom+json")
    assert response.json()[0]["00080030"]["Value"] == ["0800"]  # returned as received


@pytest.mark.django_db
def test_the_migration_brings_older_rows_to_the_full_form(upload_client: Client) -> None:
    spec = StudySpec(patient_id="TIME-2")
    assert stow(upload_client, make_series(spec, "CT", count=1)).status_code == 200
    Study.objects.update(study_time="0930")
    Series.objects.update(series_time="09:30:15")
    migration = importlib.import_module("archive.migrations.0005_index_times_in_full")
    migration.normalise(apps, None)
    assert list(Study.objects.values_list("study_time", flat=True)) == ["093000"]
    assert list(Series.objects.values_list("series_time", flat=True)) == ["093015"]
