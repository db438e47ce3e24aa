"""The S3 storage backend against a real S3 server (SeaweedFS's ``weed``, from requirements-test.txt).

One SeaweedFS server runs per test session on free loopback ports in a
temporary directory; each test gets its own key prefix in one bucket. The
backend's own operations are checked first, then the whole archive with the
hot tier in S3: STOW-RS, WADO-RS, frames, rendered, DELETE and reindex.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
import urllib3.connection
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.ingest import trash
from archive.ingest.sweep import sweep_orphans
from archive.models import Instance
from archive.storage import registry
from archive.storage.base import StagedObject
from archive.storage.registry import get_storage
from archive.storage.s3 import WINDOW, S3Storage, S3StorageError
from archive.storage.staging import StagingWriter
from tests.archive.dicomweb.test_wado_retrieve import body_of, parts_of
from tests.archive.ingest.test_reindex import reindex
from tests.conftest import stow
from tests.s3servers import seaweedfs

BUCKET = "pacs-test"
ACCESS_KEY, SECRET_KEY = "pacs-test-key", "pacs-test-secret"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A SeaweedFS server with S3 on a free loopback port, a bucket, and key files for its credentials."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs"), BUCKET, ACCESS_KEY, SECRET_KEY) as server:
        yield server


def tier_config(server: dict[str, Any], prefix: str) -> dict[str, str]:
    return {
        "backend": "s3",
        "bucket": BUCKET,
        "endpoint_url": server["endpoint"],
        "region": "us-east-1",
        "prefix": prefix,
        "access_key_file": str(server["root"] / "access_key"),
        "secret_key_file": str(server["root"] / "secret_key"),
    }


@pytest.fixture
def s3_tier(s3_server: dict[str, Any], settings: Any, isolated_storage: Path) -> S3Storage:
    """The hot tier configured in S3 under a prefix of its own."""
    settings.PACS_TIERS = {"hot": tier_config(s3_server, f"t-{uuid.uuid4().hex}/")}
    registry.get_storage.cache_clear()
    backend = get_storage("hot")
    assert isinstance(backend, S3Storage)
    return backend


def staged(backend: S3Storage, data: bytes) -> StagedObject:
    writer = StagingWriter(backend, max_bytes=len(data))
    writer.write(data)
    return writer.finish()


def object_bytes(backend: S3Storage, key: str) -> bytes:
    with backend.open(key) as fh:
        return fh.read()


KEY = "1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm"
DATA = bytes(range(256)) * 4096  # 1 MiB with a recognisable pattern


@pytest.mark.django_db
def test_get_storage_builds_an_s3_tier_with_credentials_from_key_files(s3_tier: S3Storage, isolated_storage) -> None:
    assert s3_tier.bucket == BUCKET and s3_tier.prefix.startswith("t-")
    assert s3_tier.staging_dir.is_dir() and isolated_storage in s3_tier.staging_dir.parents


@pytest.mark.django_db
@pytest.mark.parametrize("multipart", [False, True], ids=["single-part", "multipart"])
def test_it_puts_reads_lists_and_deletes_objects(s3_tier: S3Storage, multipart: bool) -> None:
    if multipart:
        s3_tier.multipart_threshold = 1
    item = staged(s3_tier, DATA)
    assert not s3_tier.exists(KEY)
    s3_tier.put(KEY, item)
    s3_tier.sync([KEY])
    assert s3_tier.exists(KEY) and list(s3_tier.keys()) == [KEY]
    assert object_bytes(s3_tier, KEY) == DATA
    head = s3_tier.client.head_object(Bucket=BUCKET, Key=s3_tier.prefix + KEY)
    assert head["Metadata"]["sha256"] == item.sha256 and head["ContentLength"] == len(DATA)
    assert abs(s3_tier.modified(KEY) - time.time()) < 120
    s3_tier.delete(KEY)
    assert not s3_tier.exists(KEY) and list(s3_tier.keys()) == []
    s3_tier.delete(KEY)  # deleting what is gone is not an error


@pytest.mark.django_db
@pytest.mark.parametrize(
    "ranges",
    [
        [[0, 10]],
        [[100, 5], [113, 7]],  # near each other: one GET
        [[10, 3], [900_000, 4], [1_048_570, 6]],  # far apart, up to the last byte
    ],
)
def test_read_ranges_returns_the_concatenated_byte_ranges(s3_tier: S3Storage, ranges: list[list[int]]) -> None:
    s3_tier.put(KEY, staged(s3_tier, DATA))
    expected = b"".join(DATA[offset : offset + length] for offset, length in ranges)
    assert s3_tier.read_ranges(KEY, ranges) == expected


@pytest.mark.django_db
def test_a_frame_sized_read_is_one_ranged_get(s3_tier: S3Storage) -> None:
    s3_tier.put(KEY, staged(s3_tier, DATA))
    ranges: list[str] = []
    s3_tier.client.meta.events.register(
        "before-send.s3.GetObject", lambda request, **kw: ranges.append(request.headers["Range"].decode())
    )
    assert s3_tier.read_ranges(KEY, [[4096, 100], [4204, 100]]) == DATA[4096:4196] + DATA[4204:4304]
    assert ranges == ["bytes=4096-4303"]


@pytest.mark.django_db
def test_read_ranges_reports_an_object_shorter_than_the_index(s3_tier: S3Storage) -> None:
    s3_tier.put(KEY, staged(s3_tier, DATA))
    with pytest.raises(OSError, match="shorter"):
        s3_tier.read_ranges(KEY, [[len(DATA) - 10, 20]])


@pytest.mark.django_db
def test_open_gives_a_seekable_file(s3_tier: S3Storage) -> None:
    s3_tier.put(KEY, staged(s3_tier, DATA))
    with s3_tier.open(KEY) as fh:
        fh.seek(1000)
        assert fh.read(16) == DATA[1000:1016]
        fh.seek(-6, io.SEEK_END)
        assert fh.read() == DATA[-6:]
        assert fh.read(10) == b""
        fh.seek(0)
        assert fh.read(3) == DATA[:3] and fh.tell() == 3


def ranges_sent(backend: S3Storage) -> list[str]:
    """The Range header of every GetObject ``backend`` sends from now on."""
    sent: list[str] = []
    backend.client.meta.events.register(
        "before-send.s3.GetObject", lambda request, **kw: sent.append(request.headers["Range"].decode())
    )
    return sent


@pytest.mark.django_db
def test_a_read_through_open_is_one_bounded_ranged_get_of_the_exact_bytes(s3_tier: S3Storage) -> None:
    s3_tier.put(KEY, staged(s3_tier, DATA))
    sent = ranges_sent(s3_tier)
    with s3_tier.open(KEY) as fh:
        fh.seek(4096)
        assert fh.read(100) == DATA[4096:4196]
    assert sent == [f"bytes=4096-{4096 + WINDOW - 1}"]  # a window, never "to the end of the object"


@pytest.mark.django_db
def test_a_whole_object_read_through_open_comes_in_growing_windows(s3_tier: S3Storage) -> None:
    data = DATA * 5  # 5 MiB
    s3_tier.put(KEY, staged(s3_tier, data))
    sent = ranges_sent(s3_tier)
    with s3_tier.open(KEY) as fh:
        assert fh.read() == data
    mib = 1024 * 1024
    assert sent == [f"bytes=0-{mib - 1}", f"bytes={mib}-{3 * mib - 1}", f"bytes={3 * mib}-{7 * mib - 1}"]


@pytest.mark.django_db
def test_reads_through_open_give_their_connection_back_to_the_pool(
    s3_tier: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = DATA * 4  # frames of 512 KiB at random places in a 4 MiB object
    s3_tier.put(KEY, staged(s3_tier, data))
    connects: list[object] = []
    real_connect = urllib3.connection.HTTPConnection.connect
    monkeypatch.setattr(
        urllib3.connection.HTTPConnection, "connect", lambda self: (connects.append(self), real_connect(self))[1]
    )
    for offset in [0, 3_000_000, 700_000, 2_500_000, 1_234_567, 0]:
        with s3_tier.open(KEY) as fh:
            fh.seek(offset)
            assert fh.read(512 * 1024) == data[offset : offset + 512 * 1024]
    assert len(connects) <= 1  # one connection at most (the pool may have none open yet), reused by every read


@pytest.mark.django_db
def test_a_missing_object_is_file_not_found(s3_tier: S3Storage) -> None:
    assert not s3_tier.exists(KEY)
    with pytest.raises(FileNotFoundError):
        s3_tier.read_ranges(KEY, [[0, 1]])
    with pytest.raises(FileNotFoundError), s3_tier.open(KEY) as fh:
        fh.read(1)


@pytest.mark.django_db
@pytest.mark.parametrize("multipart", [False, True], ids=["single-part", "multipart"])
def test_it_never_overwrites_an_existing_key(s3_tier: S3Storage, multipart: bool) -> None:
    if multipart:
        s3_tier.multipart_threshold = 1
    s3_tier.put(KEY, staged(s3_tier, DATA))
    s3_tier.put(KEY, staged(s3_tier, DATA))  # the same bytes again: idempotent
    with pytest.raises(S3StorageError, match="does not match"):
        s3_tier.put(KEY, staged(s3_tier, b"other bytes under the same key"))
    assert object_bytes(s3_tier, KEY) == DATA


@pytest.mark.django_db
def test_an_object_written_without_its_sha256_is_not_trusted(s3_tier: S3Storage) -> None:
    s3_tier.client.put_object(Bucket=BUCKET, Key=s3_tier.prefix + KEY, Body=DATA)
    with pytest.raises(S3StorageError, match="does not match"):
        s3_tier.put(KEY, staged(s3_tier, DATA))


@pytest.mark.django_db
def test_keys_pages_through_many_objects(s3_tier: S3Storage) -> None:
    keys = sorted(f"1.2/1.2.{i}/1.2.{i}.1.0123456789abcdef.dcm" for i in range(1005))
    for key in keys:
        s3_tier.client.put_object(Bucket=BUCKET, Key=s3_tier.prefix + key, Body=b"x")
    assert sorted(s3_tier.keys()) == keys


# --------------------------------------------------------------------------- the archive with its hot tier in S3


@pytest.fixture
def s3_series(s3_tier: S3Storage, upload_client: Client) -> dict[str, Any]:
    """A stored CT series and an eight-frame ultrasound clip, through STOW-RS into S3."""
    spec = StudySpec(patient_id="S3-1")
    parts = make_series(spec, "CT", count=3, size=64) + [make_instance(spec, "US", size=32, frames=8)]
    response = stow(upload_client, parts)
    assert response.status_code == 200, response.content
    by_sop = {str(pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID): p for p in parts}
    return {"spec": spec, "parts": by_sop}


def url(instance: Instance) -> str:
    return (
        f"/dicom-web/studies/{instance.series.study.study_instance_uid}"
        f"/series/{instance.series.series_instance_uid}/instances/{instance.sop_instance_uid}"
    )


@pytest.mark.django_db
def test_stow_stores_every_instance_in_the_bucket_and_nothing_on_disk(
    s3_tier: S3Storage, s3_series: dict[str, Any], isolated_storage: Path
) -> None:
    keys = set(Instance.objects.values_list("storage_key", flat=True))
    assert len(keys) == 4 and set(s3_tier.keys()) == keys
    assert set(Instance.objects.values_list("tier", flat=True)) == {"hot"}
    local = [p for p in isolated_storage.rglob("*") if p.is_file()]
    assert local == []  # staging files are gone and no tier folder holds objects


@pytest.mark.django_db
def test_wado_returns_the_stored_bytes_from_s3(admin_client_token: Client, s3_series: dict[str, Any]) -> None:
    study = s3_series["spec"].study_uid
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = admin_client_token.get(f"/dicom-web/studies/{study}", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    returned = [content for _, content in parts_of(response)]
    assert sorted(returned) == sorted(s3_series["parts"].values())


@pytest.mark.django_db
def test_a_frame_request_returns_the_frame_bytes_from_s3(
    admin_client_token: Client, s3_series: dict[str, Any], s3_tier: S3Storage
) -> None:
    clip = Instance.objects.select_related("series__study").get(series__modality="US")
    ds = pydicom.dcmread(io.BytesIO(s3_series["parts"][clip.sop_instance_uid]))
    frame_length = len(ds.PixelData) // 8
    gets: list[str] = []
    s3_tier.client.meta.events.register(
        "before-send.s3.GetObject", lambda request, **kw: gets.append(request.headers["Range"].decode())
    )
    response = admin_client_token.get(url(clip) + "/frames/3", HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200
    assert body_of(response) == ds.PixelData[2 * frame_length : 3 * frame_length]
    assert len(gets) == 1  # a frame is one ranged GET


@pytest.mark.django_db
def test_a_several_frames_request_returns_each_frame_from_s3_with_bounded_gets(
    admin_client_token: Client, s3_series: dict[str, Any], s3_tier: S3Storage
) -> None:
    clip = Instance.objects.select_related("series__study").get(series__modality="US")
    ds = pydicom.dcmread(io.BytesIO(s3_series["parts"][clip.sop_instance_uid]))
    length = len(ds.PixelData) // 8
    sent = ranges_sent(s3_tier)
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    response = admin_client_token.get(url(clip) + "/frames/2,7", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    frames = [content for _, content in parts_of(response)]
    assert frames == [ds.PixelData[length : 2 * length], ds.PixelData[6 * length : 7 * length]]
    assert sent and all(not r.endswith("-") for r in sent)  # never "to the end of the object"


@pytest.mark.django_db
def test_rendered_reads_its_pixels_from_s3(admin_client_token: Client, s3_series: dict[str, Any]) -> None:
    ct = Instance.objects.select_related("series__study").filter(series__modality="CT").first()
    assert ct is not None
    response = admin_client_token.get(url(ct) + "/rendered", HTTP_ACCEPT="image/png")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert body_of(response).startswith(b"\x89PNG")


@pytest.mark.django_db
def test_delete_removes_the_objects_from_the_bucket(
    admin_client_token: Client, s3_series: dict[str, Any], s3_tier: S3Storage, django_capture_on_commit_callbacks
) -> None:
    assert len(list(s3_tier.keys())) == 4
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_token.delete(f"/dicom-web/studies/{s3_series['spec'].study_uid}")
    assert response.status_code == 204
    assert len(list(s3_tier.keys())) == 4  # a deleted study waits in the recoverable trash, objects kept
    with django_capture_on_commit_callbacks(execute=True):
        report = trash.purge(older_than=timedelta(0))
    assert report.purged == [s3_series["spec"].study_uid]
    assert list(s3_tier.keys()) == [] and not Instance.objects.exists()


@pytest.mark.django_db
def test_reindex_rebuilds_the_index_from_the_bucket(s3_series: dict[str, Any], s3_tier: S3Storage) -> None:
    before = dict(Instance.objects.values_list("storage_key", "sha256"))
    out, err = reindex("--wipe")
    assert err == ""
    assert dict(Instance.objects.values_list("storage_key", "sha256")) == before
    assert set(Instance.objects.values_list("tier", flat=True)) == {"hot"}
    assert not list(s3_tier.staging_dir.iterdir())  # downloaded copies are removed again


@pytest.mark.django_db
def test_sweep_removes_orphaned_objects_from_the_bucket_and_keeps_indexed_ones(
    s3_series: dict[str, Any], s3_tier: S3Storage
) -> None:
    orphan = "1.2.9/1.2.9.1/1.2.9.1.1.0123456789abcdef.dcm"
    item = staged(s3_tier, DATA)
    s3_tier.put(orphan, item)
    item.discard()
    assert sweep_orphans("hot", min_age=timedelta(0)).removed == 1
    assert set(s3_tier.keys()) == set(Instance.objects.values_list("storage_key", flat=True))


FOREIGN = [
    "other-app/x.dcm",
    "1.2.3/4.5/6.dcm",
    "notes.txt",
    "1.2.3/1.2.3.4/1.2.3.4.5.dcm",
    "a/b/c.0123456789abcdef.dcm",
]


@pytest.fixture(params=["own prefix", "empty prefix"])
def shared_bucket(request: pytest.FixtureRequest, s3_tier: S3Storage) -> Iterator[tuple[S3Storage, list[str]]]:
    """The hot tier in a bucket that also holds another application's objects, some named ``*.dcm``."""
    if request.param == "empty prefix":
        s3_tier.prefix = ""
    names = [s3_tier.prefix + name for name in FOREIGN]
    for name in names:
        s3_tier.client.put_object(Bucket=BUCKET, Key=name, Body=b"someone else's data")
    yield s3_tier, names
    for name in names:
        s3_tier.client.delete_object(Bucket=BUCKET, Key=name)


