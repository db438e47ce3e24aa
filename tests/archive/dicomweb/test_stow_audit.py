"""STOW-RS and the audit trail: a stored instance never exists without its record, and every part is counted once."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.models import Instance, Study
from audit import trail
from audit.models import AuditEvent
from audit.trail import verify_chain
from tests.conftest import stow


def store_records() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="store").order_by("id"))


def mixed_body(parts: list[tuple[str, bytes]], boundary: str = "mixedBoundary42") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n" for ctype, data in parts)
    return body + f"--{boundary}--\r\n".encode(), f'multipart/related; type="application/dicom"; boundary={boundary}'


@pytest.mark.django_db
def test_a_stored_instance_is_audited_in_the_same_commit_as_its_rows(upload_client: Client, uploader: Any) -> None:
    spec = StudySpec()
    assert stow(upload_client, make_series(spec, "CT", count=2)).status_code == 200
    (event,) = store_records()
    assert (event.outcome, event.study_instance_uid, event.actor) == ("success", spec.study_uid, uploader.username)
    assert event.detail == {"stored": 2, "failed": 0, "via": "STOW-RS"}
    assert verify_chain().ok


@pytest.mark.django_db
def test_when_the_audit_record_cannot_be_written_nothing_is_stored(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(event: AuditEvent) -> str:
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(trail, "compute_hash", broken)
    with pytest.raises(RuntimeError, match="audit store unavailable"):
        stow(upload_client, [make_instance(StudySpec())])
    assert not Instance.objects.exists() and not Study.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_every_part_of_a_request_is_counted_once_per_study(upload_client: Client) -> None:
    first, second = StudySpec(), StudySpec(patient_id="PAT-0002")
    parts = [
        ("application/dicom", make_instance(first, instance_number=1)),
        ("text/plain", b"not an image"),
        ("application/dicom", b"not DICOM either"),
        ("application/dicom", make_instance(second)),
        ("application/dicom", make_instance(first, instance_number=2)),
    ]
    body, ctype = mixed_body(parts)
    response = upload_client.post("/dicom-web/studies", body, content_type=ctype, HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 202
    by_study: dict[str, dict[str, int]] = {}
    for event in store_records():
        counts = by_study.setdefault(event.study_instance_uid, {"stored": 0, "failed": 0})
        counts["stored"] += event.detail["stored"]
        counts["failed"] += event.detail["failed"]
    assert by_study == {
        first.study_uid: {"stored": 2, "failed": 0},
        second.study_uid: {"stored": 1, "failed": 0},
        "": {"stored": 0, "failed": 2},  # the two parts that never named a study
    }
    assert verify_chain().ok


@pytest.mark.django_db
def test_a_resent_instance_is_audited_although_no_row_is_written(upload_client: Client) -> None:
    part = make_instance(StudySpec())
    assert stow(upload_client, [part]).status_code == 200
    assert stow(upload_client, [part]).status_code == 200
    assert [(e.outcome, e.detail["stored"]) for e in store_records()] == [("success", 1), ("success", 1)]
    assert Instance.objects.count() == 1


@pytest.mark.django_db
def test_a_refused_conflict_is_audited_as_a_failure(upload_client: Client) -> None:
    spec = StudySpec()
    assert stow(upload_client, [make_instance(spec, sop_uid="1.2.3.4.5")]).status_code == 200
    other = make_instance(spec, sop_uid="1.2.3.4.5", instance_number=7)
    assert stow(upload_client, [other]).status_code == 409
    last = store_records()[-1]
    assert (last.outcome, last.detail["failed"], last.study_instance_uid) == ("failure", 1, spec.study_uid)
