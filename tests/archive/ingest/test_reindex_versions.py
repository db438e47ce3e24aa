"""Rebuilding the index when corrections left earlier versions next to the current objects.

A correction stores a corrected copy of every instance under the same SOP
Instance UID and keeps the replaced object. ``reindex`` (above all
``--wipe``, the disaster-recovery path) must index the copy with the latest
correction, whatever order it visits the objects in, and record the others
as the instance's earlier versions in order; ``sweep`` must neither index an
earlier version nor take it for an orphan.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pydicom
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from pydicom.dataset import Dataset

from archive.dicom.corrections import rewrite
from archive.dicom.part10 import parse_instance
from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.correct import correct_study
from archive.ingest.merge import merge_study
from archive.ingest.reindex import reindex
from archive.ingest.split import split_study
from archive.ingest.sweep import sweep_orphans
from archive.ingest.trash import purge_study, trash_study
from archive.models import Instance, InstanceVersion, Series, Study
from archive.storage.filesystem import FileSystemStorage
from archive.storage.keys import object_key
from archive.storage.registry import get_storage
from tests.conftest import stow

pytestmark = pytest.mark.django_db(transaction=True)

WRONG = StudySpec(patient_name="WRONG^PATIENT", patient_id="PAT-WRONG", accession="ACC-1", description="CT HEAD")
FIRST = {"PatientID": "PAT-RIGHT", "PatientName": "RIGHT^ROSE"}
SECOND = {"AccessionNumber": "ACC-9", "StudyDescription": "CT HEAD W/O"}

#: Visiting orders of each tier's keys: as listed (sorted), backwards.
ORDERS: dict[str, Callable[[list[str]], list[str]] | None] = {
    "sorted": None,
    "reversed": lambda keys: list(reversed(keys)),
}


@pytest.fixture
def study(upload_client: Client) -> Study:
    assert stow(upload_client, make_series(WRONG, "CT", count=3, size=16)).status_code == 200
    return Study.objects.get(study_instance_uid=WRONG.study_uid)


def served(instance: Instance) -> bytes:
    with instance.open_stored() as fh:
        return fh.read()


def chain() -> dict[str, list[str]]:
    """For each SOP Instance UID: the SHA-256 of every version in order, then the indexed one."""
    out: dict[str, list[str]] = {}
    for instance in Instance.objects.order_by("sop_instance_uid"):
        versions = InstanceVersion.objects.filter(instance=instance).order_by("version")
        assert [v.version for v in versions] == list(range(1, versions.count() + 1))
        out[instance.sop_instance_uid] = [v.sha256 for v in versions] + [instance.sha256]
    return out


def qido(client: Client, query: str) -> list[dict[str, Any]]:
    response = client.get(f"/dicom-web/studies?{query}", HTTP_ACCEPT="application/dicom+json")
    assert response.status_code in (200, 204)
    return response.json() if response.status_code == 200 else []


def twice_corrected(study: Study, owner: User) -> dict[str, list[str]]:
    first = {i.sop_instance_uid: i.sha256 for i in Instance.objects.all()}
    correct_study(study, FIRST, "wrong patient selected at the modality", user=owner)
    second = {i.sop_instance_uid: i.sha256 for i in Instance.objects.all()}
    correct_study(Study.objects.get(pk=study.pk), SECOND, "accession from the order", user=owner)
    before = chain()
    for uid, shas in before.items():
        assert shas[0] == first[uid] and shas[1] == second[uid] and len(set(shas)) == 3
    return before


@pytest.mark.parametrize("order", ORDERS)
def test_a_wipe_and_reindex_serves_the_latest_correction_and_keeps_the_versions_in_order(
    study: Study, owner: User, owner_client: Client, order: str
) -> None:
    before = twice_corrected(study, owner)

    report = reindex(wipe=True, order=ORDERS[order])

    assert (report.indexed, report.versions, report.conflicts, report.ties) == (3, 6, [], [])
    assert chain() == before
    for instance in Instance.objects.all():
        assert hashlib.sha256(served(instance)).hexdigest() == before[instance.sop_instance_uid][-1]
        for version in instance.versions.all():
            with version.open_stored() as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == version.sha256
    assert qido(owner_client, "PatientID=PAT-WRONG") == []
    [found] = qido(owner_client, "PatientID=PAT-RIGHT&includefield=00081030")
    assert found["00080050"]["Value"] == ["ACC-9"]
    assert found["00081030"]["Value"] == ["CT HEAD W/O"]
    assert found["00201208"]["Value"] == [3]


def test_the_management_command_reports_the_earlier_versions(study: Study, owner: User) -> None:
    twice_corrected(study, owner)
    out = io.StringIO()
    call_command("reindex", "--wipe", stdout=out, stderr=io.StringIO())
    assert (
        "scanned 9, indexed 3, already indexed 0, earlier versions 6, invalid 0, corrupt 0, conflicts 0"
        in out.getvalue()
    )


def test_a_reindex_without_wipe_after_a_correction_changes_nothing(study: Study, owner: User) -> None:
    before = twice_corrected(study, owner)
    rows = {v.storage_key: (v.version, v.reason, v.replaced_by) for v in InstanceVersion.objects.all()}

    for order in ORDERS.values():
        report = reindex(order=order)
        assert (report.scanned, report.indexed, report.versions, report.already) == (9, 0, 0, 9)
        assert report.conflicts == report.invalid == report.corrupt == []
    assert chain() == before
    assert {v.storage_key: (v.version, v.reason, v.replaced_by) for v in InstanceVersion.objects.all()} == rows


def test_a_reindex_without_wipe_gives_a_lost_version_row_back_in_its_place(study: Study, owner: User) -> None:
    before = twice_corrected(study, owner)
    InstanceVersion.objects.filter(version=1).delete()  # the rows of the originals lost
    kept = {v.pk: (v.storage_key, v.reason, v.replaced_by) for v in InstanceVersion.objects.all()}

    report = reindex(order=ORDERS["reversed"])

    assert (report.indexed, report.versions, report.conflicts) == (0, 3, [])
    assert chain() == before
    assert {v.pk: (v.storage_key, v.reason, v.replaced_by) for v in InstanceVersion.objects.filter(version=2)} == kept


def test_sweep_leaves_earlier_versions_alone_and_gives_a_lost_version_row_back(study: Study, owner: User) -> None:
    before = twice_corrected(study, owner)
    swept = sweep_orphans("hot", min_age=timedelta(0))
    assert (swept.recovered, swept.removed, swept.kept, swept.versions) == (0, 0, [], 0)
    assert chain() == before
    InstanceVersion.objects.filter(version=2).delete()

    swept = sweep_orphans("hot", min_age=timedelta(0))

    assert (swept.recovered, swept.removed, swept.kept, swept.versions) == (0, 0, [], 3)
    assert chain() == before
    assert len(list(get_storage("hot").keys())) == 9


@pytest.mark.parametrize("order", ORDERS)
def test_sweep_of_a_corrected_study_whose_rows_were_all_lost_serves_the_latest_correction(
    study: Study, owner: User, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = twice_corrected(study, owner)
    Study.objects.all().delete()  # the rows of a study corrected after the backup the index was restored from
    storage = get_storage("hot")
    listed = list(storage.keys())
    visit = ORDERS[order]
    monkeypatch.setattr(type(storage), "keys", lambda self: iter(visit(listed) if visit else listed))

    swept = sweep_orphans("hot", min_age=timedelta(0))

    assert (swept.recovered, swept.versions, swept.removed, swept.kept) == (3, 6, 0, [])
    assert chain() == before
    assert Study.objects.get().patient.patient_id == "PAT-RIGHT"


def test_a_copy_later_than_the_indexed_instance_is_a_conflict_not_a_switch(study: Study, owner: User) -> None:
    before = twice_corrected(study, owner)
    latest = {i.sop_instance_uid: (i.storage_key, i.sha256) for i in Instance.objects.all()}
    # the index as it was before the second correction: a later copy now has no row (an interrupted correction)
    for instance in Instance.objects.all():
        v2 = instance.versions.get(version=2)
        with get_storage(v2.tier).local_path(v2.storage_key) as path:
            metadata = parse_instance(path).metadata_text()
        Instance.objects.filter(pk=instance.pk).update(
            storage_key=v2.storage_key, sha256=v2.sha256, size=v2.size, metadata=metadata
        )
        v2.delete()

    report = reindex()

    assert (report.indexed, report.versions) == (0, 0)
    assert sorted(c.split(":")[0] for c in report.conflicts) == sorted(k for k, _ in latest.values())
    assert all(c[-1] == before[uid][1] for uid, c in chain().items())


@pytest.mark.parametrize("order", ORDERS)
def test_a_split_study_reindexes_into_the_new_study(upload_client: Client, owner: User, order: str) -> None:
    spec = StudySpec(patient_name="TWO^EXAMS", patient_id="PAT-2X", accession="ACC-2X")
    parts = make_series(spec, "CT", count=2, size=16) + make_series(spec, "MR", count=1, size=16, series_number=2)
    assert stow(upload_client, parts).status_code == 200
    study = Study.objects.get(study_instance_uid=spec.study_uid)
    mr = Series.objects.get(study=study, modality="MR")
    _, new_uid = split_study(study, [mr.series_instance_uid], "two examinations under one UID", user=owner)
    before = chain()

    report = reindex(wipe=True, order=ORDERS[order])

    assert (report.indexed, report.versions, report.conflicts) == (3, 1, [])
    assert chain() == before
    moved = Series.objects.get(series_instance_uid=mr.series_instance_uid)
    assert moved.study.study_instance_uid == new_uid
    assert (moved.study.number_of_series, moved.study.number_of_instances) == (1, 1)
    old = Study.objects.get(study_instance_uid=spec.study_uid)
    assert (old.number_of_series, old.number_of_instances) == (1, 2)


def test_a_merged_study_reindexes_into_the_target_and_the_emptied_study_stays_gone(
    upload_client: Client, owner: User
) -> None:
    target = StudySpec(patient_name="RIGHT^RUTH", patient_id="PAT-T", accession="ACC-T", description="CT CHEST")
    source = StudySpec(patient_name="WRONG^WILL", patient_id="PAT-S", accession="ACC-S", description="CT CHEST 2")
    assert stow(upload_client, make_series(target, "CT", count=2, size=16)).status_code == 200
    assert stow(upload_client, make_series(source, "MR", count=1, size=16)).status_code == 200
    merge_study(
        Study.objects.get(study_instance_uid=source.study_uid),
        Study.objects.get(study_instance_uid=target.study_uid),
        "one examination sent twice",
        user=owner,
    )
    before = chain()

    report = reindex(wipe=True, order=ORDERS["reversed"])

    assert (report.indexed, report.versions, report.conflicts) == (3, 1, [])
    assert chain() == before
    assert list(Study.objects.values_list("study_instance_uid", "number_of_series", "number_of_instances")) == [
        (target.study_uid, 2, 3)
    ]
    assert set(Instance.objects.values_list("series__study__patient__patient_id", flat=True)) == {"PAT-T"}


def test_copies_corrected_at_the_same_moment_are_ordered_by_sha256_and_reported(study: Study) -> None:
    instance = Instance.objects.select_related("series").order_by("sop_instance_uid")[0]
    original = served(instance)
    storage = get_storage()
    assert isinstance(storage, FileSystemStorage)
    copies = []
    for name in ("TIE^ONE", "TIE^TWO"):  # two copies corrected elsewhere at the very same moment
        data = rewrite(io.BytesIO(original), {"PatientName": name}, when=datetime(2026, 12, 6, 3, 0, tzinfo=UTC))
        sha256 = hashlib.sha256(data).hexdigest()
        key = object_key(WRONG.study_uid, instance.series.series_instance_uid, instance.sop_instance_uid, sha256)
        storage.path(key).write_bytes(data)
        copies.append((sha256, key))
    copies.sort()

    for order in ORDERS.values():
        report = reindex(wipe=True, order=order)

        assert (report.indexed, report.versions, report.conflicts) == (3, 2, [])
        assert sorted(t.split(":")[0] for t in report.ties) == [key for _, key in copies]
        assert chain()[instance.sop_instance_uid] == [instance.sha256, copies[0][0], copies[1][0]]


def test_after_a_wipe_and_reindex_the_purge_of_the_study_takes_its_earlier_versions_too(
    study: Study, owner: User
) -> None:
    twice_corrected(study, owner)
    reindex(wipe=True, order=ORDERS["reversed"])
    trash_study(Study.objects.get(study_instance_uid=WRONG.study_uid), actor="admin")

    purge_study(WRONG.study_uid, now=timezone.now() + timedelta(days=365))

    assert list(get_storage("hot").keys()) == []
    assert not InstanceVersion.objects.exists()


def test_a_modification_datetime_out_of_range_once_in_utc_neither_stops_reindex_nor_sweep(
    upload_client: Client,
) -> None:
    spec = StudySpec(patient_name="ODD^DATES", patient_id="PAT-ODD")
    sent = []
    for n, data in enumerate(make_series(spec, "CT", count=2, size=16)):
        ds = pydicom.dcmread(io.BytesIO(data))
        item = Dataset()  # corrected elsewhere, with a date the year 1 (+01:00) or 9999 (-01:00) cannot hold in UTC
        item.AttributeModificationDateTime = ("00010101000000+0100", "99991231235959-0100")[n]
        ds.OriginalAttributesSequence = [item]
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        sent.append(out.getvalue())
    assert stow(upload_client, sent).status_code == 200

    report = reindex(wipe=True)

    assert (report.indexed, report.versions, report.conflicts, report.invalid) == (2, 0, [], [])
    assert sweep_orphans(min_age=timedelta(0)).kept == []
