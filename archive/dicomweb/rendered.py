"""WADO-RS rendered and thumbnail resources (PS3.18 §10.4.1.1.3, §10.4.1.1.4, §8.3.5).

Rendered instances and frames come back as ``image/jpeg`` (the default for
``*/*``), ``image/png`` or ``image/gif``; several frames as ``image/gif`` are an
animation. A rendered study or series is a ``multipart/related`` payload with
one rendered image per image instance (its first frame), in series and
instance order, each part with its Content-Location; images that can never be
rendered (:func:`refusal`) are left out before the status line, which is then
206 with a ``Warning`` (406 when none is left). Several frames in another
media type are a multipart of one part per frame. Thumbnails are one small
image (fits 128×128 unless a viewport says otherwise): of a study, the middle
image of its first image series; of a series, its middle image; of an
instance, its first frame.

Query parameters (§8.3.5.1): ``window=center,width[,linear|linear-exact|sigmoid]``,
``viewport=vw,vh[,sx,sy,sw,sh]``, ``quality=1..100``; ``annotation`` is
accepted and ignored; ``accept`` overrides the Accept header. A malformed value
is a 400 with its reason. Results of an instance are immutable for the same
parameters: a strong ETag and a year-long private cache lifetime; thumbnails
are also kept on disk under ``DATA_DIR/cache/thumbnails`` (derived data, safe
to delete). Every lookup starts from :func:`archive.access.visible_studies`;
viewing is audited as "view_rendered" (thumbnails: "view_thumbnail") at most
once per user, study and five minutes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from archive.access import visible_studies
from archive.dicom import pixels
from archive.dicom.pixels import PixelError, RenderOptions, Viewport, VoiFunction, Window
from archive.dicomweb.auth import READ_METHODS, dicomweb_view
from archive.dicomweb.http import (
    IMMUTABLE,
    add_warnings,
    audit_at_intervals,
    dicomweb_root,
    error,
    not_modified,
    parse_frame_list,
)
from archive.dicomweb.multipart import encode_part, stream_parts
from archive.dicomweb.negotiation import MediaRange, choose
from archive.dicomweb.restoring import require_online
from archive.ingest.lastaccess import touch_study
from archive.models import Availability, Instance, Series
from archive.storage.keys import log_name

log = logging.getLogger(__name__)

REVALIDATE = "private, no-cache"
THUMBNAIL_BOX = 128
MAX_VIEWPORT = 4096
#: ASCII digits only: str.isdigit() also takes '²', which int() refuses.
INTEGER_RE = re.compile(r"-?[0-9]{1,9}")
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
WINDOW_FUNCTIONS = {
    "linear": VoiFunction.LINEAR,
    "linear-exact": VoiFunction.LINEAR_EXACT,
    "sigmoid": VoiFunction.SIGMOID,
}
INSTANCE_FIELDS = (
    "availability",
    "sop_instance_uid",
    "transfer_syntax_uid",
    "number_of_frames",
    "sha256",
    "storage_key",
    "tier",
    "metadata",
    "frames",
    "series__series_instance_uid",
    "series__study__study_instance_uid",
    "series__study__patient__patient_id",
)


class BadRequest(ValueError):
    """A malformed request; the message says what is wrong."""


class NoSuchFrame(LookupError):
    """A well-formed request for a frame the instance does not have (404, as for the frames resource)."""


# --- query parameters ----------------------------------------------------------


def _single(request: HttpRequest, name: str) -> str | None:
    values = request.GET.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"the {name} parameter may appear only once")
    return values[0] if values else None


def _finite(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise BadRequest(f"{what} is not a number: {text[:40]!r}") from None
    if not math.isfinite(number):
        raise BadRequest(f"{what} must be finite")
    return number


def parse_window(text: str) -> Window:
    """``center,width[,function]`` (PS3.18 §8.3.5.1.4)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise BadRequest("window must be center,width[,linear|linear-exact|sigmoid]")
    center, width = _finite(parts[0], "window center"), _finite(parts[1], "window width")
    function = VoiFunction.LINEAR
    if len(parts) == 3:
        if parts[2].lower() not in WINDOW_FUNCTIONS:
            raise BadRequest("window function must be linear, linear-exact or sigmoid")
        function = WINDOW_FUNCTIONS[parts[2].lower()]
    if function is VoiFunction.LINEAR and width < 1:
        raise BadRequest("window width must be at least 1 for the linear function")
    if width <= 0:
        raise BadRequest("window width must be greater than 0")
    return Window(center, width, function)


