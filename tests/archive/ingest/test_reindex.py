"""Rebuilding the index from the stored files alone (``manage.py reindex``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.models import Instance, Patient, Series, Study
from archive.storage.registry import get_storage
from tests.conftest import stow

VOLATILE = {"id", "created_at", "updated_at", "last_accessed_at"}


def snapshot() -> dict[str, Any]:
    """Every index row by its natural key, without surrogate keys or timestamps."""

    def rows(model: Any, key: str, **natural: str) -> dict[str, dict[str, Any]]:
        out = {}
        for obj in model.objects.all():
            values = {f.attname: getattr(obj, f.attname) for f in model._meta.concrete_fields}
            for fk, path in natural.items():
                values[fk] = getattr(getattr(obj, fk.removesuffix("_id")), path) if values[fk] else None
            out[str(getattr(obj, key))] = {k: v for k, v in values.items() if k not in VOLATILE}
        return out

    return {
        "patients": rows(Patient, "patient_id"),
        "studies": rows(Study, "study_instance_uid", patient_id="patient_id", site_id="code"),
        "series": rows(Series, "series_instance_uid", study_id="study_instance_uid"),
        "instances": rows(Instance, "sop_instance_uid", series_id="series_instance_uid"),
    }


def reindex(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("reindex", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def archive(upload_client: Client) -> dict[str, Any]:
    """Two patients: a CT series, a multi-frame ultrasound clip and a non-ASCII MR."""
    ct = StudySpec(patient_id="RX-1", patient_name="DOE^JANE")
    mr = StudySpec(patient_id="RX-2", patient_name="MÜLLER^JÜRGEN", description="MR KOPF")
    parts = make_series(ct, "CT", count=4, size=32)
    parts += [make_instance(ct, "US", frames=5, size=32), make_instance(ct, "US", frames=3, size=32)]
    parts += make_series(mr, "MR", count=3, size=32)
    assert stow(upload_client, parts).status_code == 200
    before = snapshot()
    assert len(before["instances"]) == 9
    return before


def test_it_rebuilds_identical_rows_after_the_index_is_deleted(archive: dict[str, Any]) -> None:
    Study.objects.all().delete()
    Patient.objects.all().delete()
    assert not Instance.objects.exists()
    out, _ = reindex()
    assert "scanned 9, indexed 9, already indexed 0" in out
    assert snapshot() == archive


def test_it_wipes_and_rebuilds_when_asked(archive: dict[str, Any]) -> None:
    out, _ = reindex("--wipe")
    assert "indexed 9" in out
    assert snapshot() == archive


def test_it_is_idempotent(archive: dict[str, Any]) -> None:
    out, _ = reindex()
    assert "scanned 9, indexed 0, already indexed 9" in out
    assert snapshot() == archive


def test_it_keeps_frames_metadata_and_hashes_byte_for_byte(archive: dict[str, Any]) -> None:
    Study.objects.all().delete()
    Patient.objects.all().delete()
    reindex()
    clip = Instance.objects.get(number_of_frames=5)
    assert clip.frames is not None and len(clip.frames) == 5
    assert clip.metadata == archive["instances"][clip.sop_instance_uid]["metadata"]
    frame = get_storage().read_ranges(clip.storage_key, clip.frames[2])
    assert len(frame) == 32 * 32


def test_it_reports_a_corrupted_file_and_does_not_index_it(archive: dict[str, Any]) -> None:
    victim = Instance.objects.filter(series__modality="MR").first()
    assert victim is not None
    path = get_storage().path(victim.storage_key)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CommandError, match="could not be indexed"):
        reindex("--wipe")
    assert Instance.objects.count() == 8
    assert not Instance.objects.filter(sop_instance_uid=victim.sop_instance_uid).exists()


def test_it_ignores_staging_files_and_reports_unreadable_objects(
    archive: dict[str, Any], isolated_storage: Path
) -> None:
    hot = get_storage()
    (hot.staging_dir / "upload.part").write_bytes(b"half an upload")
    junk = isolated_storage / "hot" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.0123456789abcdef.dcm"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not dicom")
    out, err = reindex("--wipe")
    assert "scanned 10, indexed 9" in out and "invalid 1" in out
    assert "1.2.3.4.5.0123456789abcdef.dcm" in err
    assert snapshot() == archive
