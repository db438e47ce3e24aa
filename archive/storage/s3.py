"""A storage tier in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph RGW...).

Objects are uploaded from the local staging file with a Content-MD5 the
server checks and the object's SHA-256 in its metadata, then verified by a
HEAD (size and SHA-256). An existing key is never overwritten: single-part
uploads are conditional (``If-None-Match: *``), multipart ones look first;
keys carry a prefix of the content hash, so a key that exists already holds
the same bytes. Reads are ranged GETs: :meth:`S3Storage.read_ranges` fetches a
frame in one request, and :meth:`S3Storage.open` gives a seekable file that
reads in bounded windows (one small GET for a frame, growing windows for a
whole object), so connections go back to the client's pool. Every S3 failure
surfaces as an :class:`OSError` (a missing key as :class:`FileNotFoundError`),
as the file-system backend's would. The bucket may be shared: only keys of
the archive's exact shape (:func:`~archive.storage.keys.check_key`) under the
prefix are listed or touched, so a sweep never reaches another application's
objects, even with an empty prefix.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from archive.storage.base import CHUNK, NotRestored, RestoreStatus, StagedObject, Storage
from archive.storage.keys import check_key, is_object_key

MISSING = {"404", "NoSuchKey", "NotFound"}
#: Storage classes whose objects need a RestoreObject before a GET.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
#: RestoreObject answers meaning a restore is already asked for (AWS: 409 RestoreAlreadyInProgress).
RESTORING = {"RestoreAlreadyInProgress", "409"}
EXPIRY_RE = re.compile(r'expiry-date="([^"]+)"')
EXISTS = {"412", "PreconditionFailed"}
# Ranges closer than this are fetched in one GET (frame fragments sit 8 bytes apart).
MERGE_GAP = 64 * 1024
#: The first GET of :class:`RangedObject` after an open or a seek (a frame or a header, mostly).
WINDOW = 1024 * 1024
#: Its largest GET, reached by doubling while reads continue where the last GET ended.
MAX_WINDOW = 64 * 1024 * 1024
#: Bytes of a window left unread that are read and dropped so its connection can be reused.
DRAIN = 256 * 1024


class S3StorageError(OSError):
    """An S3 request failed."""


@contextmanager
def _errors(key: str) -> Iterator[None]:
    """Translate boto errors into :class:`OSError` for ``key``."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in MISSING:
            raise FileNotFoundError(f"no object {key}") from exc
        if code == "InvalidObjectState":
            raise NotRestored(f"object {key} is in an archive storage class and not restored") from exc
        raise S3StorageError(f"S3 request for {key} failed: {code or exc}") from exc
    except BotoCoreError as exc:
        raise S3StorageError(f"S3 request for {key} failed: {exc}") from exc


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _read_secret(config: Mapping[str, Any], name: str) -> str | None:
    """``name`` from the file named by ``<name>_file`` (secrets never sit in the JSON itself)."""
    path = config.get(f"{name}_file")
    return Path(path).read_text().strip() if path else None


