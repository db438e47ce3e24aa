"""WADO-RS frames (PS3.18 §10.4.1.1.4): pixel data of one instance, frame by frame.

A frame is a ranged read of the stored file, using the byte ranges
precomputed at ingest (:class:`PixelSource`); pydicom reads the frames only
when the ranges are unknown or the client asks for decoded pixels. The one
ordinary request of every viewer — one stored frame read as stored — is also
answered by :mod:`archive.dicomweb.fastpath` outside Django's request cycle,
through :func:`fast_frame`: the same checks (:func:`check_frames`), the same
answer (:func:`answer_frames`), so the same ETag, conditional GET and audit.
:mod:`archive.dicomweb.bulkdata` shares the pixel source and the response.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

from django.core.cache import cache
from django.db import connections, router
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from archive.access import Visibility, visibility
from archive.bearer import user_from_bearer
from archive.dicom import transcode
from archive.dicom.transcode import OCTET_STREAM, TranscodeError
from archive.dicomweb.auth import READ_METHODS, bad_uid, dicomweb_view, uid_positions
from archive.dicomweb.http import (
    IMMUTABLE,
    audit_at_intervals,
    error,
    not_found,
    not_modified,
    parse_frame_list,
    strong_etag,
)
from archive.dicomweb.multipart import closing, encode_part, stream_parts
from archive.dicomweb.negotiation import PixelPlan, accept_header, frame_plan
from archive.dicomweb.restoring import Restoring, require_online
from archive.dicomweb.rows import COLUMNS, column_sql, instances, rows_sql
from archive.ingest.lastaccess import touch_study
from archive.models import Instance
from archive.storage.base import read_ranges_from
from archive.storage.keys import log_name
from archive.storage.registry import get_storage

log = logging.getLogger(__name__)


def pixel_offer(stored: str) -> str:
    """What pixel data of an object stored as ``stored`` can be sent as (for a 406)."""
    kind = transcode.media_type_of(stored)
    also = f" or {kind}; transfer-syntax={stored}" if kind != OCTET_STREAM else ""
    return f"application/octet-stream (Explicit VR Little Endian){also}"


@dataclass
class PixelSource:
    """The stored object a pixel request reads from."""

    pk: int
    tier: str
    key: str
    syntax: str
    n_frames: int
    frames: dict[int, list[list[int]]] | None  # frame index -> [offset, length] ranges
    sha256: str
    patient_id: str

    def options(self) -> dict[str, Any]:
        """Image Pixel attributes for decoding, from the stored metadata (cached per object)."""
        cache_key = f"wado:pixel:{self.sha256}"
        opts = cache.get(cache_key)
        if opts is None:
            text = Instance.objects.filter(pk=self.pk).values_list("metadata", flat=True).first() or "{}"
            opts = transcode.pixel_options(json.loads(text))
            cache.set(cache_key, opts, 3600)
        return dict(opts)

    def open(self) -> BinaryIO:
        """The stored file."""
        return get_storage(self.tier).open(self.key)

    def read(self, fh: BinaryIO, index: int) -> bytes:
        assert self.frames is not None
        return read_ranges_from(fh, self.frames[index], self.key)

    def frame_bytes(self, fh: BinaryIO, indices: list[int], decode: bool) -> Iterator[bytes]:
        """The requested frames, stored or decoded; pydicom reads them when ranges are unknown."""
        if self.frames is None:
            yield from transcode.frames_from_file(fh, indices, decode)
            return
        options = self.options() if decode else {}
        for index in indices:
            data = self.read(fh, index)
            yield transcode.decode_stored_frame(data, self.syntax, options) if decode else data

    def frame_parts(self, indices: list[int], decode: bool) -> Iterator[bytes]:
        """The frames at ``indices`` (0-based), one item each, read lazily from the stored file."""
        with self.open() as fh:
            yield from self.frame_bytes(fh, indices, decode)


class SourceRow(NamedTuple):
    """The columns a pixel source is built from (``frames``: all the ranges, or one frame's)."""

    id: int
    tier: str
    storage_key: str
    transfer_syntax_uid: str
    number_of_frames: int
    sha256: str
    patient_id: str
    availability: str
    frames: Any

    def source(self, only_frame: int | None) -> PixelSource:
        if self.frames is None:
            ranges = None
        elif only_frame is None:
            ranges = dict(enumerate(self.frames))
        else:
            ranges = {only_frame: self.frames}
        return PixelSource(
            self.id,
            self.tier,
            self.storage_key,
            self.transfer_syntax_uid,
            self.number_of_frames,
            ranges,
            self.sha256,
            self.patient_id or "",
        )


#: The plain columns of a :class:`SourceRow` (all but ``frames``), as ``values_list`` names them.
SOURCE_COLUMNS = tuple(COLUMNS.get(name, name) for name in SourceRow._fields[:-1])


def pixel_source(
    request: HttpRequest, study: str, series: str, instance: str, only_frame: int | None = None
) -> PixelSource | None:
    """The instance a pixel request reads, in one query.

    With ``only_frame`` the database extracts just that frame's byte ranges
    from the JSON list, so a 2,000-frame object costs no more than a 1-frame one.
    When the access policy can state the user's reach as plain values (a
    :class:`~archive.access.Visibility`) the query is one prepared SQL
    statement; otherwise it is built with the ORM from the policy's queryset.
    """
    seen = visibility(request.user)
    if seen is not None:
        row = _source_row_sql(seen, study, series, instance, only_frame)
    else:
        frames_field = "frames" if only_frame is None else f"frames__{only_frame}"
        qs = instances(request, study, series, instance).order_by()
        found = list(qs.values_list(*SOURCE_COLUMNS, frames_field)[:1])
        row = SourceRow._make(found[0]) if found else None
    if row is None:
        return None
    require_online([(row.id, row.availability)])
    return row.source(only_frame)


def _source_row_sql(
    seen: Visibility, study: str, series: str, instance: str, only_frame: int | None
) -> SourceRow | None:
    alias = router.db_for_read(Instance) or "default"
    connection = connections[alias]
    where, where_params = seen.where("st", connection.ops.quote_name)
    frames_sql, frames_params = _frames_column(connection.vendor, only_frame)
    select = (*(column_sql(alias, name) for name in SOURCE_COLUMNS), frames_sql)
    sql = rows_sql(alias, select, True, True, where)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*frames_params, study, series, instance, *where_params])
        found = cursor.fetchone()
    if found is None:
        return None
    row = SourceRow._make(found)
    return row._replace(frames=json.loads(row.frames)) if isinstance(row.frames, str) else row


