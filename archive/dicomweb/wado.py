"""WADO-RS (PS3.18 §10.4): retrieve studies, series and instances, and their metadata.

Every lookup is limited by the access policy (:mod:`archive.dicomweb.rows`),
so a study the user may not see is indistinguishable from one that does not
exist (404). Reads never parse DICOM on the fast paths: metadata is the
concatenation of the JSON precomputed at ingest. pydicom is used only to
transcode (:mod:`archive.dicom.transcode`).

Instances are streamed one chunk at a time, never a whole study in memory.
Content negotiation follows PS3.18 §8.7: stored bytes are returned unchanged
(SHA-256 identical) when the client accepts the stored transfer syntax,
otherwise the object is transcoded to Explicit VR Little Endian, otherwise 406.
Frames are in :mod:`archive.dicomweb.frames`, bulk data in :mod:`archive.dicomweb.bulkdata`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.cache import patch_vary_headers

from archive.dicom import transcode
from archive.dicom.part10 import BASE_MARK
from archive.dicom.transcode import TranscodeError
from archive.dicomweb.auth import READ_METHODS, dicomweb_view
from archive.dicomweb.http import (
    REVALIDATE,
    chunks,
    dicomweb_root,
    error,
    has_precondition,
    head_of,
    not_found,
    not_modified,
    strong_etag,
)
from archive.dicomweb.multipart import closing, encode_part, stream_parts
from archive.dicomweb.negotiation import DICOM, accept_header, acceptables, dicom_plan, json_media_type, output_syntax
from archive.dicomweb.restoring import require_online
from archive.dicomweb.rows import named_rows
from archive.ingest.lastaccess import touch_study
from archive.models import Availability
from archive.storage.keys import log_name
from archive.storage.registry import get_storage
from audit.trail import record

METADATA_MAX_AGE = 30
#: Bumped when the stored metadata text changes shape, so old ETags stop matching.
METADATA_VERSION = "1"
ESCAPED_MARK = json.dumps(BASE_MARK)[1:-1]


# --------------------------------------------------------------------------- retrieve (instances)


@dataclass
class Part10:
    """One stored object to send, and how."""

    tier: str
    key: str
    size: int
    syntax: str  # the transfer syntax of the bytes sent
    transcode: bool
    prepared: BinaryIO | None = None  # already transcoded

    def open(self) -> BinaryIO:
        """The bytes to send: the stored file, or its transcoded copy."""
        if self.prepared is not None:
            prepared, self.prepared = self.prepared, None
            return prepared
        return transcode_or_open(self)


class RetrieveRow(NamedTuple):
    """What retrieving an instance reads of it."""

    id: int
    availability: str
    tier: str
    storage_key: str
    size: int
    transfer_syntax_uid: str
    rows: int | None
    columns: int | None
    number_of_frames: int
    sha256: str
    patient_id: str


def _retrieve(
    request: HttpRequest, level: str, study: str, series: str | None = None, instance: str | None = None
) -> HttpResponse:
    plan = dicom_plan(acceptables(accept_header(request), DICOM), single_ok=instance is not None)
    if plan is None:
        return error(
            406, 'Acceptable here: multipart/related; type="application/dicom" (and application/dicom for one instance)'
        )
    multipart, wanted = plan
    rows = named_rows(request, study, series, instance, RetrieveRow)
    if not rows:
        return not_found(level)
    require_online((r.id, r.availability) for r in rows)
    objects = []
    for row in rows:
        pixels = (row.rows or 0) * (row.columns or 0) * max(row.number_of_frames, 1)
        chosen = output_syntax(row.transfer_syntax_uid, wanted, pixels)
        if chosen is None:
            asked = ", ".join(w or "default" for w in wanted)
            return error(406, f"An instance is stored as {row.transfer_syntax_uid} and cannot be sent as {asked}")
        objects.append(Part10(row.tier, row.storage_key, row.size, chosen[0], chosen[1]))
    etag = None if multipart else strong_etag(rows[0].sha256, objects[0].syntax)
    if etag is not None and (unchanged := not_modified(request, etag, REVALIDATE)) is not None:
        return unchanged
    head = request.method == "HEAD"
    if objects[0].transcode and not head:
        # Transcode the first object before the status goes out, so an object
        # that cannot be decoded is a 406 rather than a cut-off body.
        try:
            objects[0].prepared = transcode_or_open(objects[0])
        except TranscodeError as exc:
            return error(406, str(exc))
    response = _single_dicom(objects[0], etag) if etag is not None else _multipart_dicom(objects, rows)
    if not head:
        record("retrieve", request, patient_id=rows[0].patient_id, study_instance_uid=study, detail={"level": level})
        touch_study(study)
    response["Vary"] = "Accept"
    return head_of(response) if head else response


def _multipart_dicom(objects: list[Part10], rows: list[RetrieveRow]) -> HttpResponse:
    boundary = "pacs-" + hashlib.sha256("".join(r.sha256 for r in rows).encode()).hexdigest()[:32]
    headers = [encode_part(boundary, f"{DICOM}; transfer-syntax={o.syntax}") for o in objects]
    parts = ((log_name(o.key), _dicom_part(o, header)) for o, header in zip(objects, headers, strict=True))
    response = StreamingHttpResponse(
        stream_parts(boundary, parts, (TranscodeError, OSError)),
        content_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
    )
    if not any(o.transcode for o in objects):
        length = sum(len(h) + o.size + 2 for h, o in zip(headers, objects, strict=True)) + len(closing(boundary))
        response["Content-Length"] = str(length)
    return response  # type: ignore[return-value]


def _dicom_part(obj: Part10, header: bytes) -> Iterator[bytes]:
    """One object's part: its header once the object is open, then its bytes."""
    with obj.open() as fh:
        yield header
        yield from chunks(fh)


