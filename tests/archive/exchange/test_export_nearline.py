"""export_dicom of instances on a tier that needs a restore: it starts the restores, never passes a partial export off.

Two instances of a CT study sit on ``vault`` (NEARLINE, see
:mod:`tests.archive.nearline`), one on the hot tier.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from archive.demo import store_bytes
from archive.dicom.synthetic import StudySpec, make_series
from archive.exchange.export import export_dicom
from archive.ingest.store import Outcome
from archive.models import Instance, Restore, RestoreState
from audit.models import AuditEvent
from tests.archive.exchange.test_export import files_by_uid, stored
from tests.archive.nearline import declare_tiers, move_to

pytestmark = pytest.mark.django_db


@pytest.fixture
def archived(settings: Any, tmp_path: Path) -> dict[str, Any]:
    declare_tiers(settings, tmp_path / "tiers")
    settings.PACS_RESTORE_POLL_SECONDS = 0
    spec = StudySpec(patient_id="PAT-X", patient_name="EXIT^PATH")
    parts = make_series(spec, "CT", count=3)
    for part in parts:
        assert store_bytes(part) is Outcome.STORED
    rows = Instance.objects.order_by("instance_number")
    move_to(rows.filter(instance_number__gt=1), "vault")
    return {"spec": spec, "parts": parts, "nearline": [r.sop_instance_uid for r in rows.filter(instance_number__gt=1)]}


def run(dest: Path, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_dicom", str(dest), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_by_default_it_starts_the_restores_exports_what_is_online_and_exits_3_listing_the_rest(
    archived: dict[str, Any], tmp_path: Path
) -> None:
    dest = tmp_path / "export"
    err = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("export_dicom", str(dest), stdout=io.StringIO(), stderr=err)
    assert raised.value.returncode == 3
    assert "2 instances are not online and were left out (restores under way, about 5 min)" in str(raised.value)
    for uid in archived["nearline"]:
        assert f"not online, left out {uid}: NEARLINE on tier vault: restore under way" in err.getvalue()
    # What was written is complete and correct: the one online instance, listed in the DICOMDIR, byte for byte.
    files = files_by_uid(dest)
    assert list(files) == [uid for uid in stored() if uid not in archived["nearline"]]
    assert {hashlib.sha256(d).hexdigest() for d in files.values()} <= set(stored().values())
    assert sorted(Restore.objects.values_list("reason", "state")) == [("export", RestoreState.REQUESTED)] * 2
    (restore,) = AuditEvent.objects.filter(action="restore")
    assert (restore.actor, restore.study_instance_uid) == ("export_dicom", archived["spec"].study_uid)
    (exported,) = AuditEvent.objects.filter(action="export")
    assert (exported.outcome, exported.detail["instances"], exported.detail["failed"]) == ("partial", 1, 2)


def test_with_wait_it_waits_for_the_restores_with_progress_then_exports_everything_byte_for_byte(
    archived: dict[str, Any], tmp_path: Path
) -> None:
    dest = tmp_path / "export"
    out, err = run(dest, "--wait")
    assert "exported 3 instances" in out
    assert "restoring" in err and "2/2" in err
    assert sorted(files_by_uid(dest).values()) == sorted(archived["parts"])
    assert set(Instance.objects.values_list("availability", flat=True)) == {"ONLINE"}
    assert AuditEvent.objects.get(action="export").outcome == "success"


def test_waiting_stops_at_max_wait_and_the_export_still_says_what_it_left_out(
    archived: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tier never makes the temporary copy readable: the restores stay under way.
    monkeypatch.setattr("archive.exchange.export.advance_restores", lambda fault=None: None)
    report = export_dicom(tmp_path / "export", wait=True, max_wait=0)
    assert report.instances == 1
    assert [uid for uid, _ in report.not_online] == archived["nearline"]
    assert report.restore_seconds_left > 0


@pytest.mark.parametrize("minutes", ["nan", "inf", "-1"])
def test_a_max_wait_that_is_not_a_number_of_minutes_is_refused_before_anything_is_written(
    tmp_path: Path, minutes: str
) -> None:
    with pytest.raises(CommandError, match="--max-wait"):
        call_command("export_dicom", str(tmp_path / "export"), "--wait", "--max-wait", minutes, stdout=io.StringIO())
    assert not (tmp_path / "export").exists()