def _frames_column(vendor: str, only_frame: int | None) -> tuple[str, list[Any]]:
    """SQL for the stored frame ranges (all, or the one frame), as JSON text."""
    if vendor == "postgresql":
        return ("i.frames::text", []) if only_frame is None else ("(i.frames -> %s::integer)::text", [only_frame])
    return ("i.frames", []) if only_frame is None else ("json_extract(i.frames, %s)", [f"$[{only_frame}]"])


def pixel_response(
    request: HttpRequest,
    source: PixelSource,
    plan: PixelPlan,
    parts: Iterator[bytes],
    etag: str,
    single_length: int | None,
    one_part: bool = False,
) -> HttpResponse:
    """Multipart or single-part response over ``parts`` (produced lazily).

    Each item of ``parts`` is one part, unless ``one_part`` says they are the
    successive chunks of a single part (a whole bulk data value).

    The first part is produced before the status is sent, so an object that
    cannot be read or decoded is reported as such instead of as a cut body.
    """
    if request.method != "HEAD":
        try:
            first = next(parts, None)
        except TranscodeError as exc:
            return error(406, f"{exc}; ask for transfer-syntax=* to receive the stored bytes")
        except OSError as exc:
            log.error("pixel data of %s unreadable: %s", log_name(source.key), exc)
            return error(503, "The stored object is not readable right now")
        parts = itertools.chain([] if first is None else [first], parts)
    if plan.multipart:
        boundary = "pacs-" + etag.strip('"')[:32]
        content_type = f'multipart/related; type="{plan.part_type}"; boundary={boundary}'
        header = encode_part(boundary, plan.content_type)
        name = log_name(source.key)
        each = [(name, itertools.chain([header], parts))] if one_part else ((name, (header, d)) for d in parts)
        body: Iterator[bytes] = stream_parts(boundary, each, (TranscodeError, OSError))
    else:
        content_type = plan.content_type
        body = parts
    response: Any
    if request.method == "HEAD":
        response = HttpResponse(content_type=content_type)
    else:
        response = StreamingHttpResponse(body, content_type=content_type)
    if single_length is not None and not plan.multipart:
        response["Content-Length"] = str(single_length)
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE
    response["Vary"] = "Accept"
    return response


