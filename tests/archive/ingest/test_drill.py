"""``manage.py readiness_drill``: delete a non-production study to the trash, recover it, prove nothing changed."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest import drill
from archive.models import Instance, LegalHold, RetentionPolicy, Study, TrashEntry
from audit.models import AuditEvent
from tests.conftest import stow

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("readiness_drill", *args, stdout=out)
    return out.getvalue()


def test_the_drill_stores_its_own_study_then_passes_and_reuses_it(isolated_storage: Any) -> None:
    RetentionPolicy.objects.create(name="every study ten years", basis="receipt", years=10)
    out = run()
    uid = Study.objects.get().study_instance_uid
    assert f"readiness drill on {uid} (stored for the drill)" in out
    assert "ok  hidden from every read while in the trash" in out
    assert "readiness drill passed: 3 instances identical" in out
    assert Study.objects.get().trashed_at is None and not TrashEntry.objects.exists()
    assert Study.objects.get().patient.patient_id.startswith("DRILL-")
    again = run()
    assert f"readiness drill on {uid}\n" in again and Study.objects.count() == 1
    events = AuditEvent.objects.filter(action="readiness-drill")
    assert [e.outcome for e in events] == ["success", "success"] and events[0].detail["instances"] == 3
    assert AuditEvent.objects.filter(action="restore", actor="readiness drill").count() == 2


def test_the_drill_runs_on_a_named_non_production_study(admin_client_token: Client) -> None:
    spec = StudySpec(patient_id="DRILL-PHANTOM")
    assert stow(admin_client_token, make_series(spec, "MR", count=2)).status_code == 200
    assert "passed: 2 instances identical" in run("--study", spec.study_uid)


def test_the_drill_never_touches_a_clinical_study(ct_study: dict[str, Any]) -> None:
    with pytest.raises(CommandError, match="not a non-production study"):
        run("--study", ct_study["spec"].study_uid)
    assert Study.objects.get().trashed_at is None
    assert AuditEvent.objects.get(action="readiness-drill").outcome == "failed"


@pytest.mark.parametrize("uid,message", [("1.2.x", "not a valid Study Instance UID"), ("1.2.3.4", "no such study")])
def test_bad_study_uids_are_a_clear_error(uid: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("--study", uid)


def test_a_legal_hold_on_the_drill_study_fails_the_drill_saying_why() -> None:
    run()
    LegalHold.objects.create(patient_id=Study.objects.get().patient.patient_id, reason="audit", placed_by="x")
    with pytest.raises(CommandError, match="could not be deleted to the trash: A legal hold"):
        run()


def test_a_changed_timestamp_fails_the_drill_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    real = drill.run_drill

    def touched(study_uid: str | None = None, between: Any = None) -> drill.DrillReport:
        def bump(study: Study) -> None:
            Instance.objects.filter(series__study=study).update(created_at=timezone.now())

        return real(study_uid, between=bump)

    monkeypatch.setattr("archive.management.commands.readiness_drill.run_drill", touched)
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"readiness drill FAILED: 3 differences"):
        call_command("readiness_drill", stdout=out)
    assert out.getvalue().count("DIFFERENT  instance ") == 3 and ": created_at was datetime" in out.getvalue()
    assert AuditEvent.objects.filter(action="readiness-drill").latest("id").outcome == "failed"


def test_changed_bytes_fail_the_drill_loudly(monkeypatch: pytest.MonkeyPatch, isolated_storage: Any) -> None:
    def corrupt(study: Study) -> None:
        inst = Instance.objects.filter(series__study=study).order_by("pk").first()
        assert inst is not None
        target = next(isolated_storage.rglob(inst.storage_key.rsplit("/", 1)[-1]))
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))

    report = drill.run_drill(between=corrupt)
    assert not report.ok
    assert len(report.differences) == 1 and "stored SHA-256 was" in report.differences[0]


def test_an_object_that_no_longer_matches_its_index_fails_before_anything_is_deleted(isolated_storage: Any) -> None:
    run()
    target = sorted(isolated_storage.rglob("*.dcm"))[0]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CommandError, match="FAILED: 1 differences"):
        run()
    assert not TrashEntry.objects.exists() and Study.objects.get().trashed_at is None
