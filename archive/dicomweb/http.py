"""The HTTP kit of the DICOMweb views: errors, caching and conditional GET, audit pacing, frame lists.

What every resource answers the same way is written here once: a JSON error
with its reason, 503 with Retry-After, the Warning header, strong ETags and the one
conditional-GET rule (:func:`not_modified`, also used by the viewer's
script), 404 for what does not exist or is not visible, a HEAD answer
without its body, the throttled audit record of repeated reads, and the
frame-list parser of the frames and rendered resources.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import get_script_prefix, reverse
from django.utils.cache import get_conditional_response

from audit.trail import record


def error(status: int, detail: str, allow: str | None = None) -> HttpResponse:
    """A JSON error body with a human-readable reason; never a stack trace."""
    response = JsonResponse({"detail": detail}, status=status)
    if allow:
        response["Allow"] = allow
    return response


#: How long a client should wait before sending a request again after a 503.
RETRY_AFTER_SECONDS = 30


def retry_later(detail: str) -> HttpResponse:
    """503 with Retry-After: a passing fault of the archive (its disk, its index), nothing acknowledged."""
    response = error(503, detail)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def add_warnings(response: HttpResponseBase, request: HttpRequest, texts: list[str]) -> None:
    """Tell ``texts`` in one Warning header (RFC 7234 §5.5), none when there are none.

    Each is ``299 {service}: "text"``, the form PS3.18 §8.3.4 gives: code 299
    (a persistent warning), the DICOMweb root as the agent, the text as a
    quoted string (quotes and backslashes escaped, any other than printable
    ASCII made spaces, so no value can split the header); several are comma-separated.
    """
    if not texts:
        return
    agent = dicomweb_root(request)
    response["Warning"] = ", ".join(f'299 {agent}: "{_quoted(text)}"' for text in texts)


def _quoted(text: str) -> str:
    """``text`` as the inside of an HTTP quoted-string (RFC 7230 §3.2.6)."""
    text = "".join(c if " " <= c <= "~" else " " for c in text)  # printable ASCII only
    return text.replace("\\", "\\\\").replace('"', '\\"')


def dicomweb_root(request: HttpRequest) -> str:
    """The absolute URL of the DICOMweb root, e.g. ``http://host/dicom-web``."""
    return request.build_absolute_uri(_root_path(get_script_prefix())).rstrip("/")


@functools.cache
def _root_path(script_prefix: str) -> str:
    """The root's path under ``script_prefix`` (the argument keys the cache; reverse() reads the prefix itself)."""
    return reverse("dicomweb-root")


# --------------------------------------------------------------------------- caching


#: Cache-Control of a response that can never change: pixel data (frames, bulk data, rendered images).
#: A correction (``archive/ingest/correct.py``) rewrites attributes, never the pixels of an instance.
IMMUTABLE = "private, max-age=31536000, immutable"

#: Cache-Control of a whole instance and its metadata: kept, but revalidated by ETag on every use.
#: The URL stays while its content changes: a correction writes a new version of the
#: instance under the same UIDs, and a tier move changes its Instance Availability.
REVALIDATE = "private, no-cache"


def strong_etag(*parts: object) -> str:
    """A strong ETag (quoted) naming ``parts``: equal parts, equal tag."""
    return '"' + hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:40] + '"'


def not_modified(request: HttpRequest, etag: str, cache_control: str) -> HttpResponse | None:
    """304 Not Modified (412 for a failed If-Match) when the request's preconditions say so, else None.

    The one conditional-GET rule of the archive, for the DICOMweb views, their
    fast path and the viewer alike: Django's
    :func:`~django.utils.cache.get_conditional_response`, which follows RFC 9110
    §13.2.2 (If-None-Match lists, weak comparison, ``*``, If-Match). ``etag``
    is the final ETag of the resource. A 304 carries it and ``cache_control``
    (RFC 9110 §15.4.5: what a 200 would have sent); a 412 carries neither, so
    no cache keeps a refusal as if it were the immutable resource. A request
    without a precondition costs one dictionary look-up per header.
    """
    if not has_precondition(request):
        return None
    response = get_conditional_response(request, etag=etag)
    if response is not None and response.status_code == 304:
        response["ETag"] = etag
        response["Cache-Control"] = cache_control
    return response


def has_precondition(request: HttpRequest) -> bool:
    """Whether the request has a header :func:`not_modified` answers to."""
    return any(name in request.META for name in PRECONDITIONS)


#: The request headers that can make :func:`not_modified` answer (without a Last-Modified, these two only).
PRECONDITIONS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH")


# --------------------------------------------------------------------------- common answers


def not_found(level: str) -> HttpResponse:
    """404 for a resource that does not exist or that the user may not see (the two look alike)."""
    return error(404, f"No such {level}, or you may not see it")


def head_of(response: HttpResponseBase) -> HttpResponse:
    """The headers of ``response`` without its body (a streamed body is never produced)."""
    head = HttpResponse(status=response.status_code)
    for name, value in response.items():
        head[name] = value
    return head


# --------------------------------------------------------------------------- audit


#: Reads of the same study by the same user are recorded at most this often, per kind of read.
AUDIT_INTERVAL_SECONDS = 300


def audit_at_intervals(
    request: HttpRequest, action: str, study: str, patient_id: str, detail: dict[str, Any] | None = None
) -> None:
    """Record ``action`` on ``study``, unless it was recorded for this user in the last few minutes.

    A viewer fetches hundreds of frames or rendered images a minute; one
    record per user, study and action every :data:`AUDIT_INTERVAL_SECONDS`
    says the same as hundreds would.
    """
    key = f"audit:{action}:{getattr(request.user, 'pk', '')}:{study}"
    if cache.add(key, True, AUDIT_INTERVAL_SECONDS):
        record(action, request, patient_id=patient_id, study_instance_uid=study, detail=detail or {})


# --------------------------------------------------------------------------- frame lists


#: The most frame numbers one URL may list. A default front end carries no more anyway (gunicorn
#: limits the request line to 4,094 bytes: about 1,000 frame numbers), and it bounds the rendering work.
MAX_FRAMES_PER_REQUEST = 1000
FRAME_LIST_RE = re.compile(r"[0-9]{1,9}(,[0-9]{1,9})*")


def parse_frame_list(value: str) -> list[int]:
    """1-based frame numbers from ``1,3,5`` (PS3.18 §8.3.4.4), in the order given; ValueError with a reason.

    Numbers are ASCII digits (``str.isdigit`` would take ``²``), positive and not repeated.
    """
    if not FRAME_LIST_RE.fullmatch(value):
        raise ValueError("The frame list must be comma-separated positive frame numbers, e.g. 1,3,5")
    numbers = [int(v) for v in value.split(",")]
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise ValueError(f"At most {MAX_FRAMES_PER_REQUEST} frames may be requested at once")
    if min(numbers) < 1:
        raise ValueError("Frame numbers are positive: they start at 1")
    seen: set[int] = set()
    for n in numbers:
        if n in seen:
            raise ValueError(f"Frame {n} is listed more than once: frame numbers must not repeat")
        seen.add(n)
    return numbers


# --------------------------------------------------------------------------- streaming


#: The size of the pieces a streamed body is read and sent in: bounded memory per request.
CHUNK = 1024 * 1024


def chunks(fh: BinaryIO) -> Iterator[bytes]:
    """The content of ``fh`` from where it stands, :data:`CHUNK` bytes at a time."""
    while chunk := fh.read(CHUNK):
        yield chunk
