"""The recoverable trash: a deleted study is hidden from every read, restored whole, purged after its period."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from datetime import timedelta
from typing import Any

import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.utils import timezone

from archive.access import Visibility, site_studies
from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest import retention, trash
from archive.ingest.retention import DeletionRefused
from archive.ingest.trash import TrashError, purge, restore_study, trash_study
from archive.models import Instance, LegalHold, Series, Study, TrashEntry
from archive.storage.registry import get_storage
from audit.models import AuditEvent
from tests.conftest import stow

JSON = "application/dicom+json"


def stored_files(root: Any) -> list[Any]:
    return sorted(p for p in root.rglob("*.dcm") if p.is_file())


def file_hashes(root: Any) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in stored_files(root)}


@pytest.fixture
def study(admin_client_token: Client) -> dict[str, Any]:
    spec = StudySpec(patient_id="TRASH-1", patient_name="TRASH^TOM", accession="ACC-T1")
    parts = make_series(spec, "CT", count=2) + make_series(spec, "MR", count=1)
    assert stow(admin_client_token, parts).status_code == 200
    first = pydicom.dcmread(io.BytesIO(parts[0]))
    return {"uid": spec.study_uid, "series": first.SeriesInstanceUID, "sop": first.SOPInstanceUID, "parts": parts}


def read_paths(s: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    base = f"/dicom-web/studies/{s['uid']}"
    instance = f"{base}/series/{s['series']}/instances/{s['sop']}"
    return [
        ("/dicom-web/studies?PatientID=TRASH-1", {"HTTP_ACCEPT": JSON}),
        (f"/dicom-web/studies/{s['uid']}/series", {"HTTP_ACCEPT": JSON}),
        ("/dicom-web/instances?PatientID=TRASH-1", {"HTTP_ACCEPT": JSON}),
        (f"{base}/metadata", {"HTTP_ACCEPT": JSON}),
        (base, {"HTTP_ACCEPT": 'multipart/related; type="application/dicom"'}),
        (instance, {"HTTP_ACCEPT": 'multipart/related; type="application/dicom"'}),
        (f"{instance}/frames/1", {"HTTP_ACCEPT": 'multipart/related; type="application/octet-stream"'}),
        (f"{instance}/rendered", {"HTTP_ACCEPT": "image/png"}),
        (f"/fhir/ImagingStudy/{s['uid']}", {}),
        ("/fhir/ImagingStudy?patient.identifier=TRASH-1", {}),
    ]


def sees(client: Client, path: str, headers: dict[str, str], s: dict[str, Any]) -> bool:
    response = client.get(path, **headers)
    if response.status_code in (204, 404):
        return False
    assert response.status_code == 200, (path, response.status_code, response.content[:200])
    body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
    if path.startswith("/fhir/ImagingStudy?"):
        return bool(json.loads(body)["total"])
    if "?" in path or path.endswith("/series"):
        return bool(json.loads(body))
    return True


@pytest.mark.django_db
def test_a_study_in_the_trash_is_hidden_from_every_read_and_comes_back_identical(
    admin_client_token: Client, study: dict[str, Any], isolated_storage: Any, general_site: Any
) -> None:
    before_rows = list(Instance.objects.order_by("pk").values())
    before_files = file_hashes(isolated_storage)
    assert all(sees(admin_client_token, p, h, study) for p, h in read_paths(study))
    before_study = Study.objects.values().get()  # after the reads, which set its last access

    assert admin_client_token.delete(f"/dicom-web/studies/{study['uid']}").status_code == 204
    for path, headers in read_paths(study):
        assert not sees(admin_client_token, path, headers, study), path
    assert not Visibility(everything=True).studies().exists()
    assert not site_studies(general_site).exists()
    assert file_hashes(isolated_storage) == before_files  # nothing moved, nothing rewritten

    call_command("trash", "restore", study["uid"])
    assert all(sees(admin_client_token, p, h, study) for p, h in read_paths(study))
    assert list(Instance.objects.order_by("pk").values()) == before_rows
    assert Study.objects.values().get() == before_study  # created_at, updated_at, last_accessed_at as they were
    assert file_hashes(isolated_storage) == before_files
    restored = AuditEvent.objects.get(action="restore")
    assert (restored.study_instance_uid, restored.actor, restored.detail["via"]) == (
        study["uid"],
        "manage.py trash",
        "command",
    )
    assert not TrashEntry.objects.exists()


@pytest.mark.django_db
def test_the_worklist_hides_a_study_in_the_trash(admin_user: Any, study: dict[str, Any]) -> None:
    from portal.worklist.listing import visible_items
    from portal.worklist.models import WorklistItem
    from portal.worklist.rows import refresh

    if not WorklistItem.objects.exists():
        refresh(Study.objects.get().pk)
    assert WorklistItem.objects.count() == 1 and visible_items(admin_user).count() == 1
    trash_study(Study.objects.get(), actor="test")
    assert visible_items(admin_user).count() == 0


@pytest.mark.django_db
def test_the_purge_waits_for_the_period_then_removes_objects_and_rows(
    study: dict[str, Any], isolated_storage: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.PACS_TRASH_DAYS = 30
    start = timezone.now()
    entry = trash_study(Study.objects.get(), actor="test", now=start)
    assert entry.purge_after == start + timedelta(days=30)
    assert purge(now=start + timedelta(days=29, hours=23)).purged == []
    assert len(stored_files(isolated_storage)) == 3 and Instance.objects.count() == 3

    monkeypatch.setattr(retention, "clock", lambda: start + timedelta(days=30))
    out = io.StringIO()
    call_command("trash", "purge", stdout=out)
    assert f"purged {study['uid']}" in out.getvalue() and "1 studies purged (3 instances" in out.getvalue()
    assert stored_files(isolated_storage) == []
    assert not Study.objects.exists() and not Series.objects.exists() and not Instance.objects.exists()
    assert not TrashEntry.objects.exists()
    event = AuditEvent.objects.filter(action="delete", detail__purged=True).get()
    assert (event.study_instance_uid, event.detail["instances"], event.actor) == (study["uid"], 3, "manage.py trash")
    with pytest.raises(CommandError, match="No such study in the trash"):
        call_command("trash", "restore", study["uid"])


@pytest.mark.django_db
def test_purge_older_than_overrides_the_period_and_the_task_does_the_same(
    study: dict[str, Any], isolated_storage: Any
) -> None:
    trash_study(Study.objects.get(), actor="test")
    out = io.StringIO()
    call_command("trash", "purge", "--older-than", "1", stdout=out)
    assert "0 studies purged" in out.getvalue() and Study.objects.exists()
    entry = TrashEntry.objects.get()
    TrashEntry.objects.filter(pk=entry.pk).update(purge_after=timezone.now() - timedelta(seconds=1))
    result = trash.purge_trash.call()
    assert result == {"purged": 1, "kept": 0, "instances": 3, "bytes": result["bytes"]} and result["bytes"] > 0
    assert stored_files(isolated_storage) == []


@pytest.mark.django_db
def test_a_hold_placed_while_in_the_trash_keeps_the_study_from_the_purge(
    study: dict[str, Any], isolated_storage: Any
) -> None:
    trash_study(Study.objects.get(), actor="test")
    LegalHold.objects.create(patient_id="TRASH-1", reason="litigation 42", placed_by="counsel")
    out = io.StringIO()
    call_command("trash", "purge", "--older-than", "0", stdout=out)
    assert f"kept {study['uid']}: A legal hold on the patient" in out.getvalue()
    assert len(stored_files(isolated_storage)) == 3 and Instance.objects.count() == 3
    refused = AuditEvent.objects.get(action="delete", outcome="denied")
    assert refused.detail["refused"] == "legal-hold" and refused.detail["via"] == "purge"
    TrashEntry.objects.update(purge_after=timezone.now() - timedelta(seconds=1))
    assert trash.purge_trash.call()["kept"] == 1
    restore_study(study["uid"], actor="test")  # a held study can always come back


@pytest.mark.django_db
def test_the_list_command_shows_what_is_in_the_trash(study: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("trash", "list", stdout=out)
    assert out.getvalue().strip() == "The trash is empty."
    call_command("trash", "delete", study["uid"], "--reason", "sent to the wrong patient", stdout=io.StringIO())
    out = io.StringIO()
    call_command("trash", "list", stdout=out)
    assert study["uid"] in out.getvalue() and "by manage.py trash" in out.getvalue() and "3 instances" in out.getvalue()
    assert AuditEvent.objects.get(action="delete").detail["reason"] == "sent to the wrong patient"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args,message",
    [
        (["restore", "1.2.x"], "not a valid Study Instance UID"),
        (["delete", "1.2.x"], "not a valid Study Instance UID"),
        (["delete", "1.2.3.4"], "no such study"),
        (["restore", "1.2.3.4"], "No such study in the trash"),
        (["restore", "1." + "2" * 80], "not a valid Study Instance UID"),
        (["purge", "--older-than", "-1"], "0 or more"),
    ],
)
def test_bad_input_to_the_trash_command_is_a_clear_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("trash", *args)


@pytest.mark.django_db
def test_deleting_twice_or_restoring_what_is_not_in_the_trash_is_refused(study: dict[str, Any]) -> None:
    found = Study.objects.get()
    trash_study(found, actor="test")
    with pytest.raises(TrashError):
        trash_study(found, actor="test")
    restore_study(study["uid"], actor="test")
    with pytest.raises(TrashError):
        restore_study(study["uid"], actor="test")


@pytest.mark.django_db
def test_a_study_being_purged_cannot_be_restored_and_a_rerun_finishes_the_purge(
    study: dict[str, Any], isolated_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trash_study(Study.objects.get(), actor="test")

    def crash(objects: Any) -> None:
        raise OSError("power cut between the objects and the rows")

    monkeypatch.setattr(trash, "remove_objects", crash)
    with pytest.raises(OSError):
        trash.purge_study(study["uid"])
    assert TrashEntry.objects.get().purging_at is not None
    with pytest.raises(TrashError, match="being purged"):
        restore_study(study["uid"], actor="test")
    monkeypatch.undo()
    assert purge(older_than=timedelta(0)).purged == [study["uid"]]
    assert stored_files(isolated_storage) == [] and not Instance.objects.exists()


@pytest.mark.django_db
def test_purge_never_removes_objects_of_a_study_whose_rows_are_live_again_even_less_under_a_hold(
    study: dict[str, Any], isolated_storage: Any
) -> None:
    start = timezone.now()
    trash_study(Study.objects.get(), actor="test", now=start)
    Study.objects.update(trashed_at=None)  # rows rebuilt without their trash mark
    LegalHold.objects.create(patient_id="TRASH-1", reason="litigation")
    before = file_hashes(isolated_storage)
    with pytest.raises(TrashError, match="rows are live"):
        trash.purge_study(study["uid"], now=start + timedelta(days=31))
    assert file_hashes(isolated_storage) == before and len(before) == 3
    assert Instance.objects.count() == 3 and TrashEntry.objects.count() == 1
    report = purge(now=start + timedelta(days=31))
    assert report.purged == [] and report.kept[0][0] == study["uid"]
    assert file_hashes(isolated_storage) == before


@pytest.mark.django_db
def test_a_purge_before_the_rows_are_rebuilt_keeps_the_entry_so_the_study_comes_back_in_the_trash(
    study: dict[str, Any], isolated_storage: Any
) -> None:
    from archive.ingest.reindex import reindex, wipe_index

    trash_study(Study.objects.get(), actor="test")
    wipe_index()
    with pytest.raises(TrashError, match="Nothing to purge"):
        trash.purge_study(study["uid"])
    assert len(stored_files(isolated_storage)) == 3 and TrashEntry.objects.count() == 1
    reindex()
    assert Study.objects.get().trashed_at == TrashEntry.objects.get().trashed_at
    assert purge(older_than=timedelta(0)).purged == [study["uid"]]
    assert stored_files(isolated_storage) == [] and not Instance.objects.exists()


@pytest.mark.django_db
def test_a_resumed_purge_asks_the_guard_again_before_removing_anything(
    study: dict[str, Any], isolated_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trash_study(Study.objects.get(), actor="test")

    def crash(objects: Any) -> None:
        raise OSError("power cut between the objects and the rows")

    monkeypatch.setattr(trash, "remove_objects", crash)
    with pytest.raises(OSError):
        trash.purge_study(study["uid"])
    monkeypatch.undo()
    LegalHold.objects.create(patient_id="TRASH-1", reason="litigation")
    with pytest.raises(DeletionRefused):
        trash.purge_study(study["uid"])
    assert len(stored_files(isolated_storage)) == 3 and Instance.objects.count() == 3


@pytest.mark.django_db
def test_reindex_wipe_keeps_a_trashed_study_in_the_trash(study: dict[str, Any]) -> None:
    from archive.ingest.reindex import reindex

    trash_study(Study.objects.get(), actor="test")
    reindex(wipe=True)
    assert Study.objects.get().trashed_at == TrashEntry.objects.get().trashed_at


@pytest.mark.django_db
def test_reindex_marks_a_trashed_study_as_its_rows_are_written_not_only_at_the_end(
    study: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from archive.ingest.reindex import reindex

    trash_study(Study.objects.get(), actor="test")
    seen: list[Any] = []
    real = trash.reapply

    def reapply_at_the_end() -> int:
        seen.extend(Study.objects.values_list("trashed_at", flat=True))
        return real()

    monkeypatch.setattr(trash, "reapply", reapply_at_the_end)
    reindex(wipe=True)
    assert seen == [TrashEntry.objects.get().trashed_at]  # already trashed before reapply ran


@pytest.mark.django_db
def test_an_object_removed_while_reindex_reads_it_gets_no_row(
    study: dict[str, Any], isolated_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archive.ingest.reindex import reindex_tier, wipe_index

    wipe_index()
    monkeypatch.setattr(type(get_storage("hot")), "exists", lambda self, key: False)
    report = reindex_tier("hot")
    assert report.indexed == 0 and len(report.invalid) == 3
    assert all("removed while it was read" in line for line in report.invalid)
    assert not Study.objects.exists() and not Instance.objects.exists()


@pytest.mark.django_db
def test_lifecycle_rules_leave_a_study_in_the_trash_where_it_is(study: dict[str, Any]) -> None:
    from archive.ingest.lifecycle import apply_rules
    from archive.models import LifecycleRule

    LifecycleRule.objects.create(name="all cold", after_days=0, target_tier="cold")
    trash_study(Study.objects.get(), actor="test")
    assert [p.planned for p in apply_rules(now=timezone.now() + timedelta(days=1))] == [0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_deletes_and_restores_leave_one_consistent_state(
    admin_user: Any, isolated_storage: Any, settings: Any
) -> None:
    spec = StudySpec(patient_id="RACE-1")
    from tests.conftest import bearer_client

    assert stow(bearer_client(admin_user), make_series(spec, "CT", count=2)).status_code == 200
    pk = Study.objects.get().pk
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def worker(action: str) -> None:
        try:
            for _ in range(15):
                try:
                    if action == "delete":
                        trash_study(Study.objects.get(pk=pk), actor=action)
                    else:
                        restore_study(spec.study_uid, actor=action)
                    outcomes.append(action)
                except TrashError:
                    outcomes.append("refused")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(a,)) for a in ("delete", "restore", "delete", "restore")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    deletes, restores = outcomes.count("delete"), outcomes.count("restore")
    assert deletes - restores in (0, 1)  # they alternate: never two deletes or two restores in a row
    in_trash = Study.objects.get(pk=pk).trashed_at is not None
    assert in_trash == TrashEntry.objects.exists() == (deletes - restores == 1)
    assert len(stored_files(isolated_storage)) == 2
    assert AuditEvent.objects.filter(action="delete", outcome="success").count() == deletes


@pytest.mark.django_db
def test_retention_refuses_the_trash_path_before_anything_changes(study: dict[str, Any]) -> None:
    from archive.models import RetentionPolicy

    RetentionPolicy.objects.create(name="ten years", basis="receipt", years=10)
    with pytest.raises(DeletionRefused, match="keeps this study until"):
        trash_study(Study.objects.get(), actor="test")
    assert Study.objects.get().trashed_at is None and not TrashEntry.objects.exists()
    assert all(get_storage(i.tier).exists(i.storage_key) for i in Instance.objects.all())


@pytest.mark.django_db
def test_a_stow_into_a_study_in_the_trash_is_refused_so_no_image_is_acknowledged_unseen(
    admin_client_token: Client, study: dict[str, Any]
) -> None:
    trash_study(Study.objects.get(), actor="test")
    spec = StudySpec(patient_id="TRASH-1", study_uid=study["uid"])
    response = stow(admin_client_token, make_series(spec, "CT", count=1))
    assert response.status_code == 409, response.content
    failed = json.loads(response.content)["00081198"]["Value"]
    assert failed[0]["00081197"]["Value"] == [0x0124]
    assert Instance.objects.count() == 3


@pytest.mark.django_db
def test_export_leaves_out_a_study_in_the_trash(study: dict[str, Any], tmp_path: Any) -> None:
    from archive.exchange.export import ExportError, instances_to_export

    assert instances_to_export().count() == 3
    trash_study(Study.objects.get(), actor="test")
    assert instances_to_export().count() == 0
    with pytest.raises(ExportError, match="no such study"):
        instances_to_export([study["uid"]])


@pytest.mark.django_db
def test_an_ehr_launch_treats_a_study_in_the_trash_as_not_arrived(general_site: Any, study: dict[str, Any]) -> None:
    from integrations.ehr.launch import match
    from integrations.models import EhrIntegration

    integration = EhrIntegration.objects.create(name="ehr", client_id="ehr")
    integration.sites.add(general_site)
    assert [s.study_instance_uid for s in match(integration, "TRASH-1", "", (study["uid"],), ()).allowed] == [
        study["uid"]
    ]
    trash_study(Study.objects.get(), actor="test")
    found = match(integration, "TRASH-1", "", (study["uid"],), ())
    assert (found.allowed, found.refused, found.missing_uids) == ([], [], [study["uid"]])
