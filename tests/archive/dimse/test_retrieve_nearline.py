"""C-GET and C-MOVE of instances that must be restored first: the online ones are sent, a restore starts for the rest.

Jane's MR instance lives on ``vault``, a folder tier that needs a restore
(NEARLINE, see :mod:`tests.archive.nearline`); her two CT instances are on
the hot tier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from archive.dimse.listener import DicomListener
from archive.models import Instance, Restore, RestoreState
from audit.models import AuditEvent
from tests.archive.dimse.conftest import wait_idle
from tests.archive.dimse.test_find import JANE
from tests.archive.dimse.test_get import c_get
from tests.archive.dimse.test_move import STUDY, archive, c_move, received, storescp  # noqa: F401
from tests.archive.nearline import declare_tiers, move_to, restore_until_done

pytestmark = pytest.mark.django_db(transaction=True)

MR_SERIES = "1.2.3.100.2"


@pytest.fixture
def nearline(archive: dict[str, Any], settings: Any, tmp_path: Path) -> Instance:  # noqa: F811
    """Jane's MR instance, moved to the NEARLINE ``vault`` tier."""
    declare_tiers(settings, tmp_path / "tiers")
    rows = Instance.objects.filter(series__series_instance_uid=MR_SERIES)
    move_to(rows, "vault")
    row = rows.get()
    assert row.availability == "NEARLINE"
    return row


def test_a_c_get_sends_the_online_instances_fails_the_nearline_one_with_b000_and_starts_its_restore(
    listener: DicomListener, nearline: Instance
) -> None:
    received_sets, responses = c_get(listener.port, "WS1", STUDY)
    assert sorted(ds.Modality for ds in received_sets) == ["CT", "CT"]
    final, identifier = responses[-1]
    assert int(final.Status) == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert identifier.FailedSOPInstanceUIDList == nearline.sop_instance_uid
    assert final.ErrorComment == "1 restoring, retry in about 5 min"
    (restore,) = Restore.objects.all()
    assert (restore.instance_id, restore.reason, restore.state) == (nearline.pk, "retrieve", RestoreState.REQUESTED)
    wait_idle(listener)
    (audited,) = AuditEvent.objects.filter(action="restore")
    assert (audited.actor, audited.study_instance_uid, audited.detail["reason"]) == (
        "AE:WS1",
        JANE.study_uid,
        "retrieve",
    )
    (result,) = AuditEvent.objects.filter(action="retrieve_result")
    assert (result.outcome, result.detail["status"], result.detail["failed"]) == ("warning", "0xB000", 1)
    assert result.detail["not_online"] == {"restoring": 1, "offline": 0}

    # Asking again while it restores starts nothing more; once it is back, the same C-GET sends all three.
    c_get(listener.port, "WS1", STUDY)
    assert Restore.objects.count() == 1
    restore_until_done()
    received_sets, responses = c_get(listener.port, "WS1", STUDY)
    assert sorted(ds.Modality for ds in received_sets) == ["CT", "CT", "MR"]
    assert int(responses[-1][0].Status) == 0x0000


def test_a_c_get_of_only_nearline_instances_fails_with_a702_and_says_a_restore_started(
    listener: DicomListener, nearline: Instance
) -> None:
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": JANE.study_uid, "SeriesInstanceUID": MR_SERIES}
    received_sets, responses = c_get(listener.port, "WS1", keys)
    assert received_sets == []
    final, identifier = responses[-1]
    assert [int(r.Status) for r, _ in responses] == [0xA702]
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 1)
    assert identifier.FailedSOPInstanceUIDList == nearline.sop_instance_uid
    assert "restoring, retry in about" in final.ErrorComment
    assert Restore.objects.filter(instance=nearline).exists()


def test_a_c_move_sends_the_online_instances_and_starts_the_restore_of_the_nearline_one(
    listener: DicomListener,
    archive: dict[str, Any],  # noqa: F811
    nearline: Instance,
) -> None:
    responses = c_move(listener.port, "WS1", "STORESCP", STUDY)
    final, identifier = responses[-1]
    assert int(final.Status) == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert identifier is not None and identifier.FailedSOPInstanceUIDList == nearline.sop_instance_uid
    assert final.ErrorComment == "1 restoring, retry in about 5 min"
    assert len(received(archive["out"], expected=2)) == 2
    assert Restore.objects.get().reason == "retrieve"

    restore_until_done()
    responses = c_move(listener.port, "WS1", "STORESCP", STUDY)
    assert int(responses[-1][0].Status) == 0x0000
    assert nearline.sop_instance_uid in received(archive["out"], expected=3)


def test_a_c_move_of_only_nearline_instances_fails_with_a702_without_opening_a_sub_association(
    listener: DicomListener,
    archive: dict[str, Any],  # noqa: F811
    nearline: Instance,
) -> None:
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": JANE.study_uid, "SeriesInstanceUID": MR_SERIES}
    responses = c_move(listener.port, "WS1", "STORESCP", keys)
    assert [int(r.Status) for r, _ in responses] == [0xA702]
    assert "restoring" in responses[-1][0].ErrorComment
    assert received(archive["out"], timeout=0.5) == {}


def test_a_c_get_of_an_offline_instance_fails_it_and_starts_no_restore(
    listener: DicomListener,
    archive: dict[str, Any],  # noqa: F811
    settings: Any,
    tmp_path: Path,
) -> None:
    declare_tiers(settings, tmp_path / "tiers")
    rows = Instance.objects.filter(series__series_instance_uid=MR_SERIES)
    move_to(rows, "shelf")
    offline = rows.get()
    assert offline.availability == "OFFLINE"
    received_sets, responses = c_get(listener.port, "WS1", STUDY)
    assert len(received_sets) == 2
    final, identifier = responses[-1]
    assert int(final.Status) == 0xB000
    assert identifier.FailedSOPInstanceUIDList == offline.sop_instance_uid
    assert final.ErrorComment == "1 offline (ask an admin)"
    assert not Restore.objects.exists()
