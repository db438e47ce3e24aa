"""Restore estimates learn from measured history: the median of a tier's last restores, else its default.

The clock (:func:`archive.ingest.restore.clock`) is controlled: each restore
is asked for at one time and finished at another, through the real restore
steps on ``vault``, a folder tier that needs a restore (:mod:`tests.archive.nearline`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest import restore
from archive.ingest.restore import estimate_seconds, request_restores, seconds_left
from archive.models import Instance, Restore, RestoreState
from archive.storage import registry
from tests.archive.nearline import declare_tiers, move_to, restore_until_done
from tests.conftest import stow

pytestmark = pytest.mark.django_db

T0 = datetime.fromisoformat("2030-03-01T08:00:00+00:00")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(restore, "clock", c)
    return c


@pytest.fixture
def archived(upload_client: Client, settings: Any, tmp_path: Path) -> StudySpec:
    declare_tiers(settings, tmp_path / "tiers")
    spec = StudySpec(patient_id="PAT-E")
    assert stow(upload_client, make_series(spec, "CT", count=1)).status_code == 200
    move_to(Instance.objects.all(), "vault")
    return spec


def restore_taking(clock: Clock, minutes: float) -> None:
    """One restore of the study through the real steps, asked now and back ``minutes`` later; then archived again."""
    request_restores(Instance.objects.all(), "command")
    clock.now += timedelta(minutes=minutes)
    restore_until_done()
    clock.now += timedelta(hours=1)
    move_to(Instance.objects.all(), "vault")


def test_without_history_the_estimate_is_the_tiers_default(archived: StudySpec, settings: Any) -> None:
    assert estimate_seconds("vault") == 5 * 60  # a "minutes" tier
    settings.PACS_TIERS["vault"] = settings.PACS_TIERS["vault"] | {"restore_minutes": 2}
    registry.forget()
    assert estimate_seconds("vault") == 120
    assert estimate_seconds("hot") == 0


def test_the_estimate_is_the_median_of_the_last_restores_of_the_tier(
    archived: StudySpec, clock: Clock, settings: Any
) -> None:
    for minutes in (10, 20, 12):
        restore_taking(clock, minutes)
    assert estimate_seconds("vault") == 12 * 60
    settings.PACS_RESTORE_ESTIMATE_HISTORY = 2  # only the last two: 20 and 12 min
    assert estimate_seconds("vault") == 16 * 60
    settings.PACS_RESTORE_ESTIMATE_HISTORY = 0
    assert estimate_seconds("vault") == 5 * 60


def test_a_restore_found_settled_without_going_through_the_tier_is_not_history(
    archived: StudySpec, clock: Clock
) -> None:
    restore_taking(clock, 30)
    # Asked for, then the object was moved back by other means: done at once, never ready on the tier.
    request_restores(Instance.objects.all(), "command")
    move_to(Instance.objects.all(), "hot")
    restore_until_done()
    assert Restore.objects.filter(state=RestoreState.DONE, ready_at__isnull=True).count() == 1
    assert estimate_seconds("vault") == 30 * 60


def test_wado_says_the_learned_estimate_and_counts_it_down_as_the_clock_runs(
    archived: StudySpec, clock: Clock, reader_client: Client, settings: Any
) -> None:
    settings.PACS_RESTORE_RETRY_AFTER_MAX = 3600
    for minutes in (40, 50, 45):
        restore_taking(clock, minutes)
    row = Instance.objects.select_related("series__study").get()
    url = (
        f"/dicom-web/studies/{archived.study_uid}/series/{row.series.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )
    response = reader_client.get(url, HTTP_ACCEPT="application/dicom")
    assert response.status_code == 503
    assert response.json()["restoring"] == {"objects": 1, "estimate_seconds": 45 * 60}
    assert "about 45 min" in response.json()["detail"]
    assert response["Retry-After"] == str(45 * 60)

    clock.now += timedelta(minutes=30)
    again = reader_client.get(url, HTTP_ACCEPT="application/dicom")
    assert again.json()["restoring"]["estimate_seconds"] == 15 * 60
    active = Restore.objects.filter(state__in=[RestoreState.REQUESTED, RestoreState.RESTORING])
    assert seconds_left(active, now=clock.now + timedelta(hours=2)) == 60  # overdue: "about a minute", never 0