def _int(text: str, what: str) -> int:
    text = text.strip()
    if not INTEGER_RE.fullmatch(text):
        raise BadRequest(f"{what} is not an integer: {text[:40]!r}")
    return int(text)


def parse_viewport(text: str) -> Viewport:
    """``vw,vh[,sx,sy,sw,sh]`` (PS3.18 §8.3.5.1.3); the image keeps its aspect ratio."""
    parts = text.split(",")
    if len(parts) not in (2, 6):
        raise BadRequest("viewport must be vw,vh or vw,vh,sx,sy,sw,sh")
    vw, vh = _int(parts[0], "viewport width"), _int(parts[1], "viewport height")
    if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
        raise BadRequest(f"viewport width and height must be between 1 and {MAX_VIEWPORT}")
    region = None
    if len(parts) == 6:
        sx, sy, sw, sh = (_int(p, "viewport source region") for p in parts[2:])
        if sx < 0 or sy < 0 or sw == 0 or sh == 0:
            raise BadRequest("the viewport source region needs sx,sy >= 0 and non-zero sw,sh")
        region = (sx, sy, sw, sh)
    return Viewport(vw, vh, region)


def parse_options(request: HttpRequest, thumbnail: bool = False) -> RenderOptions:
    """The rendering options of the query; the media type is settled by negotiation."""
    window = _single(request, "window")
    viewport = _single(request, "viewport")
    quality_text = _single(request, "quality")
    _single(request, "annotation")  # accepted and ignored: no burned-in annotations
    quality = 80 if thumbnail else 90
    if quality_text is not None:
        quality = _int(quality_text, "quality")
        if not 1 <= quality <= 100:
            raise BadRequest("quality must be between 1 and 100")
    return RenderOptions(
        window=parse_window(window) if window is not None else None,
        viewport=parse_viewport(viewport) if viewport is not None else None,
        quality=quality,
        max_box=THUMBNAIL_BOX if thumbnail and viewport is None else None,
    )


def frame_indices(text: str) -> list[int]:
    """A frame list such as ``1,3,5`` (:func:`~archive.dicomweb.http.parse_frame_list`) as 0-based indices."""
    try:
        return [n - 1 for n in parse_frame_list(text)]
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def negotiate(request: HttpRequest, multipart: bool) -> str | None:
    """The rendered media type to produce, or None for 406 (``accept`` parameter first)."""
    header = request.GET.get("accept") or request.META.get("HTTP_ACCEPT")

    def offer(media_range: MediaRange) -> str | None:
        if media_range.media_type == "multipart/related":
            wanted = media_range.params.get("type", "image/jpeg").lower()
            return wanted if multipart and wanted in MEDIA_TYPES else None
        return next((m for m in MEDIA_TYPES if media_range.matches(m)), None)

    return choose(header, offer)


# --- lookups, audit, caching headers ----------------------------------------------------


def _instance(request: HttpRequest, study: str, series: str, instance: str) -> Instance | None:
    return (
        Instance.objects.select_related("series__study__patient")
        .only(*INSTANCE_FIELDS)
        .filter(
            sop_instance_uid=instance,
            series__series_instance_uid=series,
            series__study__study_instance_uid=study,
            series__study__in=visible_studies(request.user),
        )
        .first()
    )


