"""A deleted series goes to the recoverable trash like a study: hidden from every read, restored whole, purged late.

The study holds a CT series (2 instances, the one deleted) and an MR series (1).
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any
from unittest import mock

import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.forms.models import model_to_dict
from django.test import Client
from django.utils import timezone

from archive.dicom.synthetic import new_uid
from archive.ingest import retention
from archive.ingest.reindex import reindex
from archive.ingest.retention import DeletionRefused
from archive.ingest.store import Outcome, store_instances
from archive.ingest.trash import purge, restore_study, trash_series
from archive.models import Instance, LegalHold, Series, Study, TrashEntry
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter
from audit.models import AuditEvent
from tests.archive.ingest.test_trash import JSON, file_hashes, stored_files, study  # noqa: F401
from tests.archive.test_retention_admin import admin_browser  # noqa: F401

pytestmark = pytest.mark.django_db


def snapshot(study_uid: str) -> dict[str, Any]:
    """Every column of the study's row (but its id), its series and its instances."""
    row = Study.objects.get(study_instance_uid=study_uid)
    return {
        "study": {k: v for k, v in model_to_dict(row).items() if k != "id"},
        "created": (row.created_at, row.updated_at),
        "series": sorted((tuple(sorted(model_to_dict(s).items())) for s in Series.objects.filter(study=row)), key=str),
        "instances": sorted(
            (tuple(sorted(model_to_dict(i).items())) for i in Instance.objects.filter(series__study=row)), key=str
        ),
    }


def series_url(s: dict[str, Any]) -> str:
    return f"/dicom-web/studies/{s['uid']}/series/{s['series']}"


def reads_of_the_series(client: Client, s: dict[str, Any]) -> dict[str, int]:
    instance = f"{series_url(s)}/instances/{s['sop']}"
    return {
        "series": client.get(series_url(s), HTTP_ACCEPT='multipart/related; type="application/dicom"').status_code,
        "metadata": client.get(f"{series_url(s)}/metadata", HTTP_ACCEPT=JSON).status_code,
        "instance": client.get(instance, HTTP_ACCEPT='multipart/related; type="application/dicom"').status_code,
        "frames": client.get(f"{instance}/frames/1", HTTP_ACCEPT="application/octet-stream").status_code,
    }