class S3Storage(Storage):
    """Objects in one bucket, under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        staging_dir: Path | str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        fsync: bool = True,
        multipart_threshold: int = 256 * 1024 * 1024,
        storage_class: str = "",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.fsync = fsync
        self.multipart_threshold = multipart_threshold
        self.storage_class = storage_class
        self.archival = storage_class.upper() in ARCHIVE_CLASSES
        self.staging_dir = Path(staging_dir)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        config = Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 5},
            # Content-MD5 protects uploads; the default CRC trailers are not understood by every S3 server.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], tier: str, root: Path, fsync: bool = True) -> S3Storage:
        """Built from one ``PACS_TIERS`` entry; without key files, boto3's usual chain (``AWS_*`` env) applies."""
        return cls(
            config["bucket"],
            root / ".staging" / tier,
            endpoint_url=config.get("endpoint_url"),
            region=config.get("region"),
            access_key=_read_secret(config, "access_key"),
            secret_key=_read_secret(config, "secret_key"),
            prefix=config.get("prefix", ""),
            fsync=fsync,
            storage_class=config.get("storage_class", ""),
        )

    def _name(self, key: str) -> str:
        """The bucket's name for the object key ``key``; :class:`ValueError` for any other shape.

        Every operation goes through here, so nothing but the archive's own
        objects (``study/series/sop.<hash>.dcm`` under the prefix) is ever
        read, written or deleted, whatever else shares the bucket.
        """
        return self.prefix + check_key(key)

    # ------------------------------------------------------------------ writes

    def put(self, key: str, staged: StagedObject, sync: bool = True) -> None:
        name = self._name(key)
        extra: dict[str, Any] = {"ContentType": "application/dicom", "Metadata": {"sha256": staged.sha256}}
        if self.storage_class:
            extra["StorageClass"] = self.storage_class
        with _errors(key):
            if staged.size <= self.multipart_threshold:
                with open(staged.path, "rb") as fh:
                    try:
                        self.client.put_object(
                            Bucket=self.bucket,
                            Key=name,
                            Body=fh,
                            ContentLength=staged.size,
                            ContentMD5=_md5(staged.path),
                            IfNoneMatch="*",
                            **extra,  # type: ignore[arg-type]
                        )
                    except ClientError as exc:
                        if _error_code(exc) not in EXISTS:
                            raise  # an existing key already holds the same bytes: verified below
            elif not self.exists(key):
                transfer = TransferConfig(multipart_threshold=self.multipart_threshold, multipart_chunksize=64 << 20)
                self.client.upload_file(str(staged.path), self.bucket, name, ExtraArgs=extra, Config=transfer)
        self._verify(key, staged)

    def _verify(self, key: str, staged: StagedObject) -> None:
        """The stored object must have the staged size and SHA-256."""
        with _errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        if head["ContentLength"] != staged.size or head.get("Metadata", {}).get("sha256") != staged.sha256:
            raise S3StorageError(f"object {key} in bucket {self.bucket} does not match what was uploaded")

    def sync(self, keys: list[str]) -> None:
        """Nothing to do: S3 acknowledges a PUT only once the object is durable."""

    def delete(self, key: str) -> None:
        with _errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    # ------------------------------------------------------------------ reads

    def exists(self, key: str) -> bool:
        try:
            with _errors(key):
                self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except FileNotFoundError:
            return False
        return True

    def stored_size(self, key: str) -> int:
        with _errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        return int(head["ContentLength"])

    def check(self) -> None:
        """The bucket must answer (HEAD bucket) with these credentials."""
        with _errors(f"bucket {self.bucket}"):
            self.client.head_bucket(Bucket=self.bucket)

    def modified(self, key: str) -> float:
        with _errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        return float(head["LastModified"].timestamp())

    def keys(self) -> Iterator[str]:
        """Every object key under the prefix; objects of other shapes (another application's) are not listed."""
        paginator = self.client.get_paginator("list_objects_v2")
        with _errors(self.prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if is_object_key(key):
                        yield key

    # ------------------------------------------------------------------ archive classes

    def restore(self, key: str, days: int) -> None:
        """RestoreObject for ``days`` days (Standard retrieval); one already under way is fine."""
        if not self.archival:
            return
        try:
            with _errors(key):
                self.client.restore_object(
                    Bucket=self.bucket,
                    Key=self._name(key),
                    RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": "Standard"}},
                )
        except (S3StorageError, NotRestored) as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ClientError) and _error_code(cause) in RESTORING):
                raise

    def restore_status(self, key: str) -> RestoreStatus:
        """From the HEAD's storage class and ``x-amz-restore`` header (absent: never restored)."""
        with _errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        archived = str(head.get("StorageClass") or self.storage_class or "STANDARD").upper() in ARCHIVE_CLASSES
        return parse_restore(head.get("Restore"), archived)

    def stored_digest(self, key: str) -> tuple[str | None, int]:
        """The SHA-256 stored in the object's metadata at upload and its size (a HEAD: nothing is read)."""
        with _errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        return head.get("Metadata", {}).get("sha256"), int(head["ContentLength"])

    def open(self, key: str) -> BinaryIO:
        return io.BufferedReader(RangedObject(self, key), buffer_size=CHUNK)

    def get_range(self, key: str, offset: int, length: int | None = None) -> Any:
        """The GetObject response for ``length`` bytes (or the rest) from ``offset``."""
        end = "" if length is None else str(offset + length - 1)
        with _errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._name(key), Range=f"bytes={offset}-{end}")

    def read_ranges(self, key: str, ranges: list[list[int]]) -> bytes:
        """One ranged GET per group of nearby ranges (a frame is usually one GET)."""
        parts = []
        for start, end, group in _merge(ranges):
            with _errors(key):
                span = self.get_range(key, start, end - start)["Body"].read()
            if len(span) != end - start:
                raise OSError(f"object {key} is shorter than its index says")
            parts += [span[offset - start : offset - start + length] for offset, length in group]
        return b"".join(parts)