def _stored_frame(source: PixelSource, plan: PixelPlan, index: int, etag: str) -> StreamingHttpResponse:
    """One stored frame as a ranged read: the hot path of every viewer.

    The frame is read once and handed to the server as it is, between its
    multipart header and trailer, never copied into one body.
    """
    assert source.frames is not None
    data = get_storage(source.tier).read_ranges(source.key, source.frames[index])
    if plan.multipart:
        boundary = "pacs-" + etag.strip('"')[:32]
        chunks = [encode_part(boundary, plan.content_type), data, b"\r\n" + closing(boundary)]
        content_type = f'multipart/related; type="{plan.part_type}"; boundary={boundary}'
    else:
        chunks, content_type = [data], plan.content_type
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Length"] = str(sum(len(c) for c in chunks))
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE
    response["Vary"] = "Accept, Authorization"
    return response


@dataclass(frozen=True)
class FrameRequest:
    """A frames request that passed every check: what to read and how to send it."""

    frames: str  # as in the URL (part of the ETag)
    numbers: list[int]  # 1-based, in the order asked
    source: PixelSource
    plan: PixelPlan

    def one_stored(self, method: str | None) -> bool:
        """True for the ordinary case: one frame, sent as stored, with known byte ranges, for a GET."""
        return len(self.numbers) == 1 and not self.plan.decode and self.source.frames is not None and method == "GET"


def check_frames(
    request: HttpRequest, study: str, series: str, instance: str, frames: str
) -> FrameRequest | HttpResponse:
    """The checks of the frames resource (valid UIDs given): the frame list, the instance, its frames, negotiation.

    A refusal comes back as its response (400, 404, 406).
    """
    try:
        numbers = parse_frame_list(frames)
    except ValueError as exc:
        return error(400, str(exc))
    source = pixel_source(request, study, series, instance, numbers[0] - 1 if len(numbers) == 1 else None)
    if source is None:
        return not_found("instance")
    if not source.n_frames:
        return error(404, "The instance has no pixel data")
    beyond = [n for n in numbers if n > source.n_frames]
    if beyond:
        return error(404, f"Frame {beyond[0]} does not exist: the instance has {source.n_frames} frame(s)")
    plan = frame_plan(accept_header(request), source.syntax, len(numbers) == 1)
    if plan is None:
        return error(406, f"Frames of this instance are available as {pixel_offer(source.syntax)}")
    return FrameRequest(frames, numbers, source, plan)


def answer_frames(request: HttpRequest, study: str, asked: FrameRequest) -> HttpResponseBase:
    """The response to a checked frames request: 304, the stored frame, or the frames as the plan says."""
    source, plan = asked.source, asked.plan
    touch_study(study)  # a dictionary lookup, but once an hour per study (archive/ingest/lastaccess.py)
    etag = strong_etag(source.sha256, asked.frames, plan.multipart, plan.content_type)
    unchanged = not_modified(request, etag, IMMUTABLE)
    if unchanged is not None:
        return unchanged
    audit_at_intervals(request, "view_frames", study, source.patient_id, {"level": "frames"})
    indices = [n - 1 for n in asked.numbers]
    if asked.one_stored(request.method):
        try:
            return _stored_frame(source, plan, indices[0], etag)
        except OSError as exc:
            log.error("pixel data of %s unreadable: %s", log_name(source.key), exc)
            return error(503, "The stored object is not readable right now")
    return pixel_response(request, source, plan, source.frame_parts(indices, plan.decode), etag, None)


@dicomweb_view(methods=READ_METHODS)
def retrieve_frames(request: HttpRequest, study: str, series: str, instance: str, frames: str) -> HttpResponseBase:
    asked = check_frames(request, study, series, instance, frames)
    return asked if isinstance(asked, HttpResponse) else answer_frames(request, study, asked)


def fast_frame(request: HttpRequest, study: str, series: str, instance: str, frame: str) -> HttpResponseBase | None:
    """The ordinary case of :func:`retrieve_frames`, for :mod:`archive.dicomweb.fastpath`; None for anything else.

    Ordinary means: a usable bearer token and one frame of a visible instance
    read as stored, answered 200 or 304. It runs the view's own checks and
    answer, so each refusal (401, 400, 404, 406, 503) is given by the full view
    only, with the same ETag, conditional GET and audit.
    """
    if bad_uid(FAST_FRAME_UIDS, (study, series, instance), {}) is not None:  # the decorator's own check
        return None
    user = user_from_bearer(request)
    if user is None:
        return None
    request.user = user
    try:
        asked = check_frames(request, study, series, instance, frame)
    except Restoring:
        return None  # the full view answers it (503, and the restore starts)
    if isinstance(asked, HttpResponse) or not asked.one_stored(request.method):
        return None
    response = answer_frames(request, study, asked)
    return response if response.status_code in (200, 304) else None


#: Where fast_frame's UID arguments stand, for :func:`~archive.dicomweb.auth.bad_uid` (it skips the decorator).
FAST_FRAME_UIDS = uid_positions(fast_frame)
