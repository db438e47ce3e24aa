"""STOW-RS requests that fail after some of their parts were stored (PS3.18 §10.5.3).

Parts are indexed in batches of :data:`archive.dicomweb.stow.BATCH`; once one
batch is stored and audited, a later fault (the body grows past
``PACS_STOW_MAX_BYTES``, the disk refuses an object) must not answer a bare
413 or 503: the client would not know what was kept. The answer is 202 with
every stored instance in the Referenced SOP Sequence, the parts that could not
be stored in the Failed SOP Sequence, and parts never read told in the Warning
header. When nothing was stored, the bare 413 or 503 stays.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydicom
import pytest
from django.db import OperationalError, connection
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.dicomweb.stow import BATCH
from archive.models import Instance
from archive.storage.base import StagedObject
from archive.storage.registry import get_storage
from audit.models import AuditEvent
from tests.conftest import multipart, stow

OUT_OF_RESOURCES = 0xA700  # (0008,1197) Failure Reason: Refused: Out of Resources


def uids(part: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def listed(response: Any) -> tuple[list[str], list[int]]:
    """The SOP Instance UIDs of the Referenced SOP Sequence and the Failure Reasons of the Failed SOP Sequence."""
    body = json.loads(response.content)
    stored = [item["00081155"]["Value"][0] for item in body.get("00081199", {}).get("Value", [])]
    reasons = [item["00081197"]["Value"][0] for item in body.get("00081198", {}).get("Value", [])]
    return stored, reasons


def post_chunked(client: Client, body: bytes, content_type: str) -> Any:
    """POST ``body`` as a chunked upload reaches the view: no Content-Length, a stream its server ends."""
    environ: dict[str, Any] = {
        "HTTP_ACCEPT": "application/dicom+json",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "CONTENT_LENGTH": "",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
    }
    return client.post("/dicom-web/studies", body, content_type=content_type, **environ)


def assert_retrievable(client: Client, parts: list[bytes]) -> None:
    for part in parts:
        study, series, sop = uids(part)
        got: Any = client.get(
            f"/dicom-web/studies/{study}/series/{series}/instances/{sop}", HTTP_ACCEPT="application/dicom"
        )
        assert got.status_code == 200
        body = b"".join(got.streaming_content) if got.streaming else got.content
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(part).hexdigest()


def stored_sops_audited() -> int:
    return sum(event.detail["stored"] for event in AuditEvent.objects.filter(action="store"))


@pytest.mark.django_db
def test_a_body_that_grows_past_the_limit_after_a_stored_batch_lists_every_stored_instance(
    upload_client: Client, settings: Any
) -> None:
    good = make_series(StudySpec(patient_id="PARTIAL-413"), "CT", count=BATCH + 5, size=128)  # > 1 MiB: several reads
    big = secrets.token_bytes(1024 * 1024)
    after = make_series(StudySpec(patient_id="PARTIAL-413-AFTER"), "CT", count=1)
    body, ctype = multipart([*good, big, *after])
    settings.PACS_STOW_MAX_BYTES = len(multipart(good)[0]) + 256 * 1024  # the big part crosses the limit
    response = post_chunked(upload_client, body, ctype)
    assert response.status_code == 202, response.content
    stored, reasons = listed(response)
    assert stored == [uids(p)[2] for p in good]
    assert reasons == []  # the parts after the limit were never read: they cannot be named
    assert response["Warning"].startswith('299 http://testserver/dicom-web: "') and "not read" in response["Warning"]
    assert Instance.objects.count() == len(good)
    assert_retrievable(upload_client, good)
    assert stored_sops_audited() == len(good)
    assert list(get_storage("hot").staging_dir.iterdir()) == []


@pytest.mark.django_db
def test_a_body_over_the_limit_before_anything_is_stored_still_gets_a_bare_413(
    upload_client: Client, settings: Any
) -> None:
    body, ctype = multipart([secrets.token_bytes(512 * 1024)])
    settings.PACS_STOW_MAX_BYTES = 256 * 1024
    response = post_chunked(upload_client, body, ctype)
    assert response.status_code == 413
    assert "detail" in response.json()
    assert not Instance.objects.exists()
    assert list(get_storage("hot").staging_dir.iterdir()) == []


def failing_put(monkeypatch: pytest.MonkeyPatch, from_call: int) -> None:
    """The hot tier's put raises OSError (a disk error) from its ``from_call``-th call on."""
    storage = get_storage("hot")
    put = storage.put
    calls = 0

    def flaky(key: str, staged: StagedObject, sync: bool = True) -> None:
        nonlocal calls
        calls += 1
        if calls >= from_call:
            raise OSError("I/O error")
        put(key, staged, sync=sync)

    monkeypatch.setattr(storage, "put", flaky)