def parse_restore(header: str | None, archived: bool) -> RestoreStatus:
    """What an ``x-amz-restore`` header says of an object (``archived``: it is in an archive class)."""
    if not archived:
        return RestoreStatus(readable=True)
    if not header:
        return RestoreStatus(readable=False)
    if 'ongoing-request="true"' in header:
        return RestoreStatus(readable=False, ongoing=True)
    match = EXPIRY_RE.search(header)
    expiry = None
    if match:
        try:
            expiry = parsedate_to_datetime(match.group(1))
        except (TypeError, ValueError):
            expiry = None
    return RestoreStatus(readable='ongoing-request="false"' in header, expiry=expiry)


def _merge(ranges: list[list[int]]) -> Iterator[tuple[int, int, list[list[int]]]]:
    """Consecutive ranges grouped while each starts within :data:`MERGE_GAP` of the group's end."""
    group: list[list[int]] = []
    start = end = 0
    for offset, length in ranges:
        if group and end <= offset <= end + MERGE_GAP:
            group.append([offset, length])
            end = offset + length
            continue
        if group:
            yield start, end, group
        group, start, end = [[offset, length]], offset, offset + length
    if group:
        yield start, end, group


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


class RangedObject(io.RawIOBase):
    """A seekable read-only view of one object: bounded ranged GETs from the current offset.

    Each GET asks for a window of the object, never "from here to the end":
    the first after an open or a seek is :data:`WINDOW` bytes (or the size
    asked, if larger), and each that continues where the last one ended is
    twice as large, up to :data:`MAX_WINDOW`, so a frame read costs one small
    GET and a whole object streams in a few. A window read to its end (or
    left with at most :data:`DRAIN` bytes, which are read and dropped) gives
    its connection back to the client's pool for the next request; only one
    left far from its end is closed.
    """

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.pos = 0
        self.size: int | None = None
        self.body: Any = None
        self.body_pos = -1
        self.body_end = -1  # where the open window ends
        self.window = 0  # the size of the last window asked for (0: none yet)
        self.last_end = -1  # where the last window ended

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        elif whence == io.SEEK_END:
            self.pos = self._size() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if self.pos < 0:
            raise OSError("negative seek position")
        return self.pos

    def _size(self) -> int:
        if self.size is None:
            with _errors(self.key):
                head = self.storage.client.head_object(Bucket=self.storage.bucket, Key=self.storage._name(self.key))
            self.size = int(head["ContentLength"])
        return self.size

    def _next_window(self, wanted: int) -> int:
        """The size of the GET that starts at the current offset: larger while the reads run on."""
        sequential = self.window and self.pos == self.last_end
        self.window = min(MAX_WINDOW, 2 * self.window) if sequential else WINDOW
        return max(self.window, wanted)

    def _open_window(self, wanted: int) -> bool:
        """A GET for the window at the current offset; False at or past the end of the object."""
        length = self._next_window(wanted)
        try:
            response = self.storage.get_range(self.key, self.pos, length)
        except S3StorageError as exc:
            if "InvalidRange" in str(exc):  # at or past the end
                self.size = self.pos if self.size is None else self.size
                return False
            raise
        total = response.get("ContentRange", "").rpartition("/")[2]
        got = int(response["ContentLength"])
        self.size = int(total) if total.isascii() and total.isdigit() else self.size
        self.body, self.body_pos, self.body_end = response["Body"], self.pos, self.pos + got
        self.last_end = self.pos + length
        return True

    def readinto(self, buffer: Any) -> int:
        if self.size is not None and self.pos >= self.size:
            return 0
        if self.body is not None and (self.body_pos != self.pos or self.body_pos >= self.body_end):
            self._close_body()
        if self.body is None and not self._open_window(len(buffer)):
            return 0
        with _errors(self.key):
            data = self.body.read(min(len(buffer), self.body_end - self.body_pos))
        n = len(data)
        if n == 0:
            raise S3StorageError(f"object {self.key} ended early")
        buffer[:n] = data
        self.pos += n
        self.body_pos = self.pos
        if self.body_pos >= self.body_end:
            self._close_body()
        return n

    def _close_body(self) -> None:
        """Done with the window: read what little is left (the connection goes back to the pool) and close it."""
        if self.body is None:
            return
        body, self.body = self.body, None
        try:
            if self.body_end - self.body_pos <= DRAIN:
                body.read()
        except (OSError, BotoCoreError):
            pass  # the connection is dropped instead of reused: nothing else is lost
        finally:
            body.close()

    def close(self) -> None:
        self._close_body()
        super().close()