def test_deleting_a_series_puts_it_in_the_trash_hidden_from_every_read_with_its_objects_kept(
    admin_client_token: Client,
    study: dict[str, Any],  # noqa: F811
    isolated_storage: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = file_hashes(isolated_storage)
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client_token.delete(series_url(study)).status_code == 204
    assert file_hashes(isolated_storage) == before  # nothing removed yet
    uid = study["uid"]
    found = admin_client_token.get(f"/dicom-web/studies?StudyInstanceUID={uid}", HTTP_ACCEPT=JSON).json()
    assert found[0]["00201206"]["Value"] == [1] and found[0]["00201208"]["Value"] == [1]  # series, instances
    assert found[0]["00080061"]["Value"] == ["MR"]
    series = admin_client_token.get(f"/dicom-web/studies/{uid}/series", HTTP_ACCEPT=JSON).json()
    assert [s["00080060"]["Value"] for s in series] == [["MR"]]
    assert len(admin_client_token.get(f"/dicom-web/studies/{uid}/instances", HTTP_ACCEPT=JSON).json()) == 1
    assert len(admin_client_token.get(f"/dicom-web/studies/{uid}/metadata", HTTP_ACCEPT=JSON).json()) == 1
    assert set(reads_of_the_series(admin_client_token, study).values()) == {404}
    assert admin_client_token.delete(series_url(study)).status_code == 404  # already in the trash
    entry = TrashEntry.objects.get()
    assert (entry.series_instance_uid, entry.original_study_uid, entry.instances) == (study["series"], uid, 2)
    event = AuditEvent.objects.get(action="delete")
    assert (event.study_instance_uid, event.detail["series"], event.detail["to"]) == (uid, study["series"], "trash")


def test_a_series_comes_back_from_the_trash_with_its_rows_timestamps_and_bytes_as_they_were(
    admin_client_token: Client,
    study: dict[str, Any],  # noqa: F811
    isolated_storage: Any,
) -> None:
    before, hashes = snapshot(study["uid"]), file_hashes(isolated_storage)
    out = io.StringIO()
    call_command("trash", "delete", study["uid"], "--series", study["series"], "--reason", "wrong patient", stdout=out)
    assert f"series {study['series']} of {study['uid']} is in the trash" in out.getvalue()
    assert snapshot(study["uid"]) != before
    listed = io.StringIO()
    call_command("trash", "list", stdout=listed)
    assert f"series {study['series']} of {study['uid']}  trashed" in listed.getvalue()

    call_command("trash", "restore", study["series"], stdout=io.StringIO())
    assert snapshot(study["uid"]) == before
    assert file_hashes(isolated_storage) == hashes
    assert set(reads_of_the_series(admin_client_token, study).values()) == {200}
    answer = admin_client_token.get(f"{series_url(study)}/instances/{study['sop']}", HTTP_ACCEPT="application/dicom")
    assert b"".join(answer.streaming_content) == study["parts"][0]  # type: ignore[attr-defined]
    assert not TrashEntry.objects.exists() and Study.objects.count() == 1  # the holder row is gone
    restored = AuditEvent.objects.get(action="restore")
    assert (restored.study_instance_uid, restored.detail["series"]) == (study["uid"], study["series"])


def test_a_legal_hold_on_the_study_refuses_the_series_deletion_and_keeps_it_in_the_trash_at_purge(
    admin_client_token: Client,
    study: dict[str, Any],  # noqa: F811
    isolated_storage: Any,
) -> None:
    hold = LegalHold.objects.create(study_instance_uid=study["uid"], reason="litigation")
    response = admin_client_token.delete(series_url(study))
    assert response.status_code == 409 and response.json()["reason"] == "legal-hold"
    with pytest.raises(CommandError, match="legal hold"):
        call_command("trash", "delete", study["uid"], "--series", study["series"])
    assert not TrashEntry.objects.exists()
    refused = AuditEvent.objects.filter(action="delete", outcome="denied")
    assert refused.count() == 2 and refused.first().detail["series"] == study["series"]  # type: ignore[union-attr]

    LegalHold.objects.filter(pk=hold.pk).update(released_at=timezone.now(), release_reason="settled")
    trash_series(Series.objects.get(series_instance_uid=study["series"]), actor="test")
    LegalHold.objects.create(patient_id="TRASH-1", reason="a new matter")  # placed while the series waits
    report = purge(older_than=timedelta(0))
    assert report.purged == [] and "legal hold" in report.kept[0][1]
    assert len(stored_files(isolated_storage)) == 3


def test_the_purge_after_the_trash_period_removes_only_the_series(
    study: dict[str, Any],  # noqa: F811
    isolated_storage: Any,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    settings.PACS_TRASH_DAYS = 30
    start = timezone.now()
    entry = trash_series(Series.objects.get(series_instance_uid=study["series"]), actor="test", now=start)
    monkeypatch.setattr(retention, "clock", lambda: start + timedelta(days=29))
    assert purge().purged == []
    monkeypatch.setattr(retention, "clock", lambda: start + timedelta(days=30))
    out = io.StringIO()
    call_command("trash", "purge", stdout=out)
    assert f"purged series {study['series']} of {study['uid']}" in out.getvalue()
    assert len(stored_files(isolated_storage)) == 1
    assert list(Study.objects.values_list("study_instance_uid", "modalities_in_study")) == [(study["uid"], "MR")]
    assert not Series.objects.filter(series_instance_uid=study["series"]).exists()
    purged = AuditEvent.objects.get(action="delete", detail__purged=True)
    assert (purged.study_instance_uid, purged.detail["series"]) == (study["uid"], study["series"])
    with pytest.raises(Exception, match="No such study in the trash"):
        restore_study(entry.study_instance_uid)


def test_the_retention_of_the_study_keeps_its_series_as_it_keeps_the_study(
    study: dict[str, Any],  # noqa: F811
) -> None:
    from archive.models import RetentionPolicy

    RetentionPolicy.objects.create(name="CT ten years", modality="CT", basis="receipt", years=10)
    with pytest.raises(DeletionRefused, match="CT ten years"):
        trash_series(Series.objects.get(series_instance_uid=study["series"]), actor="test")


def test_reindex_wipe_rebuilds_a_series_in_the_trash_still_in_the_trash_and_it_can_be_restored(
    admin_client_token: Client,
    study: dict[str, Any],  # noqa: F811
) -> None:
    before = snapshot(study["uid"])
    trash_series(Series.objects.get(series_instance_uid=study["series"]), actor="test")
    reindex(wipe=True)
    assert set(reads_of_the_series(admin_client_token, study).values()) == {404}
    uid = study["uid"]
    assert len(admin_client_token.get(f"/dicom-web/studies/{uid}/instances", HTTP_ACCEPT=JSON).json()) == 1
    call_command("trash", "restore", study["series"], stdout=io.StringIO())
    assert set(reads_of_the_series(admin_client_token, study).values()) == {200}
    after = snapshot(uid)
    assert (after["study"]["number_of_series"], after["study"]["number_of_instances"]) == (2, 3)
    assert len(after["instances"]) == len(before["instances"])


def test_deleting_the_last_series_puts_the_whole_study_in_the_trash(
    admin_client_token: Client,
    study: dict[str, Any],  # noqa: F811
) -> None:
    mr = Series.objects.exclude(series_instance_uid=study["series"]).get().series_instance_uid
    trash_series(Series.objects.get(series_instance_uid=study["series"]), actor="test")
    entry = trash_series(Series.objects.get(series_instance_uid=mr), actor="test")
    assert entry.series_instance_uid == "" and entry.study_instance_uid == study["uid"]
    restore_study(study["uid"])
    call_command("trash", "restore", study["series"], stdout=io.StringIO())
    assert Series.objects.filter(study__study_instance_uid=study["uid"]).count() == 2


def test_an_administrator_moves_a_series_to_the_trash_and_back_in_the_admin(
    admin_browser: Client,  # noqa: F811
    study: dict[str, Any],  # noqa: F811
) -> None:
    series = Series.objects.get(series_instance_uid=study["series"])
    page = admin_browser.post(
        "/admin/archive/series/", {"action": "move_to_trash", "_selected_action": [str(series.pk)]}, follow=True
    )
    assert b"1 series moved to the trash" in page.content
    entry = TrashEntry.objects.get(series_instance_uid=study["series"])
    assert AuditEvent.objects.get(action="delete").detail["via"] == "admin"
    page = admin_browser.post(
        "/admin/archive/trashentry/", {"action": "restore", "_selected_action": [str(entry.pk)]}, follow=True
    )
    assert page.status_code == 200 and not TrashEntry.objects.exists()
    assert Series.objects.get(pk=series.pk).study.study_instance_uid == study["uid"]


def test_a_series_is_not_restored_into_its_study_while_that_study_is_being_purged(
    study: dict[str, Any],  # noqa: F811
    isolated_storage: Any,
) -> None:
    from archive.ingest.trash import TrashError, find_entry, purge_study, trash_study

    trash_series(Series.objects.get(series_instance_uid=study["series"]), actor="test")
    trash_study(Study.objects.get(study_instance_uid=study["uid"]), actor="test")
    # The study's purge began (its objects are going) and was interrupted, or runs right now.
    TrashEntry.objects.filter(study_instance_uid=study["uid"]).update(purging_at=timezone.now())
    holder = find_entry(study["series"])
    assert holder is not None
    with pytest.raises(TrashError, match="being purged"):
        restore_study(holder.study_instance_uid)
    entry = find_entry(study["series"])
    assert entry is not None and Study.objects.filter(study_instance_uid=entry.study_instance_uid).exists()
    purge_study(study["uid"], actor="test")
    # The series is still in the trash, its two objects kept (only the study's MR object went).
    assert Instance.objects.filter(series__series_instance_uid=study["series"]).count() == 2
    assert len(stored_files(isolated_storage)) == 2


def test_a_series_is_not_restored_into_its_study_once_the_study_was_corrected_meanwhile(
    study: dict[str, Any],  # noqa: F811
    isolated_storage: Any,
) -> None:
    from archive.ingest.correct import CorrectionRefused, correct_study
    from archive.ingest.trash import TrashError, find_entry

    trash_series(Series.objects.get(series_instance_uid=study["series"]), actor="test")
    # A correction is refused while a series waits in the trash (archive/ingest/correct.py); one that had
    # checked just before the series went commits all the same: the restore is the last guard.
    with pytest.raises(CorrectionRefused, match="in the trash"):
        correct_study(Study.objects.get(study_instance_uid=study["uid"]), {"PatientID": "RIGHT-1"}, "wrong patient")
    with mock.patch("archive.ingest.correct.check_no_trashed_series"):
        correct_study(Study.objects.get(study_instance_uid=study["uid"]), {"PatientID": "RIGHT-1"}, "wrong patient")
    entry = find_entry(study["series"])
    assert entry is not None
    # Its objects still say TRASH-1: under the corrected study they would mix two patients in one study.
    with pytest.raises(TrashError, match="corrected"):
        restore_study(entry.study_instance_uid)
    assert Series.objects.get(series_instance_uid=study["series"]).study.trashed_at is not None
    assert Study.objects.get(study_instance_uid=study["uid"]).number_of_series == 1


def test_an_instance_sent_to_a_series_in_the_trash_is_refused_saying_the_series_is_in_the_trash(
    study: dict[str, Any],  # noqa: F811
) -> None:
    trash_series(Series.objects.get(series_instance_uid=study["series"]), actor="test")
    late = pydicom.dcmread(io.BytesIO(study["parts"][0]))
    late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = new_uid()
    buffer = io.BytesIO()
    late.save_as(buffer)
    writer = StagingWriter(get_storage("hot"), max_bytes=len(buffer.getvalue()))
    writer.write(buffer.getvalue())
    (result,) = store_instances([writer.finish()])
    assert result.outcome is Outcome.INVALID
    assert "the series is in the trash" in result.detail
    assert not Instance.objects.filter(sop_instance_uid=late.SOPInstanceUID).exists()