def index_locked_from_the_second_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexing a stored batch fails with "database is locked" from the second batch on."""
    import archive.ingest.store

    index_placed = archive.ingest.store._index_placed
    calls = 0

    def locked_from_the_second_batch(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OperationalError("database is locked")
        index_placed(*args, **kwargs)

    monkeypatch.setattr(archive.ingest.store, "_index_placed", locked_from_the_second_batch)


@pytest.mark.django_db
def test_a_disk_error_after_a_stored_batch_lists_the_stored_instances_and_fails_the_rest(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = make_series(StudySpec(patient_id="PARTIAL-503"), "CT", count=BATCH + 10)
    failing_put(monkeypatch, from_call=BATCH + 5)
    response = stow(upload_client, parts)
    assert response.status_code == 202, response.content
    stored, reasons = listed(response)
    assert stored == [uids(p)[2] for p in parts[:BATCH]]
    assert reasons == [OUT_OF_RESOURCES] * 10
    assert sorted(Instance.objects.values_list("sop_instance_uid", flat=True)) == sorted(stored)
    assert len(list(get_storage("hot").keys())) == BATCH  # the failed batch's placed objects were removed
    assert list(get_storage("hot").staging_dir.iterdir()) == []
    assert_retrievable(upload_client, parts[:BATCH])
    events = AuditEvent.objects.filter(action="store")
    assert sum(e.detail["stored"] for e in events) == BATCH
    assert sum(e.detail["failed"] for e in events) == 10


@pytest.mark.django_db
def test_a_disk_error_before_anything_is_stored_still_gets_a_bare_503(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = make_series(StudySpec(patient_id="PARTIAL-503-FIRST"), "CT", count=3)
    failing_put(monkeypatch, from_call=1)
    response = stow(upload_client, parts)
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert not Instance.objects.exists()
    assert list(get_storage("hot").keys()) == []


@pytest.mark.django_db
def test_an_index_lost_after_a_stored_batch_lists_the_stored_instances_and_fails_the_rest(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_locked_from_the_second_batch(monkeypatch)
    parts = make_series(StudySpec(patient_id="PARTIAL-INDEX"), "CT", count=BATCH + 3)
    response = stow(upload_client, parts)
    assert response.status_code == 202, response.content
    stored, reasons = listed(response)
    assert stored == [uids(p)[2] for p in parts[:BATCH]]
    assert reasons == [OUT_OF_RESOURCES] * 3
    assert Instance.objects.count() == BATCH
    assert len(list(get_storage("hot").keys())) == BATCH
    assert_retrievable(upload_client, parts[:BATCH])


@pytest.mark.django_db
def test_a_single_part_stow_that_the_disk_refuses_gets_503_with_retry_after(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    (part,) = make_series(StudySpec(patient_id="SINGLE-503"), "CT", count=1)
    failing_put(monkeypatch, from_call=1)
    response = upload_client.post(
        "/dicom-web/studies", part, content_type="application/dicom", HTTP_ACCEPT="application/dicom+json"
    )
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "30"
    assert not Instance.objects.exists()
    assert list(get_storage("hot").keys()) == []
    assert list(get_storage("hot").staging_dir.iterdir()) == []


@contextmanager
def index_goes_down(after: str = "", at: str = "") -> Iterator[None]:
    """Every SQL statement fails, as when the database goes away: from the first that contains ``at``,
    or from the one after the first that contains ``after`` (upper case).

    Savepoints still work: an ingest transaction rolls back to where it began, as a real one would.
    """
    down = False

    def failing(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal down
        statement = sql.upper()
        down = down or bool(at and at in statement)
        if down and not statement.lstrip().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            raise OperationalError("unable to open database file")
        result = execute(sql, params, many, context)
        down = down or bool(after and after in statement)
        return result

    with connection.execute_wrapper(failing):
        yield


# Real transactions: a failed audit append outside the ingest transaction ends the outermost one, as in production.
@pytest.mark.django_db(transaction=True)
def test_an_index_that_goes_down_after_a_stored_batch_still_gets_202_listing_the_stored_instances(
    upload_client: Client,
) -> None:
    parts = make_series(StudySpec(patient_id="PARTIAL-DOWN"), "CT", count=BATCH + 3)
    body, ctype = multipart([*parts, b"not dicom at all"])
    body = body.replace(b"application/dicom\r\n\r\nnot dicom", b"text/plain\r\n\r\nnot dicom")
    with index_goes_down(after="SET LAST_HASH"):  # once the first batch's audit record is written, before its commit
        response = upload_client.post(
            "/dicom-web/studies", body, content_type=ctype, HTTP_ACCEPT="application/dicom+json"
        )
    assert response.status_code == 202, response.content
    stored, reasons = listed(response)
    assert stored == [uids(p)[2] for p in parts[:BATCH]]
    assert reasons == [OUT_OF_RESOURCES] * 3 + [0xC000]
    assert Instance.objects.count() == BATCH
    assert len(list(get_storage("hot").keys())) == BATCH
    assert stored_sops_audited() == BATCH
    assert_retrievable(upload_client, parts[:BATCH])


@pytest.mark.django_db(transaction=True)
def test_an_index_down_before_anything_is_stored_still_gets_a_bare_503(upload_client: Client) -> None:
    parts = make_series(StudySpec(patient_id="PARTIAL-DOWN-FIRST"), "CT", count=3)
    with index_goes_down(at=Instance._meta.db_table.upper()):  # from the first look-up of the ingest path
        response = stow(upload_client, parts)
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "30"
    assert not Instance.objects.exists()
    assert list(get_storage("hot").keys()) == []


def failed_items(response: Any) -> list[dict[str, Any]]:
    return json.loads(response.content)["00081198"]["Value"]


@pytest.mark.django_db
def test_parts_the_index_could_not_take_are_named_in_the_failed_sop_sequence_and_audited_under_their_study(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_locked_from_the_second_batch(monkeypatch)
    spec = StudySpec(patient_id="PARTIAL-NAMED")
    parts = make_series(spec, "CT", count=BATCH + 3)
    response = stow(upload_client, parts)
    assert response.status_code == 202, response.content
    items = failed_items(response)
    assert [item["00081155"]["Value"][0] for item in items] == [uids(p)[2] for p in parts[BATCH:]]
    classes = {str(pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True).SOPClassUID) for p in parts[BATCH:]}
    assert {item["00081150"]["Value"][0] for item in items} == classes
    events = AuditEvent.objects.filter(action="store")
    assert {e.study_instance_uid for e in events} == {spec.study_uid}
    assert sum(e.detail["failed"] for e in events) == 3


@pytest.mark.django_db
def test_parts_the_disk_could_not_take_are_named_in_the_failed_sop_sequence(
    upload_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = make_series(StudySpec(patient_id="PARTIAL-DISK-NAMED"), "CT", count=BATCH + 2)
    failing_put(monkeypatch, from_call=BATCH + 1)
    response = stow(upload_client, parts)
    assert response.status_code == 202, response.content
    assert [item["00081155"]["Value"][0] for item in failed_items(response)] == [uids(p)[2] for p in parts[BATCH:]]