def _audit(request: HttpRequest, action: str, inst: Instance) -> None:
    """One event per (user, study, action) every few minutes, like frame retrieval."""
    study = inst.series.study
    detail = {"sop_instance_uid": inst.sop_instance_uid}
    audit_at_intervals(request, action, study.study_instance_uid, study.patient.patient_id, detail)
    touch_study(study.study_instance_uid)


def cache_key(inst: Instance, indices: list[int], options: RenderOptions) -> str:
    text = f"{inst.sha256}|{','.join(map(str, indices))}|{options.key()}"
    return hashlib.sha256(text.encode()).hexdigest()


def _image_response(
    request: HttpRequest, key: str, media_type: str, cache_control: str, produce: Callable[[], bytes]
) -> HttpResponse:
    etag = f'"{key}"'
    unchanged = not_modified(request, etag, cache_control)
    if unchanged is not None:
        unchanged["Vary"] = "Accept"
        return unchanged
    try:
        response = HttpResponse(produce(), content_type=media_type)
    except PixelError as exc:
        return error(406, f"The instance cannot be rendered: {exc}")
    except OSError:
        log.exception("stored object unreadable while rendering")
        return error(503, "The stored object is not readable at the moment")
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    response["Vary"] = "Accept"
    return response


# --- thumbnails on disk -------------------------------------------------------


def thumbnail_dir() -> Path:
    return Path(settings.DATA_DIR) / "cache" / "thumbnails"


def cached_thumbnail(key: str, produce: Callable[[], bytes]) -> bytes:
    """The bytes cached under ``key``, produced and written atomically on a miss."""
    path = thumbnail_dir() / key[:2] / key
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = produce()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        log.warning("could not write thumbnail cache entry %s", path, exc_info=True)
    return data


# --- views -------------------------------------------------------------------


