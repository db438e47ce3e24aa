"""The working-hours window, the pacing of requests and the projected finish (pure functions)."""

from __future__ import annotations

from datetime import datetime, time

import pytest

from migration.schedule import Pacer, Window, finish_after


def at(hour: int, minute: int = 0, day: int = 7) -> datetime:
    return datetime(2026, 12, day, hour, minute)


def test_a_window_within_a_day_contains_its_start_and_not_its_end() -> None:
    window = Window.parse("08:30-17:00")
    assert window == Window(time(8, 30), time(17, 0)) and str(window) == "08:30-17:00"
    assert [window.contains(at(h, m)) for h, m in ((8, 29), (8, 30), (16, 59), (17, 0))] == [False, True, True, False]


def test_a_window_past_midnight_wraps() -> None:
    window = Window.parse("20:00-06:00")
    assert [window.contains(at(h)) for h in (19, 20, 23, 0, 5, 6, 12)] == [False, True, True, True, True, False, False]
    assert window.next_start(at(12)) == at(20)
    assert window.next_start(at(21)) == at(21)
    assert window.end_after(at(21)) == at(6, day=8)


def test_outside_a_daytime_window_the_next_start_is_tomorrow_after_it_closed() -> None:
    assert Window.parse("08:00-09:00").next_start(at(10)) == at(8, day=8)


@pytest.mark.parametrize("text", ["8:00-9:00", "24:00-06:00", "20:00", "20:00-06:60", "10:00-10:00", "a-b"])
def test_a_malformed_or_empty_window_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        Window.parse(text)


def test_the_projected_finish_counts_only_working_hours() -> None:
    assert finish_after(at(12), 3600, None) == at(13)
    night = Window.parse("20:00-06:00")  # ten hours a night
    assert finish_after(at(12), 3600, night) == at(21)
    assert finish_after(at(12), 15 * 3600, night) == at(1, day=9)  # ten hours the first night, five the next


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_holds_the_average_rate_across_batches() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    assert pacer.batch_size(200) == 50  # five seconds' worth
    for _ in range(4):
        assert pacer.wait(20)
    assert clock.now == pytest.approx(6.0)  # 60 instances before the fourth batch: 6 s at 10/s


def test_the_pacer_stops_waiting_when_told_to_stop() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep)
    assert pacer.wait(10)
    assert not pacer.wait(1, stop=lambda: clock.now >= 3)
    assert clock.now == 3


def test_without_a_rate_limit_the_pacer_never_waits() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock=clock, sleep=clock.sleep)
    assert all(pacer.wait(1000) for _ in range(5)) and clock.slept == [] and pacer.batch_size(200) == 200
    with pytest.raises(ValueError):
        Pacer(0)