@pytest.mark.django_db
def test_keys_lists_only_the_archives_objects_in_a_shared_bucket(shared_bucket: tuple[S3Storage, list[str]]) -> None:
    tier, _ = shared_bucket
    tier.put(KEY, staged(tier, DATA))
    assert list(tier.keys()) == [KEY]
    tier.delete(KEY)


@pytest.mark.django_db
def test_sweep_leaves_another_applications_objects_in_a_shared_bucket(
    shared_bucket: tuple[S3Storage, list[str]],
) -> None:
    tier, names = shared_bucket
    report = sweep_orphans("hot", min_age=timedelta(0))
    assert (report.recovered, report.removed) == (0, 0)
    for name in names:
        assert tier.client.head_object(Bucket=BUCKET, Key=name)["ContentLength"] == len(b"someone else's data")


@pytest.mark.django_db
@pytest.mark.parametrize("name", FOREIGN)
def test_every_operation_refuses_a_key_that_is_not_an_object_key(s3_tier: S3Storage, name: str) -> None:
    s3_tier.client.put_object(Bucket=BUCKET, Key=s3_tier.prefix + name, Body=b"someone else's data")
    operations = [
        lambda: s3_tier.put(name, staged(s3_tier, DATA)),
        lambda: s3_tier.delete(name),
        lambda: s3_tier.exists(name),
        lambda: s3_tier.modified(name),
        lambda: s3_tier.read_ranges(name, [[0, 4]]),
        lambda: s3_tier.open(name).read(4),
    ]
    for operation in operations:
        with pytest.raises(ValueError, match="not an object key"):
            operation()
    assert s3_tier.client.head_object(Bucket=BUCKET, Key=s3_tier.prefix + name)["ContentLength"] == 19