def _guard(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A rendered resource: GET/HEAD and valid UIDs (:func:`dicomweb_view`); BadRequest is a 400, NoSuchFrame a 404."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(request, *args, **kwargs)
        except BadRequest as exc:
            return error(400, str(exc))
        except NoSuchFrame as exc:
            return error(404, str(exc))

    return dicomweb_view(methods=READ_METHODS)(wrapper)


def _not_acceptable() -> HttpResponse:
    return error(406, "Rendered resources are available as image/jpeg, image/png or image/gif")


def _frames_in_range(inst: Instance, indices: list[int]) -> None:
    count = inst.number_of_frames or 1
    for index in indices:
        if index >= count:
            raise NoSuchFrame(f"Frame {index + 1} does not exist: the instance has {count} frame(s)")


def refusal(metadata: str, transfer_syntax: str) -> str | None:
    """Why an instance stored with this DICOM JSON can never be rendered (:func:`pixels.render_refusal`)."""
    try:
        meta = json.loads(metadata)
    except ValueError:
        return "the stored metadata is not readable"
    return (
        pixels.render_refusal(meta, transfer_syntax)
        if isinstance(meta, dict)
        else "the stored metadata is not an object"
    )


def _instance_url(request: HttpRequest, inst: Instance) -> str:
    return (
        f"{dicomweb_root(request)}/studies/{inst.series.study.study_instance_uid}"
        f"/series/{inst.series.series_instance_uid}/instances/{inst.sop_instance_uid}"
    )


class RenderedPart(NamedTuple):
    """One image of a rendered multipart response, produced when its turn comes."""

    location: str  # its Content-Location
    key: str  # the stored object it is rendered from (named in a log line by log_name)
    produce: Callable[[], bytes]


def _multipart(media_type: str, parts: Iterator[RenderedPart], status: int = 200) -> StreamingHttpResponse:
    """Stream rendered images as multipart/related parts, each with its Content-Location.

    What is known before the status line is said in it: the callers leave out
    the images :func:`refusal` foresees can never be rendered, and say so. An
    image that fails while the body streams (an unreadable object, a decoding
    failure the check did not foresee) ends the body there, without the closing
    delimiter (:func:`~archive.dicomweb.multipart.stream_parts`, as for WADO
    retrieve): the status has gone out, and a client must see the failure,
    not a study with an image silently missing.
    """
    boundary = uuid.uuid4().hex

    def content(part: RenderedPart) -> Iterator[bytes]:
        data = part.produce()
        yield encode_part(boundary, media_type, {"Content-Location": part.location})
        yield data

    each = ((log_name(part.key), content(part)) for part in parts)
    response = StreamingHttpResponse(
        stream_parts(boundary, each, (PixelError, OSError)),
        content_type=f'multipart/related; type="{media_type}"; boundary={boundary}',
        status=status,
    )
    response["Cache-Control"] = REVALIDATE
    response["Vary"] = "Accept"
    return response


def _render_instance(
    request: HttpRequest, study: str, series: str, instance: str, indices: list[int] | None
) -> HttpResponseBase:
    options = parse_options(request)
    several = indices is not None and len(indices) > 1
    media_type = negotiate(request, multipart=several)
    if media_type is None:
        return _not_acceptable()
    inst = _instance(request, study, series, instance)
    if inst is None:
        return error(404, "No such instance, or it is not visible to you")
    require_online([(inst.pk, inst.availability)])
    if indices is None:  # the whole instance: frame 1, or every frame as a GIF animation
        indices = list(range(inst.number_of_frames or 1)) if media_type == "image/gif" else [0]
    _frames_in_range(inst, indices)
    if (reason := refusal(inst.metadata, inst.transfer_syntax_uid)) is not None:
        return error(406, f"The instance cannot be rendered: {reason}")
    options = replace(options, media_type=media_type)
    _audit(request, "view_rendered", inst)
    if len(indices) > 1 and media_type != "image/gif":
        base = _instance_url(request, inst)
        parts = (
            RenderedPart(
                f"{base}/frames/{i + 1}/rendered", inst.storage_key, partial(pixels.render, inst, [i], options)
            )
            for i in indices
        )
        return _multipart(media_type, parts)
    key = cache_key(inst, indices, options)
    return _image_response(request, key, media_type, IMMUTABLE, lambda: pixels.render(inst, indices, options))


def _thumbnail(request: HttpRequest, inst: Instance | None, index: int, cache_control: str) -> HttpResponse:
    options = parse_options(request, thumbnail=True)
    media_type = negotiate(request, multipart=False)
    if media_type is None:
        return _not_acceptable()
    if inst is None:
        return error(404, "No such image, or it is not visible to you")
    require_online([(inst.pk, inst.availability)])
    _frames_in_range(inst, [index])
    options = replace(options, media_type=media_type)
    key = cache_key(inst, [index], options)
    _audit(request, "view_thumbnail", inst)
    produce = lambda: cached_thumbnail(key, lambda: pixels.render(inst, [index], options))  # noqa: E731
    return _image_response(request, key, media_type, cache_control, produce)


def _images(study_qs: Any) -> Any:
    return (
        Instance.objects.select_related("series__study__patient")
        .only(*INSTANCE_FIELDS)
        .filter(series__study__in=study_qs, number_of_frames__gt=0)
    )


def _middle(qs: Any, count: int) -> Instance | None:
    ordered = qs.order_by("instance_number", "pk")
    return ordered[count // 2 : count // 2 + 1].first() or ordered.first()


@_guard
def instance_rendered(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponseBase:
    return _render_instance(request, study, series, instance, None)


@_guard
def frames_rendered(request: HttpRequest, study: str, series: str, instance: str, frames: str) -> HttpResponseBase:
    return _render_instance(request, study, series, instance, frame_indices(frames))


@_guard
def instance_thumbnail(request: HttpRequest, study: str, series: str, instance: str) -> HttpResponseBase:
    return _thumbnail(request, _instance(request, study, series, instance), 0, IMMUTABLE)


@_guard
def frames_thumbnail(request: HttpRequest, study: str, series: str, instance: str, frames: str) -> HttpResponseBase:
    indices = frame_indices(frames)
    return _thumbnail(request, _instance(request, study, series, instance), indices[0], IMMUTABLE)


@_guard
def series_thumbnail(request: HttpRequest, study: str, series: str) -> HttpResponseBase:
    found = (
        Series.objects.filter(
            series_instance_uid=series, study__study_instance_uid=study, study__in=visible_studies(request.user)
        )
        .only("pk", "number_of_instances")
        .first()
    )
    inst = None
    if found is not None:
        inst = _middle(_images(visible_studies(request.user)).filter(series=found), found.number_of_instances)
    return _thumbnail(request, inst, 0, REVALIDATE)


@_guard
def study_thumbnail(request: HttpRequest, study: str) -> HttpResponseBase:
    first = (
        Series.objects.filter(
            study__study_instance_uid=study, study__in=visible_studies(request.user), instances__number_of_frames__gt=0
        )
        .order_by("series_number", "pk")
        .only("pk", "number_of_instances")
        .first()
    )
    inst = None
    if first is not None:
        inst = _middle(_images(visible_studies(request.user)).filter(series=first), first.number_of_instances)
    return _thumbnail(request, inst, 0, REVALIDATE)


def _render_many(request: HttpRequest, filters: dict[str, str]) -> HttpResponseBase:
    options = parse_options(request)
    media_type = negotiate(request, multipart=True)
    if media_type is None:
        return _not_acceptable()
    options = replace(options, media_type=media_type)
    qs = _images(visible_studies(request.user)).filter(series__study__study_instance_uid=filters["study"])
    if "series" in filters:
        qs = qs.filter(series__series_instance_uid=filters["series"])
    ordered = qs.order_by("series__series_number", "series__pk", "instance_number", "pk")
    require_online(ordered.exclude(availability=Availability.ONLINE).values_list("pk", "availability"))
    # Before the status line: which images can never be rendered (a permanent property of each), read
    # from the stored metadata alone. Only their ids are kept, so a study of any size takes bounded memory.
    left_out: dict[int, str] = {}
    first: int | None = None
    for pk, syntax, metadata in ordered.values_list("pk", "transfer_syntax_uid", "metadata").iterator(chunk_size=50):
        if (reason := refusal(metadata, syntax)) is not None:
            left_out[pk] = reason
        elif first is None:
            first = pk
    if first is None:
        if left_out:  # PS3.18 Table 10.4.3-1: not one representation of the target can be given
            return error(406, f"None of the images can be rendered: {next(iter(left_out.values()))}")
        return error(404, "No such study or series with images, or it is not visible to you")
    _audit(request, "view_rendered", ordered.get(pk=first))
    parts = (
        RenderedPart(
            f"{_instance_url(request, inst)}/rendered", inst.storage_key, partial(pixels.render, inst, [0], options)
        )
        for inst in ordered.iterator(chunk_size=50)
        if inst.pk not in left_out
    )
    if not left_out:
        return _multipart(media_type, parts)
    log.info(
        "rendered %s: %d image(s) left out, e.g. %s",
        "series" if "series" in filters else "study",
        len(left_out),
        next(iter(left_out.values())),
    )
    # 206: some, but not all, of the target's representations (PS3.18 Table 10.4.3-1), and why in Warning.
    response = _multipart(media_type, parts, status=206)
    add_warnings(response, request, [f"{len(left_out)} instance(s) could not be rendered and were left out"])
    return response


@_guard
def series_rendered(request: HttpRequest, study: str, series: str) -> HttpResponseBase:
    return _render_many(request, {"study": study, "series": series})


@_guard
def study_rendered(request: HttpRequest, study: str) -> HttpResponseBase:
    return _render_many(request, {"study": study})