def transcode_or_open(obj: Part10) -> BinaryIO:
    """The bytes to send for ``obj``: the stored file, or its transcoded copy."""
    fh = get_storage(obj.tier).open(obj.key)
    if not obj.transcode:
        return fh
    with fh:
        return transcode.to_explicit_little_endian(fh)


def _single_dicom(obj: Part10, etag: str) -> HttpResponse:
    """One instance as a bare application/dicom body."""
    response = StreamingHttpResponse(_closing_chunks(obj), content_type=f"{DICOM}; transfer-syntax={obj.syntax}")
    if not obj.transcode:
        response["Content-Length"] = str(obj.size)
    response["ETag"] = etag
    response["Cache-Control"] = REVALIDATE
    return response  # type: ignore[return-value]


def _closing_chunks(obj: Part10) -> Iterator[bytes]:
    with obj.open() as src:
        yield from chunks(src)


@dicomweb_view(methods=READ_METHODS)
def retrieve_study(request: HttpRequest, study: str) -> HttpResponse:
    return _retrieve(request, "study", study)


@dicomweb_view(methods=READ_METHODS)
def retrieve_series(request: HttpRequest, study: str, series: str) -> HttpResponse:
    return _retrieve(request, "series", study, series)


@dicomweb_view(methods=READ_METHODS)
def retrieve_instance(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponse:
    return _retrieve(request, "instance", study, series, instance)


# --------------------------------------------------------------------------- metadata


class MetadataRow(NamedTuple):
    """What the metadata of an instance is made of."""

    sha256: str
    availability: str
    metadata: str
    patient_id: str


class ContentRow(NamedTuple):
    """What decides a metadata ETag: the stored content of each instance, and where it can be read now."""

    sha256: str
    availability: str


#: Instance Availability as stored at ingest (always ONLINE then), and what it becomes on a slower tier.
STORED_AVAILABILITY = '"00080056":{"vr":"CS","Value":["ONLINE"]}'


def _content(sha256: str, availability: str) -> str:
    """What a row adds to the metadata ETag (an ONLINE row its SHA-256 alone, so existing ETags stay valid)."""
    return sha256 if availability == Availability.ONLINE else f"{sha256}:{availability}"


def _instance_metadata(row: MetadataRow) -> str:
    """The stored JSON of an instance, with its (0008,0056) Instance Availability as of now."""
    if row.availability == Availability.ONLINE:
        return row.metadata
    return row.metadata.replace(STORED_AVAILABILITY, STORED_AVAILABILITY.replace("ONLINE", row.availability), 1)


def _metadata(
    request: HttpRequest, level: str, study: str, series: str | None = None, instance: str | None = None
) -> HttpResponse:
    media_type = json_media_type(accept_header(request))
    if media_type is None:
        return error(406, "Metadata is available as application/dicom+json only")
    root = dicomweb_root(request)
    cache_control = REVALIDATE if instance else f"private, max-age={METADATA_MAX_AGE}"
    if has_precondition(request):
        # A precondition (If-None-Match or If-Match) reads the content hashes only, not the metadata.
        shas = [_content(*row) for row in named_rows(request, study, series, instance, ContentRow)]
        if not shas:
            return not_found(level)
        etag = strong_etag(METADATA_VERSION, root, *_as_json(media_type), *shas)
        if (unchanged := not_modified(request, etag, cache_control)) is not None:
            return unchanged
    rows = named_rows(request, study, series, instance, MetadataRow)
    if not rows:
        return not_found(level)
    etag = strong_etag(
        METADATA_VERSION, root, *_as_json(media_type), *(_content(r.sha256, r.availability) for r in rows)
    )
    escaped_root = json.dumps(root)[1:-1]
    body = ("[" + ",".join(map(_instance_metadata, rows)) + "]").replace(ESCAPED_MARK, escaped_root)
    encoded = body.encode()
    if request.method == "HEAD":
        response = HttpResponse(content_type=media_type)
        response["Content-Length"] = str(len(encoded))
    else:
        record("view", request, patient_id=rows[0].patient_id, study_instance_uid=study, detail={"level": level})
        touch_study(study)
        response = HttpResponse(encoded, content_type=media_type)
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    patch_vary_headers(response, ("Accept",))
    return response


def _as_json(media_type: str) -> tuple[str, ...]:
    """What the metadata ETag adds for a body labelled application/json (nothing for the usual type,
    so the ETags clients already hold stay valid)."""
    return (media_type,) if media_type != "application/dicom+json" else ()


@dicomweb_view(methods=READ_METHODS)
def study_metadata(request: HttpRequest, study: str) -> HttpResponse:
    return _metadata(request, "study", study)


@dicomweb_view(methods=READ_METHODS)
def series_metadata(request: HttpRequest, study: str, series: str) -> HttpResponse:
    return _metadata(request, "series", study, series)


@dicomweb_view(methods=READ_METHODS)
def instance_metadata(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponse:
    return _metadata(request, "instance", study, series, instance)
