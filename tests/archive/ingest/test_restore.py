"""Restores from a GLACIER tier (moto in server mode): availability in QIDO, 503 + Retry-After, the restore, resuming.

The archive tier is an S3 tier in moto's bucket with storage class GLACIER;
moto's restores stay under way for a few reads of the object (its state
manager, see :func:`tests.archive.storage.test_s3_restore.restore_takes`),
so the worker is seen polling ``ongoing-request="true"`` before the copy back.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, RequestFactory

from archive.dicom.synthetic import StudySpec, make_series
from archive.dicomweb.frames import fast_frame
from archive.ingest.mover import STEPS, Mover, plan_moves
from archive.ingest.restore import advance_restores, restore_task_waiting, run_restores
from archive.models import Instance, Restore, RestoreState, TierMove
from archive.storage import registry
from archive.storage.registry import get_storage
from audit.models import AuditEvent
from tests.archive.dicomweb.test_wado_retrieve import body_of
from tests.archive.storage.test_s3_restore import archive_config, moto_server, restore_takes  # noqa: F401
from tests.conftest import stow

pytestmark = pytest.mark.django_db


class Crash(BaseException):
    """A simulated kill."""


@pytest.fixture
def glacier(moto_server: dict[str, Any], settings: Any) -> dict[str, Any]:  # noqa: F811
    """An ``archive`` tier in GLACIER (moto) beside the built-in hot tier; restores take two reads."""
    settings.PACS_TIERS = {"archive": archive_config(moto_server)}
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    settings.PACS_TIER_MOVE_LEASE_SECONDS = 0
    settings.PACS_TIER_MOVE_CONCURRENCY = 1
    settings.PACS_TIER_MOVE_BYTES_PER_SECOND = 0
    settings.PACS_PRIORS_COUNT = 0
    settings.PACS_RESTORE_POLL_SECONDS = 0.1
    registry.forget()
    restore_takes(moto_server, 2)
    return moto_server


def archived_study(client: Client, spec: StudySpec | None = None, modality: str = "CT") -> dict[str, Any]:
    """A three-instance study stored through STOW-RS, then moved to the GLACIER tier by the mover."""
    spec = spec or StudySpec(patient_id="PAT-R")
    parts = make_series(spec, modality, count=3)
    assert stow(client, parts).status_code == 200
    instances = Instance.objects.filter(series__study__study_instance_uid=spec.study_uid)
    batch, count = plan_moves(instances, "archive")
    assert count == 3
    report = Mover(batch).run()
    assert report.moved == 3 and not report.failed
    by_sha = {hashlib.sha256(p).hexdigest(): p for p in parts}
    return {"spec": spec, "parts": by_sha, "rows": list(instances.order_by("instance_number"))}


def url(row: Instance) -> str:
    return (
        f"/dicom-web/studies/{row.series.study.study_instance_uid}/series/{row.series.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )


def restore_until_done(passes: int = 10, fault: Callable[[str, TierMove], None] | None = None) -> None:
    for _ in range(passes):
        if not advance_restores(fault=fault).active:
            return
    pytest.fail("the restores did not finish")


def test_objects_moved_to_glacier_are_nearline_and_cannot_be_read_without_a_restore(
    glacier: dict[str, Any], upload_client: Client
) -> None:
    study = archived_study(upload_client)
    rows = study["rows"]
    assert {(r.tier, r.availability) for r in rows} == {("archive", "NEARLINE")}
    head = glacier["client"].head_object(Bucket="pacs-archive", Key=get_storage("archive").prefix + rows[0].storage_key)  # type: ignore[attr-defined]
    assert head["StorageClass"] == "GLACIER"
    assert not get_storage("hot").exists(rows[0].storage_key)


def test_qido_tells_instance_availability_at_instance_series_and_study_level(
    glacier: dict[str, Any], upload_client: Client, reader_client: Client
) -> None:
    spec = StudySpec(patient_id="PAT-Q")
    study = archived_study(upload_client, spec)
    online = make_series(spec, "CT", count=1)  # a second series of the same study, on the hot tier
    assert stow(upload_client, online).status_code == 200
    uid = spec.study_uid
    found = reader_client.get(f"/dicom-web/studies?StudyInstanceUID={uid}", HTTP_ACCEPT="application/dicom+json")
    assert found.json()[0]["00080056"] == {"vr": "CS", "Value": ["NEARLINE"]}
    series = reader_client.get(f"/dicom-web/studies/{uid}/series", HTTP_ACCEPT="application/dicom+json").json()
    by_uid = {s["0020000E"]["Value"][0]: s["00080056"]["Value"][0] for s in series}
    assert by_uid[study["rows"][0].series.series_instance_uid] == "NEARLINE"
    assert sorted(by_uid.values()) == ["NEARLINE", "ONLINE"]
    instances = reader_client.get(f"/dicom-web/studies/{uid}/instances", HTTP_ACCEPT="application/dicom+json").json()
    assert sorted(i["00080056"]["Value"][0] for i in instances) == ["NEARLINE"] * 3 + ["ONLINE"]
    matched = reader_client.get(
        f"/dicom-web/studies/{uid}/instances?InstanceAvailability=NEARLINE", HTTP_ACCEPT="application/dicom+json"
    ).json()
    assert len(matched) == 3
    metadata = reader_client.get(url(study["rows"][0]) + "/metadata", HTTP_ACCEPT="application/dicom+json")
    assert metadata.status_code == 200
    assert metadata.json()[0]["00080056"] == {"vr": "CS", "Value": ["NEARLINE"]}


def test_every_read_of_a_nearline_object_answers_503_with_retry_after_and_starts_one_restore_per_object(
    glacier: dict[str, Any],
    upload_client: Client,
    reader_client: Client,
    reader: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    study = archived_study(upload_client)
    row = study["rows"][0]
    uid = study["spec"].study_uid
    reads = [
        (url(row), "application/dicom"),
        (f"/dicom-web/studies/{uid}", 'multipart/related; type="application/dicom"'),
        (url(row) + "/frames/1", 'multipart/related; type="application/octet-stream"'),
        (url(row) + "/rendered", "image/png"),
        (url(row) + "/thumbnail", "image/png"),
        (f"/dicom-web/studies/{uid}/rendered", 'multipart/related; type="image/png"'),
        (url(row) + "/bulkdata/7FE00010", "application/octet-stream"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        for path, accept in reads:
            response = reader_client.get(path, HTTP_ACCEPT=accept)
            assert response.status_code == 503, (path, response.content)
            assert response["Retry-After"] == "300"  # GLACIER: hours, capped to a polite poll
            assert response["Cache-Control"] == "no-store"
            body = response.json()
            assert body["detail"].startswith("Restoring from archive storage")
            assert "about 300 min" in body["detail"]
            assert body["restoring"]["estimate_seconds"] >= 5 * 3600 - 60
    # One restore per object however many reads asked, and one task queued to carry them out.
    assert Restore.objects.filter(state=RestoreState.REQUESTED).count() == 3
    assert sorted(Restore.objects.values_list("instance_id", flat=True)) == sorted(r.pk for r in study["rows"])
    assert restore_task_waiting()
    assert AuditEvent.objects.filter(action="restore", study_instance_uid=uid).count() == 1  # the whole study, once
    assert AuditEvent.objects.filter(action="restore_wait", study_instance_uid=uid, actor_id=reader.pk).exists()


def test_after_the_restore_the_same_reads_answer_200_with_the_stored_bytes(
    glacier: dict[str, Any], upload_client: Client, reader_client: Client
) -> None:
    study = archived_study(upload_client)
    row = study["rows"][0]
    assert reader_client.get(url(row), HTTP_ACCEPT="application/dicom").status_code == 503
    assert reader_client.get(url(row) + "/frames/1").status_code == 503
    first = advance_restores()
    assert first.requested == 3 and first.ready == 0  # RestoreObject sent: moto says ongoing-request="true"
    assert set(Restore.objects.values_list("state", flat=True)) == {RestoreState.RESTORING}
    restore_until_done()
    assert set(Restore.objects.values_list("state", flat=True)) == {RestoreState.DONE}
    restore = Restore.objects.get(instance=row)
    assert restore.expires_at is not None and restore.ready_at is not None
    assert set(Instance.objects.values_list("tier", "availability")) == {("hot", "ONLINE")}
    response = reader_client.get(url(row), HTTP_ACCEPT="application/dicom")
    assert response.status_code == 200
    assert body_of(response) in study["parts"].values()
    assert reader_client.get(url(row) + "/frames/1").status_code == 200
    # The archive copy stays (PACS_RESTORE_KEEP_SOURCE): a later move back there costs no upload.
    assert get_storage("archive").exists(row.storage_key)


def test_the_task_polls_until_the_restore_is_done(
    glacier: dict[str, Any], upload_client: Client, reader_client: Client
) -> None:
    study = archived_study(upload_client)
    assert reader_client.get(url(study["rows"][0]), HTTP_ACCEPT="application/dicom").status_code == 503
    results = [run_restores.call() for _ in range(6)]
    assert results[0]["requested"] == 3
    assert sum(r["done"] for r in results) == 3
    assert restore_task_waiting()  # the first runs, still polling, queued the next one


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_during_the_copy_back_resumes_and_loses_nothing(
    glacier: dict[str, Any], upload_client: Client, reader_client: Client, step: str
) -> None:
    study = archived_study(upload_client)
    assert reader_client.get(url(study["rows"][0]), HTTP_ACCEPT="application/dicom").status_code == 503

    def crash(at: str, move: TierMove) -> None:
        if at == step:
            raise Crash(at)

    with pytest.raises(Crash):
        restore_until_done(fault=crash)
    restore_until_done()
    assert set(Restore.objects.values_list("state", flat=True)) == {RestoreState.DONE}
    for row in Instance.objects.all():
        assert (row.tier, row.availability) == ("hot", "ONLINE")
        with row.open_stored() as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == row.sha256


def test_the_frame_fast_path_leaves_a_nearline_frame_to_the_full_view(
    glacier: dict[str, Any], upload_client: Client, reader: Any
) -> None:
    from archive.models import ApiToken

    study = archived_study(upload_client)
    row = study["rows"][0]
    _, raw = ApiToken.issue(reader, "fast")
    request = RequestFactory().get(url(row) + "/frames/1", HTTP_AUTHORIZATION=f"Bearer {raw}")
    args = (row.series.study.study_instance_uid, row.series.series_instance_uid, row.sop_instance_uid, "1")
    assert fast_frame(request, *args) is None


def test_tiers_restore_brings_a_study_back(glacier: dict[str, Any], upload_client: Client) -> None:
    study = archived_study(upload_client)
    out = io.StringIO()
    call_command("tiers", "restore", study["spec"].study_uid, "--wait", "30", stdout=out, stderr=io.StringIO())
    assert "restored: every instance is online" in out.getvalue()
    assert set(Instance.objects.values_list("tier", "availability")) == {("hot", "ONLINE")}
    out = io.StringIO()
    call_command("tiers", "restore", study["spec"].study_uid, stdout=out, stderr=io.StringIO())
    assert "nothing to restore" in out.getvalue()
    out = io.StringIO()
    call_command("tiers", "status", stdout=out)
    assert "restores: requested 0, restoring 0, copying 0, done 3, failed 0" in out.getvalue()


def test_restore_requests_are_audited_without_phi_in_the_detail(
    glacier: dict[str, Any], upload_client: Client, reader_client: Client
) -> None:
    study = archived_study(upload_client)
    reader_client.get(url(study["rows"][0]), HTTP_ACCEPT="application/dicom")
    event = AuditEvent.objects.get(action="restore")
    assert event.study_instance_uid == study["spec"].study_uid
    assert json.loads(json.dumps(event.detail)) == {"objects": 3, "reason": "read", "to": "hot"}


def test_lifecycle_rules_leave_a_just_restored_study_where_it_is_for_the_hold_period(
    glacier: dict[str, Any], upload_client: Client, settings: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from archive.ingest.lifecycle import apply_rules
    from archive.models import LifecycleRule

    archived_study(upload_client)
    call_command(
        "tiers",
        "restore",
        *Instance.objects.values_list("series__study__study_instance_uid", flat=True)[:1],
        "--wait",
        "30",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    LifecycleRule.objects.create(name="archive all", after_days=0, target_tier="archive")
    assert [plan.planned for plan in apply_rules()] == [0]  # just restored: held
    assert [plan.planned for plan in apply_rules(now=timezone.now() + timedelta(days=31))] == [3]


def test_an_admin_tier_in_glacier_must_say_it_needs_a_restore(glacier: dict[str, Any]) -> None:
    from django.core.exceptions import ValidationError

    from archive.models import Retrieval, Tier, tier_retrieval

    config = archive_config(glacier)
    fields = {
        k: config[k] for k in ("bucket", "endpoint_url", "region", "prefix", "access_key_file", "secret_key_file")
    }
    tier = Tier(name="deep", backend="s3", storage_class="DEEP_ARCHIVE", retrieval=Retrieval.IMMEDIATE, **fields)
    with pytest.raises(ValidationError, match="need a restore before reads"):
        tier.full_clean()
    tier.retrieval = Retrieval.HOURS
    tier.full_clean()
    tier.save()
    assert tier_retrieval("deep") == Retrieval.HOURS
    assert tier_retrieval("archive") == Retrieval.HOURS  # from the environment: GLACIER says so
    assert tier_retrieval("hot") == Retrieval.IMMEDIATE


def test_a_restore_finishing_while_its_study_is_purged_leaves_no_copy_behind(
    glacier: dict[str, Any], upload_client: Client, reader_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archive.ingest import trash
    from archive.models import Study

    study = archived_study(upload_client)
    row = study["rows"][0]
    assert reader_client.get(url(row), HTTP_ACCEPT="application/dicom").status_code == 503  # restores asked
    advance_restores()  # under way at the tier
    trash.trash_study(Study.objects.get(study_instance_uid=study["spec"].study_uid), actor="test")
    remove = trash.remove_objects

    def restore_task_runs_meanwhile(objects: list[tuple[str, str]]) -> None:
        for _ in range(4):  # the restore task, on its worker, while the purge removes the objects
            advance_restores()
        remove(objects)

    monkeypatch.setattr(trash, "remove_objects", restore_task_runs_meanwhile)
    trash.purge_study(study["spec"].study_uid, actor="test")
    assert not Instance.objects.exists()
    # No copy brought back to the hot tier outlives the purge (sweep would index it back: the study again).
    assert [r.storage_key for r in study["rows"] if get_storage("hot").exists(r.storage_key)] == []


def test_the_purge_of_a_restored_study_removes_the_archive_copy_the_restore_kept(
    glacier: dict[str, Any], upload_client: Client, reader_client: Client
) -> None:
    from archive.ingest import trash
    from archive.models import Study

    study = archived_study(upload_client)
    keys = [r.storage_key for r in study["rows"]]
    assert reader_client.get(url(study["rows"][0]), HTTP_ACCEPT="application/dicom").status_code == 503
    restore_until_done()
    assert all(get_storage("archive").exists(k) for k in keys)  # PACS_RESTORE_KEEP_SOURCE
    trash.trash_study(Study.objects.get(study_instance_uid=study["spec"].study_uid), actor="test")
    trash.purge_study(study["spec"].study_uid, actor="test")
    # Purged means gone from every tier, the archive copy included (nothing points to it any more).
    assert [k for k in keys if get_storage("hot").exists(k) or get_storage("archive").exists(k)] == []
