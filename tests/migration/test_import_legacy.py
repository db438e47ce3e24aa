"""``manage.py import_legacy`` against a real legacy PACS: Orthanc on loopback, our node beside it.

Every test loads Orthanc over its REST API, migrates with the command (C-MOVE
to our node unless said otherwise), and checks the outcome in our index, the
ledger, the reconciliation report and the audit trail, down to the bytes.
"""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pydicom
import pytest
from django.core.management import CommandError, call_command

from archive.dicom.synthetic import StudySpec
from archive.dimse.listener import DicomListener
from archive.models import DicomDevice, Instance
from audit.models import AuditEvent
from migration import report
from migration.models import Job, JobState, LedgerInstance, State
from tests.migration.conftest import PLAN, Orthanc, instance, load

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(orthanc: Orthanc, *args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_legacy",
        "--aet",
        "LEGACY",
        "--host",
        "127.0.0.1",
        "--port",
        str(orthanc.port),
        *args,
        stdout=out,
        stderr=err,
    )
    return out.getvalue() + err.getvalue()


def data_set(part10: bytes) -> bytes:
    """The data set of a Part 10 object: what follows its File Meta Information."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    return part10[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


def stored(uid: str) -> bytes:
    with Instance.objects.get(sop_instance_uid=uid).open_stored() as stream:
        return stream.read()


def store_records(uids: set[str]) -> dict[str, int]:
    """How many C-STOREs from the legacy PACS the node recorded per SOP Instance UID."""
    counts = dict.fromkeys(uids, 0)
    for detail in AuditEvent.objects.filter(action="store", actor="AE:LEGACY").values_list("detail", flat=True):
        uid = detail.get("sop_instance_uid")
        if uid in counts:
            counts[uid] += 1
    return counts


def test_a_full_migration_brings_every_instance_byte_identical_and_the_report_proves_it(
    orthanc: Orthanc, node: DicomListener, legacy_device: DicomDevice
) -> None:
    layout = load(orthanc, PLAN)
    expected = layout.uids()
    assert len(expected) == 260

    output = migrate(orthanc, "--from", "2024-01-01", "--to", "2024-01-31")

    job = Job.objects.get()
    assert job.state == JobState.COMPLETE
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == expected
    for uid in expected:  # Orthanc keeps what it received: the data set we hold is the one uploaded, bit for bit
        assert data_set(stored(uid)) == data_set(orthanc.uploaded[uid]), uid
    assert set(Instance.objects.values_list("series__study__site__code", flat=True)) == {"general"}
    built = report.build(job)
    assert (built.studies_expected, built.studies_received, built.studies_complete) == (6, 6, 6)
    assert (built.instances_expected, built.instances_received, built.instances_identical) == (260, 260, 260)
    assert (built.instances_missing, built.instances_conflicting, built.instances_failed) == (0, 0, 0)
    assert built.proven and built.duplicate_groups == []
    assert built.instances_per_second > 0 and built.gigabytes_per_hour > 0
    assert "instances identical: 260" in output and "] 260/260 instances" in output
    assert set(store_records(expected).values()) == {1}  # each instance sent once
    start, stop = (AuditEvent.objects.get(action=a) for a in ("migration_start", "migration_stop"))
    assert start.actor == stop.actor == "manage.py import_legacy"
    assert start.detail["legacy_ae"] == "LEGACY" and stop.detail["state"] == "complete"
    assert stop.detail["received"] == 260


def test_a_migration_by_c_get_takes_the_node_s_store_path_and_proves_the_same(
    orthanc: Orthanc, legacy_device: DicomDevice
) -> None:
    layout = load(orthanc, PLAN[:3])

    migrate(orthanc, "--from", "20240110", "--to", "20240111", "--method", "get")

    expected = layout.uids()
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == expected
    for uid in expected:
        assert data_set(stored(uid)) == data_set(orthanc.uploaded[uid])
    built = report.build(Job.objects.get())
    assert built.proven and built.instances_identical == len(expected) == 142


def test_an_instance_deleted_from_the_legacy_pacs_after_the_inventory_is_missing_not_success(
    orthanc: Orthanc, legacy_device: DicomDevice
) -> None:
    from migration.inventory import inventory
    from migration.scu import LegacyPeer

    layout = load(orthanc, PLAN[3:5])
    job = Job.objects.create(
        device=legacy_device,
        host="127.0.0.1",
        port=orthanc.port,
        date_from=date(2024, 1, 12),
        date_to=date(2024, 1, 15),
    )
    peer = LegacyPeer("127.0.0.1", orthanc.port, "LEGACY", "PACS")
    assert inventory(job, peer, lambda: True)
    peer.close()
    gone = sorted(layout.uids())[:2]
    for uid in gone:
        orthanc.delete(uid)

    output = migrate(orthanc, "--from", "2024-01-12", "--to", "2024-01-15")

    job.refresh_from_db()
    missing = LedgerInstance.objects.filter(job=job, state=State.MISSING)
    assert sorted(missing.values_list("sop_instance_uid", flat=True)) == gone
    assert all("not received" in m.last_error for m in missing)
    built = report.build(job)
    assert (built.instances_expected, built.instances_identical, built.instances_missing) == (110, 108, 2)
    assert not built.proven
    assert "instances missing: 2" in output
    assert not Instance.objects.filter(sop_instance_uid__in=gone).exists()


def test_an_incremental_rerun_fetches_only_what_appeared_since(orthanc: Orthanc, legacy_device: DicomDevice) -> None:
    layout = load(orthanc, PLAN[:2])
    migrate(orthanc, "--from", "2024-01-10", "--to", "2024-01-10")
    first = layout.uids()
    study_uid, (date, series) = next(iter(layout.studies.items()))
    spec = StudySpec(study_uid=study_uid, study_date=date, patient_id="P000")
    series_uid = next(iter(series))
    new = {orthanc.upload(instance(spec, "CT", series_uid, n)) for n in (61, 62)}  # into an existing series
    new |= load(orthanc, [("20240110", [("CR", 3)])], patient="N").uids()
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    migrate(orthanc, "--from", "2024-01-10", "--to", "2024-01-10")

    job = Job.objects.get()
    assert job.state == JobState.COMPLETE
    sent = {
        d.get("sop_instance_uid")
        for d in AuditEvent.objects.filter(action="store", id__gt=before).values_list("detail", flat=True)
    }
    assert sent == new
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == first | new
    assert report.build(job).instances_identical == len(first | new) == 145
    assert AuditEvent.objects.filter(action="migration_start").count() == 2


def test_date_and_modality_filters_take_only_what_they_name(orthanc: Orthanc, legacy_device: DicomDevice) -> None:
    layout = load(orthanc, PLAN)

    migrate(orthanc, "--from", "2024-01-10", "--to", "2024-01-12", "--modality", "mr", "--modality", "CR")

    wanted = layout.uids("MR", ("20240110", "20240112")) | layout.uids("CR", ("20240110", "20240112"))
    assert len(wanted) == 82
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == wanted
    job = Job.objects.get()
    assert job.modalities == "CR,MR"
    assert report.build(job).instances_expected == 82


def test_an_instance_already_held_under_another_study_is_conflicting(
    orthanc: Orthanc, legacy_device: DicomDevice
) -> None:
    from archive.dicom.synthetic import make_instance
    from archive.ingest.store import store_instance
    from archive.storage.registry import get_storage
    from archive.storage.staging import StagingWriter

    layout = load(orthanc, PLAN[4:5])
    taken = sorted(layout.uids())[0]
    other = make_instance(StudySpec(patient_id="ELSE"), "CT", sop_uid=taken, size=16)
    writer = StagingWriter(get_storage("hot"), 10**8)
    writer.write(other)
    assert store_instance(writer.finish()).ok

    migrate(orthanc, "--from", "2024-01-15", "--to", "2024-01-15")

    row = LedgerInstance.objects.get(sop_instance_uid=taken)
    assert row.state == State.MISMATCHED
    assert "Study Instance UID differs" in row.last_error
    assert "the legacy copy was refused" in row.last_error  # the node's own record of its 0xC111 to the legacy PACS
    assert stored(taken) != b"" and data_set(stored(taken)) != data_set(orthanc.uploaded[taken])  # ours is kept
    built = report.build(Job.objects.get())
    assert (built.instances_expected, built.instances_identical, built.instances_conflicting) == (40, 39, 1)


def test_the_same_pixel_data_under_different_uids_is_reported_as_duplicates(
    orthanc: Orthanc, legacy_device: DicomDevice
) -> None:
    pixels = bytes(range(256)) * 8  # 32 x 32 x 16 bits
    spec = StudySpec(patient_id="DUP", study_date="20240301")
    twins = {orthanc.upload(instance(spec, "CT", f"{spec.study_uid}.{n}", n, pixels=pixels)) for n in (1, 2)}
    others = {orthanc.upload(instance(spec, "CT", f"{spec.study_uid}.3", n)) for n in (1, 2, 3)}

    migrate(orthanc, "--from", "2024-03-01", "--to", "2024-03-01")

    built = report.build(Job.objects.get())
    assert [sorted(g) for g in built.duplicate_groups] == [sorted(twins)]
    assert built.instances_identical == len(twins | others) and built.duplicate_instances == 2
    csv_text = "".join(report.csv_lines(Job.objects.get()))
    assert "# duplicates (same pixel data, other UIDs): 2" in csv_text
    assert csv_text.count(sorted(twins)[0]) == 2  # its own row, and the duplicate_of of its twin


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aet", "NOBODY"], "no DICOM device 'NOBODY'"),
        (["--from", "2024-13-01"], "a date is YYYY-MM-DD"),
        (["--from", "2024-02-01", "--to", "2024-01-01"], "is after --to"),
        (["--modality", "C*T"], "--modality takes a DICOM modality"),
        (["--window", "25:00-06:00"], "--window: a window is HH:MM-HH:MM"),
        (["--window", "06:00-06:00"], "is empty"),
        (["--rate", "0"], "--rate must be a positive number"),
        (["--port-override"], None),
        (["--resume"], "no migration job with these arguments to resume"),
    ],
)
def test_bad_arguments_give_a_clear_command_error(
    legacy_device: DicomDevice, args: list[str], message: str | None
) -> None:
    base = {"--aet": "LEGACY", "--host": "127.0.0.1", "--port": "104"}
    for flag in ("--aet",):
        if flag in args:
            base.pop(flag)
    argv = [x for pair in base.items() for x in pair] + args
    with pytest.raises(CommandError) as raised:
        call_command("import_legacy", *argv, stdout=io.StringIO(), stderr=io.StringIO())
    if message is not None:
        assert message in str(raised.value)
    assert not Job.objects.exists()


def test_a_device_that_may_not_store_cannot_be_migrated_from(legacy_device: DicomDevice) -> None:
    DicomDevice.objects.filter(pk=legacy_device.pk).update(may_store=False)
    with pytest.raises(CommandError, match="must be enabled and allowed to store"):
        call_command("import_legacy", "--aet", "LEGACY", "--host", "h", "--port", "104", stdout=io.StringIO())


def test_an_unreachable_legacy_pacs_fails_the_job_and_a_rerun_needs_resume(legacy_device: DicomDevice) -> None:
    from tests.migration.conftest import free_port

    port = str(free_port())
    args = ["--aet", "LEGACY", "--host", "127.0.0.1", "--port", port, "--from", "2024-01-01", "--to", "2024-01-02"]
    with pytest.raises(CommandError, match="failed: association with LEGACY@127.0.0.1"):
        call_command("import_legacy", *args, stdout=io.StringIO(), stderr=io.StringIO())
    job = Job.objects.get()
    assert job.state == JobState.FAILED and job.lease_owner == ""
    with pytest.raises(CommandError, match=f"migration job #{job.pk} with these arguments is failed"):
        call_command("import_legacy", *args, stdout=io.StringIO(), stderr=io.StringIO())
    stop = AuditEvent.objects.get(action="migration_stop")
    assert stop.outcome == "failure" and "association" in stop.detail["error"]


def test_a_legacy_pacs_that_cuts_c_find_answers_short_is_asked_narrower_and_still_migrated_whole(
    node: DicomListener, legacy_device: DicomDevice, tmp_path: Path
) -> None:
    from tests.migration.conftest import start_orthanc

    short = start_orthanc(tmp_path / "short", node.port, LimitFindResults=5)  # at most 5 matches per C-FIND
    try:
        layout = load(short, [("20240201", [("CT", 8)])] + [("20240201", [("MR", 2)])] * 6)
        assert len(layout.studies) == 7 and len(layout.uids()) == 20

        migrate(short, "--from", "2024-02-01", "--to", "2024-02-01", "--max-results", "5")
    finally:
        short.process.terminate()
        short.process.wait(timeout=30)

    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == layout.uids()
    built = report.build(Job.objects.get())
    assert (built.studies_expected, built.instances_expected, built.instances_identical) == (7, 20, 20)


def test_an_instance_already_held_is_asked_for_and_proven_identical_or_conflicting(
    orthanc: Orthanc, legacy_device: DicomDevice
) -> None:
    """A modality that sent to both archives: what we hold is checked against the legacy copy, not assumed."""
    from archive.ingest.store import Sender, store_instance
    from archive.storage.registry import get_storage
    from archive.storage.staging import StagingWriter

    spec = StudySpec(patient_id="BOTH", study_date="20240401")
    series_uid = f"{spec.study_uid}.1"
    parts = [instance(spec, "CT", series_uid, n) for n in range(1, 6)]
    uids = [orthanc.upload(p) for p in parts]
    other = instance(spec, "CT", series_uid, 2, sop_uid=uids[1])  # same UIDs, other pixels
    for held in (parts[0], other):
        writer = StagingWriter(get_storage("hot"), 10**8)
        writer.write(held)
        assert store_instance(writer.finish(), sender=Sender(site=legacy_device.site)).ok

    migrate(orthanc, "--from", "2024-04-01", "--to", "2024-04-01")

    rows = {r.sop_instance_uid: r for r in LedgerInstance.objects.all()}
    assert rows[uids[0]].state == State.COMPLETE and rows[uids[0]].verified  # the legacy copy was identical
    assert rows[uids[1]].state == State.MISMATCHED
    assert "the legacy copy was refused" in rows[uids[1]].last_error
    assert data_set(stored(uids[1])) == data_set(other)  # what we held is kept, and reported
    assert all(rows[u].state == State.COMPLETE for u in uids[2:])
    built = report.build(Job.objects.get())
    assert (built.instances_expected, built.instances_identical, built.instances_conflicting) == (5, 4, 1)
    assert store_records({uids[0]}) == {uids[0]: 1}  # asked for, and its C-STORE found identical
