"""The worklist's state machine."""

from __future__ import annotations

import pytest

from portal.worklist.statuses import MOVES, InvalidTransition, Status, allowed, check


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        (Status.SCHEDULED, Status.ARRIVED),
        (Status.ARRIVED, Status.READY),
        (Status.ARRIVED, Status.QC_FAILED),
        (Status.QC_FAILED, Status.READY),
        (Status.READY, Status.IN_PROGRESS),
        (Status.IN_PROGRESS, Status.READY),
        (Status.IN_PROGRESS, Status.PRELIMINARY),
        (Status.PRELIMINARY, Status.FINAL),
        (Status.FINAL, Status.AMENDED),
        (Status.AMENDED, Status.AMENDED),
        (Status.READY, Status.CANCELLED),
    ],
)
def test_the_moves_of_the_reading_day_are_allowed(current: Status, wanted: Status) -> None:
    check(current, wanted)
    assert allowed(current, wanted)


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        (Status.ARRIVED, Status.IN_PROGRESS),
        (Status.SCHEDULED, Status.READY),
        (Status.QC_FAILED, Status.IN_PROGRESS),
        (Status.FINAL, Status.IN_PROGRESS),
        (Status.FINAL, Status.CANCELLED),
        (Status.CANCELLED, Status.READY),
        (Status.READY, Status.FINAL),
    ],
)
def test_a_move_the_machine_does_not_know_is_refused_by_name(current: Status, wanted: Status) -> None:
    with pytest.raises(InvalidTransition) as refused:
        check(current, wanted)
    assert str(refused.value) == f"a study cannot go from {current.label} to {wanted.label}"


def test_every_status_has_its_moves_and_a_cancelled_study_is_done() -> None:
    assert set(MOVES) == set(Status)
    assert MOVES[Status.CANCELLED] == frozenset()
    assert all(Status.CANCELLED not in MOVES[s] for s in (Status.FINAL, Status.AMENDED))
