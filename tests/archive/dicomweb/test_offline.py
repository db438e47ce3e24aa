"""OFFLINE (0008,0056): a tier whose media need a person. QIDO says so, WADO answers 503 without Retry-After,
nothing is restored by itself, and an administrator's ``tiers restore`` brings it back.

One study: a series on ``shelf`` (OFFLINE), one on ``vault`` (NEARLINE), one on the hot tier
(see :mod:`tests.archive.nearline`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import Instance, Restore, Tier
from audit.models import AuditEvent
from tests.archive.nearline import declare_tiers, move_to
from tests.archive.test_retention_admin import admin_browser  # noqa: F401
from tests.conftest import stow

pytestmark = pytest.mark.django_db

JSON = "application/dicom+json"


@pytest.fixture
def shelved(upload_client: Client, settings: Any, tmp_path: Path) -> dict[str, Any]:
    declare_tiers(settings, tmp_path / "tiers")
    settings.PACS_RESTORE_POLL_SECONDS = 0
    spec = StudySpec(patient_id="PAT-OFF")
    series = {}
    for name, count in (("shelf", 2), ("vault", 1), ("hot", 1)):
        parts = make_series(spec, "CT", count=count)
        assert stow(upload_client, parts).status_code == 200
        rows = Instance.objects.filter(series__study__study_instance_uid=spec.study_uid).exclude(
            series__series_instance_uid__in=list(series.values())
        )
        series[name] = rows.values_list("series__series_instance_uid", flat=True).first()
        if name != "hot":
            move_to(rows, name)
    return {"uid": spec.study_uid, "series": series}


def instance_url(row: Instance) -> str:
    return (
        f"/dicom-web/studies/{row.series.study.study_instance_uid}/series/{row.series.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )


def test_a_tier_whose_media_need_a_person_is_offline_at_instance_series_and_study_level(
    shelved: dict[str, Any], reader_client: Client
) -> None:
    uid = shelved["uid"]
    found = reader_client.get(f"/dicom-web/studies?StudyInstanceUID={uid}", HTTP_ACCEPT=JSON).json()
    assert found[0]["00080056"] == {"vr": "CS", "Value": ["OFFLINE"]}  # the least available of its instances
    series = reader_client.get(f"/dicom-web/studies/{uid}/series", HTTP_ACCEPT=JSON).json()
    by_uid = {s["0020000E"]["Value"][0]: s["00080056"]["Value"][0] for s in series}
    assert by_uid == {
        shelved["series"]["shelf"]: "OFFLINE",
        shelved["series"]["vault"]: "NEARLINE",
        shelved["series"]["hot"]: "ONLINE",
    }
    instances = reader_client.get(f"/dicom-web/studies/{uid}/instances", HTTP_ACCEPT=JSON).json()
    assert sorted(i["00080056"]["Value"][0] for i in instances) == ["NEARLINE", "OFFLINE", "OFFLINE", "ONLINE"]
    offline = reader_client.get(f"/dicom-web/studies/{uid}/instances?InstanceAvailability=OFFLINE", HTTP_ACCEPT=JSON)
    assert len(offline.json()) == 2


def test_reading_an_offline_instance_answers_503_without_retry_after_and_restores_nothing_offline(
    shelved: dict[str, Any], reader_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    row = Instance.objects.filter(availability="OFFLINE").select_related("series__study").first()
    assert row is not None
    with django_capture_on_commit_callbacks(execute=True):
        response = reader_client.get(instance_url(row), HTTP_ACCEPT="application/dicom")
    assert response.status_code == 503
    assert "Retry-After" not in response
    body = response.json()
    assert body["offline"] == {"objects": 1}
    assert "administrator must bring them back" in body["detail"] and "restoring" not in body
    # The study's NEARLINE instance starts restoring (a reader will want it); the OFFLINE ones do not.
    assert list(Restore.objects.values_list("instance__availability", flat=True)) == ["NEARLINE"]
    event = AuditEvent.objects.get(action="restore_wait")
    assert event.detail["offline"] == 1
    # The hot series is read as ever.
    hot = Instance.objects.filter(availability="ONLINE").select_related("series__study").get()
    assert reader_client.get(instance_url(hot), HTTP_ACCEPT="application/dicom").status_code == 200


def test_an_administrator_brings_an_offline_study_back_with_tiers_restore(
    shelved: dict[str, Any], reader_client: Client
) -> None:
    out = io.StringIO()
    call_command("tiers", "restore", shelved["uid"], "--wait", "30", stdout=out, stderr=io.StringIO())
    assert "restored: every instance is online" in out.getvalue()
    assert set(Instance.objects.values_list("tier", "availability")) == {("hot", "ONLINE")}
    rows = Instance.objects.filter(series__series_instance_uid=shelved["series"]["shelf"])
    assert reader_client.get(instance_url(rows.select_related("series__study")[0])).status_code == 200


def test_the_admin_offers_the_offline_retrieval_class(admin_browser: Client) -> None:  # noqa: F811
    Tier.sync_environment()
    page = admin_browser.get(f"/admin/archive/tier/{Tier.objects.get(name='cold').pk}/change/").content.decode()
    assert 'value="manual"' in page and "offline (an administrator brings the media back)" in page
