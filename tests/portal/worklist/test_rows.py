"""Worklist rows kept by ingest: the archive's study_stored signal, from real STOW-RS and C-STORE."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db.models import F
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.dimse.listener import DicomListener
from archive.ingest.signals import study_stored
from archive.models import DicomDevice, Site, Study
from portal.worklist.models import RoutingRule, WorklistItem
from portal.worklist.rows import patient_age, rebuild
from portal.worklist.statuses import Priority, Status
from tests.conftest import stow
from tests.portal.worklist.conftest import store_study


def test_a_study_stored_over_stow_gets_one_row_with_what_the_list_shows(
    upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    row = store_study(
        upload_client,
        django_capture_on_commit_callbacks,
        count=3,
        patient_name="DOE^JANE",
        patient_id="WL-1",
        birth_date="19700301",
        study_date="20240115",
        description="CT CHEST",
        accession="ACC-WL-1",
        sex="F",
    )
    study = Study.objects.get(study_instance_uid=row.study_instance_uid)
    assert (row.study_id, row.status, row.priority) == (study.pk, Status.READY, Priority.ROUTINE)
    assert (row.patient_name, row.patient_id, row.patient_sex, row.patient_age) == ("DOE^JANE", "WL-1", "F", "053Y")
    assert (row.modality, row.description, row.accession_number, row.study_date) == (
        "CT",
        "CT CHEST",
        "ACC-WL-1",
        "20240115",
    )
    assert (row.site_id, row.site_code, row.image_count, row.priors_count) == (general_site.pk, "general", 3, 0)
    assert row.arrived_at == study.created_at
    assert row.claimed_by is None and row.reader_name == ""


def test_more_instances_of_a_study_update_its_row_and_never_add_a_second(
    upload_client: Client, study_row: WorklistItem, django_capture_on_commit_callbacks: Any
) -> None:
    spec = StudySpec(patient_name="DOE^JANE", patient_id="WL-1", study_uid=study_row.study_instance_uid)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert stow(upload_client, make_series(spec, "MR", count=4, size=16)).status_code == 200
    assert len(callbacks) == 1  # one announcement for the whole batch
    row = WorklistItem.objects.get(pk=study_row.pk)
    assert (row.image_count, row.modality) == (6, "CT\\MR")
    assert WorklistItem.objects.count() == 1
    assert row.updated_at > study_row.updated_at


def test_the_signal_is_sent_once_per_study_and_batch_after_the_commit(
    upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    heard: list[int] = []

    def listen(sender: Any, study_id: int, **kwargs: Any) -> None:
        heard.append(study_id)

    first, second = StudySpec(patient_id="S-1"), StudySpec(patient_id="S-2")
    study_stored.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            parts = make_series(first, "CT", count=2, size=16) + make_series(second, "CT", count=3, size=16)
            assert stow(upload_client, parts).status_code == 200
        assert heard == []  # not before the commit
        for callback in callbacks:
            callback()
    finally:
        study_stored.disconnect(listen)
    pks = Study.objects.filter(study_instance_uid__in=[first.study_uid, second.study_uid]).values_list("pk", flat=True)
    assert sorted(heard) == sorted(pks)


def test_a_failing_receiver_never_fails_the_store(
    upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any, caplog: Any
) -> None:
    def broken(sender: Any, study_id: int, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    study_stored.connect(broken)
    try:
        row = store_study(upload_client, django_capture_on_commit_callbacks, patient_id="S-3")
    finally:
        study_stored.disconnect(broken)
    assert row.image_count == 2
    assert "a receiver of study_stored failed" in caplog.text and "RuntimeError" in caplog.text


def test_priors_count_the_patients_older_studies_on_every_row(
    upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    capture = django_capture_on_commit_callbacks
    new = store_study(upload_client, capture, patient_id="P-9", study_date="20240301")
    old = store_study(upload_client, capture, patient_id="P-9", study_date="20230301")
    other = store_study(upload_client, capture, patient_id="P-10", study_date="20220301")
    new.refresh_from_db()
    assert (new.priors_count, old.priors_count, other.priors_count) == (1, 0, 0)


def test_routing_rules_assign_the_first_matching_group(
    upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    chest, neuro = Group.objects.create(name="chest readers"), Group.objects.create(name="neuro readers")
    RoutingRule.objects.create(order=20, site=general_site, group=chest)
    RoutingRule.objects.create(order=10, site=general_site, modality="MR", group=neuro)
    RoutingRule.objects.create(order=5, modality="MR", body_part="KNEE", group=chest, enabled=False)
    capture = django_capture_on_commit_callbacks
    mr = store_study(upload_client, capture, modality="MR", patient_id="R-1")
    ct = store_study(upload_client, capture, modality="CT", patient_id="R-2")
    assert (mr.assigned_group, mr.reader_name) == (neuro, "neuro readers")
    assert (ct.assigned_group, ct.reader_name) == (chest, "chest readers")


def test_without_auto_ready_a_study_waits_for_the_technologist(
    settings: Any, upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    settings.PACS_WORKLIST_AUTO_READY = False
    row = store_study(upload_client, django_capture_on_commit_callbacks, patient_id="Q-1")
    assert row.status == Status.ARRIVED


def test_sync_gives_a_study_without_a_row_its_row(study_row: WorklistItem) -> None:
    WorklistItem.objects.all().delete()
    assert rebuild() == 1
    assert WorklistItem.objects.get().study_instance_uid == study_row.study_instance_uid


def test_sync_follows_a_study_moved_to_another_site(study_row: WorklistItem, other_site: Site) -> None:
    Study.objects.filter(pk=study_row.study_id).update(site=other_site)
    rebuild()
    moved = WorklistItem.objects.get(pk=study_row.pk)
    assert (moved.site, moved.site_code, moved.image_count) == (other_site, "elsewhere", 2)


@pytest.mark.parametrize(
    ("sent", "born", "seen", "age"),
    [
        ("", "19700301", "20240115", "053Y"),
        ("", "19700115", "20240115", "054Y"),
        ("007M", "", "", "007M"),
        ("", "x", "", ""),
    ],
)
def test_the_age_is_the_one_sent_or_whole_years_at_the_study(sent: str, born: str, seen: str, age: str) -> None:
    attributes = {"00101010": {"vr": "AS", "Value": [sent]}} if sent else {}
    assert patient_age(attributes, born, seen) == age


@pytest.mark.django_db(transaction=True)
def test_a_study_stored_over_c_store_gets_its_row(general_site: Site, tmp_path: Path) -> None:
    DicomDevice.objects.create(ae_title="CT1", host="127.0.0.1", site=general_site, may_store=True)
    spec = StudySpec(patient_id="DIMSE-WL", patient_name="DIMSE^WORKLIST")
    paths = []
    for n, raw in enumerate(make_series(spec, "CT", count=3, size=16)):
        (tmp_path / f"{n}.dcm").write_bytes(raw)
        paths.append(str(tmp_path / f"{n}.dcm"))
    listener = DicomListener("PACS", host="127.0.0.1", port=0)
    listener.start()
    try:
        done = subprocess.run(
            ["/usr/bin/storescu", "-aet", "CT1", "-aec", "PACS", "127.0.0.1", str(listener.port), *paths],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 10
        while listener.ae.active_associations or listener.sessions:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        listener.stop()
    row = WorklistItem.objects.annotate(images=F("study__number_of_instances")).get(study_instance_uid=spec.study_uid)
    assert (row.patient_name, row.images, row.site_code, row.status) == ("DIMSE^WORKLIST", 3, "general", "ready")


def test_instances_arriving_one_at_a_time_bump_the_row_at_most_once_a_second(
    upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    spec = StudySpec(patient_id="ONE-BY-ONE")
    parts = make_series(spec, "CT", count=3, size=16)
    with django_capture_on_commit_callbacks(execute=True):
        assert stow(upload_client, parts[:1]).status_code == 200
    first = WorklistItem.objects.get(study_instance_uid=spec.study_uid)
    with django_capture_on_commit_callbacks(execute=True):
        assert stow(upload_client, parts[1:2]).status_code == 200
    same = WorklistItem.objects.get(pk=first.pk)
    assert (same.image_count, same.updated_at) == (1, first.updated_at)  # read, not written
    WorklistItem.objects.filter(pk=first.pk).update(updated_at=first.updated_at - timedelta(seconds=2))
    with django_capture_on_commit_callbacks(execute=True):
        assert stow(upload_client, parts[2:]).status_code == 200
    bumped = WorklistItem.objects.get(pk=first.pk)
    assert bumped.image_count == 3 and bumped.updated_at > first.updated_at


def test_the_sync_and_expire_commands_report_what_they_did(study_row: WorklistItem, settings: Any) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("worklist_sync", stdout=out)
    call_command("worklist_expire", stdout=out)
    assert out.getvalue() == "1 studies checked\n0 claims expired\n"


def test_priors_leave_out_studies_and_series_in_the_trash(
    upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    from archive.ingest.trash import trash_series, trash_study
    from archive.models import Series

    capture = django_capture_on_commit_callbacks
    old = store_study(upload_client, capture, patient_id="P-11", study_date="20230301")
    store_study(upload_client, capture, modality="MR", patient_id="P-11", study_uid=old.study_instance_uid)
    gone = store_study(upload_client, capture, patient_id="P-11", study_date="20220301")
    ct = Series.objects.get(study__study_instance_uid=old.study_instance_uid, modality="CT")
    with capture(execute=True):
        trash_series(ct, actor="test")  # its rows now sit under a holder study in the trash
        trash_study(Study.objects.get(pk=gone.study_id), actor="test")
    new = store_study(upload_client, capture, patient_id="P-11", study_date="20240301")
    old.refresh_from_db()
    assert (new.priors_count, old.priors_count) == (1, 0)  # only the old study, not its holder nor the trashed one


def test_a_series_to_the_trash_and_back_updates_the_studys_row(
    upload_client: Client, general_site: Site, django_capture_on_commit_callbacks: Any
) -> None:
    from archive.ingest.trash import find_entry, restore_study, trash_series
    from archive.models import Series

    capture = django_capture_on_commit_callbacks
    row = store_study(upload_client, capture, count=2, patient_id="P-12")
    store_study(upload_client, capture, count=1, modality="MR", patient_id="P-12", study_uid=row.study_instance_uid)
    row.refresh_from_db()
    assert (row.modality, row.image_count) == ("CT\\MR", 3)
    with capture(execute=True):
        trash_series(Series.objects.get(study_id=row.study_id, modality="CT"), actor="test")
    row.refresh_from_db()
    assert (row.modality, row.image_count) == ("MR", 1)
    entry = find_entry(Series.objects.get(modality="CT").series_instance_uid)
    assert entry is not None
    with capture(execute=True):
        restore_study(entry.study_instance_uid, actor="test")
    row.refresh_from_db()
    assert (row.modality, row.image_count) == ("CT\\MR", 3)
