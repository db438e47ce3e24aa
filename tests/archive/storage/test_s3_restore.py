"""Restore semantics of archive storage classes, against moto in server mode (SeaweedFS has no RestoreObject).

One moto server (``python -m moto.server``) runs per test session on a free
loopback port. Restores complete by moto's state manager: the tests set the
``s3::keyrestore`` transition to ``manual`` (a restore stays under way for a
given number of reads of the object, then is done), so both answers of the
``x-amz-restore`` header are seen: ``ongoing-request="true"`` and then
``ongoing-request="false", expiry-date="…"``.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archive.storage.base import NotRestored, StagedObject
from archive.storage.s3 import S3Storage, parse_restore
from tests.s3servers import moto

BUCKET = "pacs-archive"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto's S3 in server mode on a free loopback port, with a bucket and key files."""
    with moto(tmp_path_factory.mktemp("moto"), BUCKET) as server:
        yield server


def restore_takes(server: dict[str, Any], reads: int) -> None:
    """Make moto's restores stay under way for ``reads`` reads of the object (0: done at once)."""
    transition = {"progression": "manual", "times": reads} if reads else {"progression": "immediate"}
    request = urllib.request.Request(
        server["endpoint"] + "/moto-api/state-manager/set-transition",
        data=json.dumps({"model_name": "s3::keyrestore", "transition": transition}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - a loopback URL of the test
        assert answer.status == 201


def archive_config(server: dict[str, Any], storage_class: str = "GLACIER") -> dict[str, str]:
    """A tier in moto's bucket under a prefix of its own, in ``storage_class``."""
    return {
        "backend": "s3",
        "bucket": BUCKET,
        "endpoint_url": server["endpoint"],
        "region": "us-east-1",
        "prefix": f"a-{uuid.uuid4().hex}/",
        "access_key_file": str(server["root"] / "access_key"),
        "secret_key_file": str(server["root"] / "secret_key"),
        "storage_class": storage_class,
    }


def put(storage: S3Storage, tmp_path: Path, data: bytes) -> str:
    key = f"1.2.3/1.2.3.4/1.2.3.4.5.{hashlib.sha256(data).hexdigest()[:16]}.dcm"
    path = tmp_path / "obj"
    path.write_bytes(data)
    storage.put(key, StagedObject(path, hashlib.sha256(data).hexdigest(), len(data)))
    return key


def glacier(server: dict[str, Any], tmp_path: Path, storage_class: str = "GLACIER") -> S3Storage:
    config = archive_config(server, storage_class)
    return S3Storage.from_config(config, tier="archive", root=tmp_path)


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_an_archived_object_is_unreadable_until_restored_then_readable_until_expiry(
    moto_server: dict[str, Any], tmp_path: Path, storage_class: str
) -> None:
    restore_takes(moto_server, 2)
    storage = glacier(moto_server, tmp_path, storage_class)
    assert storage.archival
    data = b"DICM" * 1000
    key = put(storage, tmp_path, data)
    head = moto_server["client"].head_object(Bucket=BUCKET, Key=storage.prefix + key)
    assert head["StorageClass"] == storage_class
    assert storage.restore_status(key).readable is False
    assert storage.restore_status(key).ongoing is False
    with pytest.raises(NotRestored):
        storage.open(key).read()
    with pytest.raises(NotRestored):
        storage.read_ranges(key, [[0, 4]])

    storage.restore(key, days=2)
    seen = []
    for _ in range(8):
        status = storage.restore_status(key)
        seen.append(status)
        if status.readable:
            break
    assert any(s.ongoing and not s.readable for s in seen), "the restore was never seen under way"
    done = seen[-1]
    assert done.readable and not done.ongoing
    assert done.expiry is not None
    assert timedelta(days=1) < done.expiry - datetime.now(UTC) <= timedelta(days=2, minutes=1)
    with storage.open(key) as fh:
        assert fh.read() == data
    assert storage.read_ranges(key, [[4, 4]]) == b"DICM"


def test_asking_for_a_restore_twice_is_harmless(moto_server: dict[str, Any], tmp_path: Path) -> None:
    restore_takes(moto_server, 3)
    storage = glacier(moto_server, tmp_path)
    key = put(storage, tmp_path, b"x" * 100)
    storage.restore(key, days=1)
    storage.restore(key, days=1)
    while not storage.restore_status(key).readable:
        pass
    storage.restore(key, days=1)
    assert storage.restore_status(key).readable


def test_a_copy_on_an_archive_class_is_verified_by_its_head(moto_server: dict[str, Any], tmp_path: Path) -> None:
    storage = glacier(moto_server, tmp_path)
    data = b"y" * 333
    key = put(storage, tmp_path, data)
    assert storage.stored_digest(key) == (hashlib.sha256(data).hexdigest(), 333)


def test_a_standard_object_needs_no_restore(moto_server: dict[str, Any], tmp_path: Path) -> None:
    storage = glacier(moto_server, tmp_path, "STANDARD_IA")
    key = put(storage, tmp_path, b"z" * 10)
    assert not storage.archival
    storage.restore(key, days=1)  # nothing to do
    assert storage.restore_status(key).readable


def test_the_restore_header_is_read_as_aws_writes_it() -> None:
    assert parse_restore(None, archived=True).readable is False
    assert parse_restore('ongoing-request="true"', archived=True).ongoing is True
    done = parse_restore('ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"', archived=True)
    assert done.readable and done.expiry == datetime(2012, 12, 21, tzinfo=UTC)
    assert parse_restore(None, archived=False).readable is True
