"""WADO-RS (PS3.18 §10.4): retrieve instances, metadata and frames.

Every lookup is limited by the access policy (its compiled
:class:`~archive.access.Visibility` condition in one prepared statement, or
:func:`archive.access.visible_studies`), so a study the user may not see is
indistinguishable from one that does not exist (404).
Reads never parse DICOM on the fast paths: metadata is the concatenation of
the JSON precomputed at ingest, and a frame is a ranged read of the stored
file using the byte ranges precomputed at ingest. pydicom is used only to
transcode (:mod:`archive.dicom.transcode`) or when the frame ranges are unknown.

Instances are streamed one chunk at a time, never a whole study in memory.
Content negotiation follows PS3.18 §8.7: stored bytes are returned unchanged
(SHA-256 identical) when the client accepts the stored transfer syntax,
otherwise the object is transcoded to Explicit VR Little Endian, otherwise 406.
Bulk data (the ``bulkdata`` resource) is in :mod:`archive.dicomweb.bulkdata`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from django.core.cache import cache
from django.db import connections, router
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils.cache import patch_vary_headers

from archive.access import Visibility, visibility, visible_studies
from archive.dicom import transcode
from archive.dicom.part10 import BASE_MARK
from archive.dicom.transcode import OCTET_STREAM, TranscodeError
from archive.dicom.uid import is_valid_uid
from archive.dicomweb.auth import dicomweb_view, user_from_bearer
from archive.dicomweb.http import dicomweb_root, error
from archive.dicomweb.multipart import closing, encode_part
from archive.dicomweb.negotiation import (
    DICOM,
    PixelPlan,
    accept_header,
    acceptables,
    dicom_plan,
    frame_plan,
    json_media_type,
    output_syntax,
)
from archive.models import Instance, Patient, Series, Study
from archive.storage.base import read_ranges_from
from archive.storage.keys import log_name
from archive.storage.registry import get_storage
from audit.trail import record

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
METADATA_MAX_AGE = 30
IMMUTABLE = "private, max-age=31536000, immutable"
FRAMES_AUDIT_SECONDS = 300
MAX_FRAMES_PER_REQUEST = 10_000
#: Bumped when the stored metadata text changes shape, so old ETags stop matching.
METADATA_VERSION = "1"
FRAME_LIST_RE = re.compile(r"^[0-9]+(,[0-9]+)*\Z")
ESCAPED_MARK = json.dumps(BASE_MARK)[1:-1]


# --------------------------------------------------------------------------- shared helpers


def _check(
    request: HttpRequest, study: str, series: str | None = None, instance: str | None = None
) -> HttpResponse | None:
    """405 for methods other than GET/HEAD, 400 for a malformed UID; None if fine."""
    if request.method not in ("GET", "HEAD"):
        return error(405, "Only GET and HEAD are allowed on this resource", allow="GET, HEAD")
    for value, what in ((study, "Study"), (series, "Series"), (instance, "SOP")):
        if value is not None and not is_valid_uid(value):
            return error(400, f"The {what} Instance UID in the URL is not a valid DICOM UID")
    return None


def _instances(
    request: HttpRequest, study: str, series: str | None = None, instance: str | None = None
) -> QuerySet[Instance]:
    """The instances under a URL the user may see, in series then instance order."""
    studies: QuerySet[Study] = visible_studies(request.user).filter(study_instance_uid=study)
    qs = Instance.objects.filter(series__study__in=studies.values("pk"))
    if series is not None:
        qs = qs.filter(series__series_instance_uid=series)
    if instance is not None:
        qs = qs.filter(sop_instance_uid=instance)
    return qs.order_by("series__series_number", "series_id", "instance_number", "pk")


#: The one column of another table a lookup may name, as ``values_list`` names it.
PATIENT_ID = "series__study__patient__patient_id"


def _instance_rows(
    request: HttpRequest, study: str, series: str | None, instance: str | None, fields: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """``_instances(...).values_list(*fields)``, as one prepared statement when the policy allows.

    Retrieve and metadata requests run this on every call, and building the
    ORM query cost more than running it. When the access policy states the
    user's reach as plain values (:class:`~archive.access.Visibility`) the
    statement is built once per shape and cached; otherwise the ORM builds it
    from the policy's queryset. ``fields`` are plain columns of the instance
    (no JSON) or :data:`PATIENT_ID`; both forms return the same rows in the same order.
    """
    seen = visibility(request.user)
    if seen is None:
        return list(_instances(request, study, series, instance).values_list(*fields))
    alias = router.db_for_read(Instance) or "default"
    connection = connections[alias]
    where, where_params = seen.where("st", connection.ops.quote_name)
    select = tuple(_column_sql(alias, name) for name in fields)
    sql = _rows_sql(alias, select, series is not None, instance is not None, where)
    keys = [key for key in (study, series, instance) if key is not None]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*keys, *where_params])
        return cursor.fetchall()


@functools.lru_cache(maxsize=64)
def _column_sql(alias: str, name: str) -> str:
    if name == PATIENT_ID:
        return f"pa.{_column(alias, Patient, 'patient_id')}"
    field = Instance._meta.get_field(name)
    if field.get_internal_type() == "JSONField" or field.is_relation:
        raise ValueError(f"{name} is not a plain column of the instance")
    return f"i.{_column(alias, Instance, name)}"


def _column(alias: str, model: type[Model], name: str) -> str:
    return connections[alias].ops.quote_name(str(model._meta.get_field(name).column))  # type: ignore[union-attr]


@functools.lru_cache(maxsize=256)
def _rows_sql(alias: str, select: tuple[str, ...], by_series: bool, by_instance: bool, where: str) -> str:
    """SELECT ``select`` from the instances of one study (series, instance) the condition ``where`` lets through.

    Parameters, in order: those of ``select``, the study UID, the series UID
    and the SOP Instance UID (when asked for), then those of ``where``. Rows
    come in :func:`_instances`'s order.
    """
    quote = connections[alias].ops.quote_name
    column = functools.partial(_column, alias)
    i, se, st, pa = (quote(m._meta.db_table) for m in (Instance, Series, Study, Patient))
    keys = [f"st.{column(Study, 'study_instance_uid')} = %s"]
    if by_series:
        keys.append(f"se.{column(Series, 'series_instance_uid')} = %s")
    if by_instance:
        keys.append(f"i.{column(Instance, 'sop_instance_uid')} = %s")
    # Only model metadata and the policy's fixed condition text are interpolated; values are parameters.
    return (
        f"SELECT {', '.join(select)} "  # noqa: S608
        f"FROM {i} i JOIN {se} se ON se.{column(Series, 'id')} = i.{column(Instance, 'series')} "
        f"JOIN {st} st ON st.{column(Study, 'id')} = se.{column(Series, 'study')} "
        f"JOIN {pa} pa ON pa.{column(Patient, 'id')} = st.{column(Study, 'patient')} "
        f"WHERE {' AND '.join(keys)} AND {where} "
        f"ORDER BY se.{column(Series, 'series_number')}, i.{column(Instance, 'series')}, "
        f"i.{column(Instance, 'instance_number')}, i.{column(Instance, 'id')}"
    )


def _not_found(level: str) -> HttpResponse:
    return error(404, f"No such {level}, or you may not see it")


def _etag(*parts: object) -> str:
    return '"' + hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40] + '"'


def _matches(request: HttpRequest, etag: str) -> bool:
    header = request.META.get("HTTP_IF_NONE_MATCH", "")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def _not_modified(etag: str, cache_control: str) -> HttpResponse:
    response = HttpResponse(status=304)
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    return response


def _head(response: HttpResponse | StreamingHttpResponse) -> HttpResponse:
    """The headers of ``response`` without its body (the body is never produced)."""
    head = HttpResponse(status=response.status_code)
    for name, value in response.items():
        head[name] = value
    return head


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


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


def _retrieve(
    request: HttpRequest, level: str, study: str, series: str | None = None, instance: str | None = None
) -> HttpResponse:
    bad = _check(request, study, series, instance)
    if bad:
        return bad
    plan = dicom_plan(acceptables(accept_header(request), DICOM), single_ok=instance is not None)
    if plan is None:
        return error(
            406, 'Acceptable here: multipart/related; type="application/dicom" (and application/dicom for one instance)'
        )
    multipart, wanted = plan
    rows = _instance_rows(request, study, series, instance, RETRIEVE_FIELDS)
    if not rows:
        return _not_found(level)
    objects = []
    for tier, key, size, stored, n_rows, n_cols, n_frames, _sha, _pid in rows:
        chosen = output_syntax(stored, wanted, (n_rows or 0) * (n_cols or 0) * max(n_frames, 1))
        if chosen is None:
            asked = ", ".join(w or "default" for w in wanted)
            return error(406, f"An instance is stored as {stored} and cannot be sent as {asked}")
        objects.append(Part10(tier, key, size, chosen[0], chosen[1]))
    etag = None if multipart else _etag(rows[0][7], objects[0].syntax)
    if etag is not None and _matches(request, etag):
        return _not_modified(etag, IMMUTABLE)
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
        record("retrieve", request, patient_id=rows[0][8], study_instance_uid=study, detail={"level": level})
    response["Vary"] = "Accept"
    return _head(response) if head else response


RETRIEVE_FIELDS = (
    "tier", "storage_key", "size", "transfer_syntax_uid", "rows", "columns", "number_of_frames", "sha256", PATIENT_ID
)  # fmt: skip


def _multipart_dicom(objects: list[Part10], rows: list[Any]) -> HttpResponse:
    boundary = "pacs-" + hashlib.sha256("".join(r[7] for r in rows).encode()).hexdigest()[:32]
    headers = [encode_part(boundary, f"{DICOM}; transfer-syntax={o.syntax}") for o in objects]
    response = StreamingHttpResponse(
        _dicom_stream(boundary, objects, headers),
        content_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
    )
    if not any(o.transcode for o in objects):
        length = sum(len(h) + o.size + 2 for h, o in zip(headers, objects, strict=True)) + len(closing(boundary))
        response["Content-Length"] = str(length)
    return response  # type: ignore[return-value]


def _dicom_stream(boundary: str, objects: list[Part10], headers: list[bytes]) -> Iterator[bytes]:
    for obj, header in zip(objects, headers, strict=True):
        try:
            with obj.open() as fh:
                yield header
                yield from _chunks(fh)
        except (TranscodeError, OSError) as exc:
            # The status is already sent: end without the closing delimiter so
            # the client sees an incomplete multipart body, not a silent gap.
            log.error("retrieve of %s stopped: %s", log_name(obj.key), exc)
            return
        yield b"\r\n"
    yield closing(boundary)


def transcode_or_open(obj: Part10) -> BinaryIO:
    """The bytes to send for ``obj``: the stored file, or its transcoded copy."""
    fh = _open(obj.tier, obj.key)
    if not obj.transcode:
        return fh
    with fh:
        return transcode.to_explicit_little_endian(fh)


def _open(tier: str, key: str) -> BinaryIO:
    return get_storage(tier).open(key)


def _single_dicom(obj: Part10, etag: str) -> HttpResponse:
    """One instance as a bare application/dicom body."""
    response = StreamingHttpResponse(_closing_chunks(obj), content_type=f"{DICOM}; transfer-syntax={obj.syntax}")
    if not obj.transcode:
        response["Content-Length"] = str(obj.size)
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE
    return response  # type: ignore[return-value]


def _closing_chunks(obj: Part10) -> Iterator[bytes]:
    with obj.open() as src:
        yield from _chunks(src)


@dicomweb_view
def retrieve_study(request: HttpRequest, study: str) -> HttpResponse:
    return _retrieve(request, "study", study)


@dicomweb_view
def retrieve_series(request: HttpRequest, study: str, series: str) -> HttpResponse:
    return _retrieve(request, "series", study, series)


@dicomweb_view
def retrieve_instance(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponse:
    return _retrieve(request, "instance", study, series, instance)


# --------------------------------------------------------------------------- metadata


def _metadata(
    request: HttpRequest, level: str, study: str, series: str | None = None, instance: str | None = None
) -> HttpResponse:
    bad = _check(request, study, series, instance)
    if bad:
        return bad
    media_type = json_media_type(accept_header(request))
    if media_type is None:
        return error(406, "Metadata is available as application/dicom+json only")
    root = dicomweb_root(request)
    cache_control = IMMUTABLE if instance else f"private, max-age={METADATA_MAX_AGE}"
    if request.META.get("HTTP_IF_NONE_MATCH"):
        shas = [row[0] for row in _instance_rows(request, study, series, instance, ("sha256",))]
        if not shas:
            return _not_found(level)
        etag = _etag(METADATA_VERSION, root, *_as_json(media_type), *shas)
        if _matches(request, etag):
            return _not_modified(etag, cache_control)
    rows = _instance_rows(request, study, series, instance, ("sha256", "metadata", PATIENT_ID))
    if not rows:
        return _not_found(level)
    etag = _etag(METADATA_VERSION, root, *_as_json(media_type), *(r[0] for r in rows))
    escaped_root = json.dumps(root)[1:-1]
    body = ("[" + ",".join(r[1] for r in rows) + "]").replace(ESCAPED_MARK, escaped_root)
    encoded = body.encode()
    if request.method == "HEAD":
        response = HttpResponse(content_type=media_type)
        response["Content-Length"] = str(len(encoded))
    else:
        record("view", request, patient_id=rows[0][2], study_instance_uid=study, detail={"level": level})
        response = HttpResponse(encoded, content_type=media_type)
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    patch_vary_headers(response, ("Accept",))
    return response


def _as_json(media_type: str) -> tuple[str, ...]:
    """What the metadata ETag adds for a body labelled application/json (nothing for the usual type,
    so the ETags clients already hold stay valid)."""
    return (media_type,) if media_type != "application/dicom+json" else ()


@dicomweb_view
def study_metadata(request: HttpRequest, study: str) -> HttpResponse:
    return _metadata(request, "study", study)


@dicomweb_view
def series_metadata(request: HttpRequest, study: str, series: str) -> HttpResponse:
    return _metadata(request, "series", study, series)


@dicomweb_view
def instance_metadata(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponse:
    return _metadata(request, "instance", study, series, instance)


# --------------------------------------------------------------------------- pixel data: frames


def _pixel_offer(stored: str) -> str:
    kind = transcode.media_type_of(stored)
    also = f" or {kind}; transfer-syntax={stored}" if kind != OCTET_STREAM else ""
    return f"application/octet-stream (Explicit VR Little Endian){also}"


def parse_frame_list(value: str) -> list[int]:
    """1-based frame numbers from ``1,3,5``; raises ValueError with a reason."""
    if not FRAME_LIST_RE.match(value):
        raise ValueError("The frame list must be comma-separated frame numbers, e.g. 1,3,5")
    numbers = [int(v) for v in value.split(",")]
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise ValueError(f"At most {MAX_FRAMES_PER_REQUEST} frames may be requested at once")
    if min(numbers) < 1:
        raise ValueError("Frame numbers start at 1")
    seen: set[int] = set()
    for n in numbers:
        if n in seen:
            raise ValueError(f"Frame {n} is listed more than once")
        seen.add(n)
    return numbers


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
            yield transcode.decode_frame(data, self.syntax, options) if decode else data


def _pixel_source(
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
        return _pixel_source_sql(seen, study, series, instance, only_frame)
    frames_field = "frames" if only_frame is None else f"frames__{only_frame}"
    qs = _instances(request, study, series, instance).order_by()
    fields = ("pk", "tier", "storage_key", "transfer_syntax_uid", "number_of_frames", frames_field, "sha256")
    rows = list(qs.values_list(*fields, "series__study__patient__patient_id")[:1])
    if not rows:
        return None
    return _source_from_row(rows[0], only_frame)


def _source_from_row(row: tuple[Any, ...], only_frame: int | None) -> PixelSource:
    pk, tier, key, syntax, n_frames, frames, sha256, patient_id = row
    if frames is None:
        ranges = None
    elif only_frame is None:
        ranges = dict(enumerate(frames))
    else:
        ranges = {only_frame: frames}
    return PixelSource(pk, tier, key, syntax, n_frames, ranges, sha256, patient_id or "")


def _pixel_source_sql(
    seen: Visibility, study: str, series: str, instance: str, only_frame: int | None
) -> PixelSource | None:
    alias = router.db_for_read(Instance) or "default"
    connection = connections[alias]
    where, where_params = seen.where("st", connection.ops.quote_name)
    frames_sql, frames_params = _frames_column(connection.vendor, only_frame)
    select = (*(_column_sql(alias, name) for name in SOURCE_FIELDS[:5]), frames_sql, *(
        _column_sql(alias, name) for name in SOURCE_FIELDS[5:]
    ))  # fmt: skip
    sql = _rows_sql(alias, select, True, True, where)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*frames_params, study, series, instance, *where_params])
        row = cursor.fetchone()
    if row is None:
        return None
    frames = row[5]
    row = (*row[:5], json.loads(frames) if isinstance(frames, str) else frames, *row[6:])
    return _source_from_row(row, only_frame)


#: The columns of a pixel source around its frame ranges (selected between the fifth and sixth).
SOURCE_FIELDS = ("id", "tier", "storage_key", "transfer_syntax_uid", "number_of_frames", "sha256", PATIENT_ID)


def _frames_column(vendor: str, only_frame: int | None) -> tuple[str, list[Any]]:
    """SQL for the stored frame ranges (all, or the one frame), as JSON text."""
    if vendor == "postgresql":
        return ("i.frames::text", []) if only_frame is None else ("(i.frames -> %s::integer)::text", [only_frame])
    return ("i.frames", []) if only_frame is None else ("json_extract(i.frames, %s)", [f"$[{only_frame}]"])


def _pixel_response(
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
        body: Iterator[bytes] = _pixel_stream(boundary, plan, parts, one_part)
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


def _pixel_stream(boundary: str, plan: PixelPlan, parts: Iterator[bytes], one_part: bool) -> Iterator[bytes]:
    header = encode_part(boundary, plan.content_type)
    try:
        if one_part:
            yield header
            yield from parts
            yield b"\r\n"
        else:
            for data in parts:
                yield header
                yield data
                yield b"\r\n"
    except (TranscodeError, OSError) as exc:
        log.error("pixel data response stopped: %s", exc)
        return
    yield closing(boundary)


def _audit_frames(request: HttpRequest, source: PixelSource, study: str) -> None:
    """At most one "view_frames" record per user and study every few minutes."""
    key = f"wado:view_frames:{getattr(request.user, 'pk', '')}:{study}"
    if cache.add(key, True, FRAMES_AUDIT_SECONDS):
        record(
            "view_frames", request, patient_id=source.patient_id, study_instance_uid=study, detail={"level": "frames"}
        )


def _frames_fast(source: PixelSource, plan: PixelPlan, index: int, etag: str) -> StreamingHttpResponse:
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


def fast_frame(request: HttpRequest, study: str, series: str, instance: str, frame: str) -> HttpResponseBase | None:
    """The ordinary case of :func:`retrieve_frames`, for :mod:`archive.dicomweb.fastpath`; None for anything else.

    Ordinary means: a usable bearer token and one frame of a visible instance
    read as stored. It runs the view's own body (:func:`_frames`), which
    declines instead of refusing, so each refusal (401, 400, 404, 406, 503)
    is given by the full view only, with the same checks, ETag and audit.
    """
    user = user_from_bearer(request)
    if user is None:
        return None
    request.user = user
    return _frames(request, study, series, instance, frame, decline=True)


@dicomweb_view
def retrieve_frames(request: HttpRequest, study: str, series: str, instance: str, frames: str) -> HttpResponseBase:
    response = _frames(request, study, series, instance, frames, decline=False)
    assert response is not None
    return response


def _frames(
    request: HttpRequest, study: str, series: str, instance: str, frames: str, decline: bool
) -> HttpResponseBase | None:
    """The frames resource. With ``decline`` it answers only one stored frame read as stored, and
    returns None wherever the view would refuse or do more (the fast path then hands the request over)."""

    def refuse(response: HttpResponseBase) -> HttpResponseBase | None:
        return None if decline else response

    bad = _check(request, study, series, instance)
    if bad:
        return refuse(bad)
    try:
        numbers = parse_frame_list(frames)
    except ValueError as exc:
        return refuse(error(400, str(exc)))
    if decline and len(numbers) != 1:
        return None
    source = _pixel_source(request, study, series, instance, numbers[0] - 1 if len(numbers) == 1 else None)
    if source is None:
        return refuse(_not_found("instance"))
    if not source.n_frames:
        return refuse(error(404, "The instance has no pixel data"))
    beyond = [n for n in numbers if n > source.n_frames]
    if beyond:
        return refuse(error(404, f"Frame {beyond[0]} does not exist: the instance has {source.n_frames} frame(s)"))
    plan = frame_plan(accept_header(request), source.syntax, len(numbers) == 1)
    if plan is None:
        return refuse(error(406, f"Frames of this instance are available as {_pixel_offer(source.syntax)}"))
    one_stored = len(numbers) == 1 and not plan.decode and source.frames is not None and request.method == "GET"
    if decline and not one_stored:
        return None
    etag = _etag(source.sha256, frames, plan.multipart, plan.content_type)
    if _matches(request, etag):
        return _not_modified(etag, IMMUTABLE)
    _audit_frames(request, source, study)
    indices = [n - 1 for n in numbers]
    if one_stored:
        try:
            return _frames_fast(source, plan, indices[0], etag)
        except OSError as exc:
            log.error("pixel data of %s unreadable: %s", log_name(source.key), exc)
            return refuse(error(503, "The stored object is not readable right now"))
    return _pixel_response(request, source, plan, _frame_parts(source, indices, plan.decode), etag, None)


def _frame_parts(source: PixelSource, indices: list[int], decode: bool) -> Iterator[bytes]:
    with _open(source.tier, source.key) as fh:
        yield from source.frame_bytes(fh, indices, decode)
