"""The measurements on a known archive: exact objects, bytes and costs; the ingest rate; rules in the projection."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from archive.costs.projection import days
from archive.costs.usage import cost_report
from archive.models import Instance, LifecycleRule, MoveState, Site, TierMove
from tests.archive.costs.conftest import GB, NOW, make_study

pytestmark = pytest.mark.django_db


def test_objects_and_bytes_per_tier_site_and_modality(known_archive: tuple[Site, Site]) -> None:
    report = cost_report(now=NOW)
    tiers = {u.label: (u.objects, u.bytes, u.stored) for u in report.tiers}
    assert tiers == {"hot": (10, 10 * GB // 4, 10 * GB // 4), "cold": (4, GB, GB // 2)}
    sites = {u.label: (u.objects, u.bytes, u.stored) for u in report.sites}
    assert sites == {
        "General (a)": (10, 10 * GB // 4, 6 * GB // 4 + GB // 2),
        f"{known_archive[1].name} (b)": (4, GB, GB),
    }
    modalities = {u.label: (u.objects, u.bytes, u.stored) for u in report.modalities}
    assert modalities == {"CT": (10, 10 * GB // 4, 10 * GB // 4), "MR": (4, GB, GB // 2)}
    # hot 2.5 GB at 0.02, cold 0.5 GB stored at 0.004
    assert report.monthly_now == pytest.approx(2.5 * 0.02 + 0.5 * 0.004, rel=1e-12)
    assert report.monthly_hot_only_now == pytest.approx(3.5 * 0.02, rel=1e-12)
    assert {u.label: u.monthly for u in report.sites}["General (a)"] == pytest.approx(1.5 * 0.02 + 0.5 * 0.004)


def test_the_ingest_rate_is_the_seeds_formula_on_the_trailing_window(known_archive: tuple[Site, Site]) -> None:
    ingest = cost_report(now=NOW, window_days=90).ingest
    # The MR study (100 days old) is outside the 90-day window; five CT studies of 0.5 GB are inside.
    assert (ingest.window_days, ingest.studies, ingest.bytes) == (90, 5, 5 * GB // 2)
    assert ingest.studies_per_day == 5 / 90
    assert ingest.average_study_gb == 0.5
    assert ingest.tb_per_year == pytest.approx(5 / 90 * 0.5 * 365 / 1024, rel=1e-12)
    site_b = cost_report(now=NOW).ingest_of({known_archive[1].pk})
    assert (site_b.studies, site_b.bytes) == (2, GB)


def test_a_young_archive_measures_over_its_own_age_and_today_does_not_count(sites: tuple[Site, Site]) -> None:
    make_study(sites[0], 4)
    make_study(sites[0], 0.1)  # received today: the day is not over
    ingest = cost_report(now=NOW, window_days=90).ingest
    assert (ingest.window_days, ingest.studies, ingest.bytes) == (4, 1, GB // 2)


def test_a_rule_in_force_changes_the_projection_exactly(known_archive: tuple[Site, Site]) -> None:
    rate = 2.5 / 90  # GB of CT a day over the window; no MR arrived in it
    without = cost_report(now=NOW).model().monthly_storage(days(12))
    assert without == pytest.approx((2.5 + rate * 365) * 0.02 + 0.5 * 0.004, rel=1e-12)

    LifecycleRule.objects.create(name="CT to cold", after_days=30, modality="CT", target_tier="cold")
    with_rule = cost_report(now=NOW).model().monthly_storage(days(12))
    # CT younger than 30 days stays hot; all older CT, and the CT held today, is on cold at the measured half size.
    expected = rate * 30 * 0.02 + (2.5 + rate * 335) * 0.5 * 0.004 + 0.5 * 0.004
    assert with_rule == pytest.approx(expected, rel=1e-12)
    assert with_rule < without

    LifecycleRule.objects.update(enabled=False)
    assert cost_report(now=NOW).model().monthly_storage(days(12)) == pytest.approx(without, rel=1e-12)


def test_moves_in_flight_progress_and_throughput_come_from_the_ledger(known_archive: tuple[Site, Site]) -> None:
    hot = list(Instance.objects.filter(tier="hot").order_by("id"))
    for i, instance in enumerate(hot[:6]):
        state = [MoveState.PENDING, MoveState.COPIED, MoveState.DONE, MoveState.DONE, MoveState.SWITCHED][i % 5]
        switched = NOW - timedelta(minutes=10) if state in (MoveState.DONE, MoveState.SWITCHED) else None
        TierMove.objects.create(
            instance=instance,
            batch="b",
            source_tier="hot",
            source_key=instance.storage_key,
            target_tier="cold",
            state=state,
            size=instance.size,
            switched_at=switched,
        )
    moves = cost_report(now=NOW).moves
    # pending, copied, done, done, switched, pending
    assert moves.in_flight_objects == 3
    assert moves.in_flight_bytes == 3 * GB // 4
    assert moves.in_flight == [{"source": "hot", "target": "cold", "objects": 3, "bytes": 3 * GB // 4}]
    assert moves.done_objects == 3
    assert moves.progress == 0.5
    assert (moves.last_hour_objects, moves.last_hour_bytes) == (3, 3 * GB // 4)
    assert moves.throughput_mb_s == pytest.approx(3 * GB / 4 / 1e6 / 3600)


def test_the_report_takes_the_same_queries_whatever_the_archive_size(known_archive: tuple[Site, Site]) -> None:
    LifecycleRule.objects.create(name="CT to cold", after_days=30, modality="CT", target_tier="cold")
    with CaptureQueriesContext(connection) as small:
        cost_report(now=NOW)
    for age in range(1, 40):
        make_study(known_archive[age % 2], age, modality=["CT", "MR", "US"][age % 3], instances=5)
    with CaptureQueriesContext(connection) as large:
        cost_report(now=NOW)
    assert len(small) == len(large) == 7


def test_tiers_status_prints_the_same_figures(
    known_archive: tuple[Site, Site], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    call_command("tiers", "status")
    out = capsys.readouterr().out
    assert "hot          filesystem  immediate          10      2.500      2.500       0.05\n" in out
    assert "cold         zstd        immediate           4      1.000      0.500       0.00\n" in out
    assert "moves: pending 0, copied 0, verified 0, switched 0, done 0, failed 0\n" in out
    assert "ingest over 90 days: 0.06 studies/day × 0.500 GB × 365 / 1024 ≈ 0.010 TB/year\n" in out
    in_12 = cost_report(now=NOW).model().monthly_storage(days(12))
    assert f"monthly storage cost: now 0.05, in 12 months {in_12:.2f}," in out


def test_a_series_in_the_trash_is_no_extra_study_received(sites: tuple[Site, Site]) -> None:
    from archive.ingest.trash import trash_series
    from archive.models import Series
    from tests.archive.costs.conftest import uid

    study = make_study(sites[0], 4)
    second = Series.objects.create(series_instance_uid=uid(), study=study, modality="CT")
    Instance.objects.filter(pk=Instance.objects.filter(series__study=study).first().pk).update(series=second)  # type: ignore[union-attr]
    trash_series(second, actor="test")  # its rows now sit under a holder study (in the trash)
    ingest = cost_report(now=NOW, window_days=90).ingest
    assert (ingest.studies, ingest.bytes) == (1, GB // 2)  # its bytes are still held: one study received
