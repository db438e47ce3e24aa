"""WADO-RS bulk data (PS3.18 §10.4): one element's value by its tag.

The BulkDataURIs in stored metadata point here. Pixel Data (7FE0,0010) is sent
as stored compressed frames (one per part), as a byte range of the stored file
for native pixels, or decoded frame by frame when the client asks for
uncompressed bytes; any other bulk element is read from the stored file.
The pixel source and response are :mod:`archive.dicomweb.frames`'s; ETags and
conditional GET are the kit's (:mod:`archive.dicomweb.http`).
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse

from archive.dicom import transcode
from archive.dicom.syntaxes import NATIVE_LITTLE_ENDIAN, ExplicitVRLittleEndian
from archive.dicom.transcode import OCTET_STREAM, TranscodeError
from archive.dicomweb.auth import READ_METHODS, dicomweb_view
from archive.dicomweb.frames import PixelSource, pixel_offer, pixel_response, pixel_source
from archive.dicomweb.http import CHUNK, IMMUTABLE, error, not_found, not_modified, strong_etag
from archive.dicomweb.negotiation import PixelPlan, accept_header, acceptables, pixel_plan
from archive.ingest.lastaccess import touch_study
from archive.storage.keys import log_name
from archive.storage.registry import get_storage
from audit.trail import record

log = logging.getLogger(__name__)

PIXEL_DATA_TAG = "7FE00010"
TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}\Z")


def _pixel_data_parts(source: PixelSource, plan: PixelPlan) -> tuple[Iterator[bytes], int | None, bool]:
    """The (7FE0,0010) Pixel Data value: chunks, length if known, and whether they form one part.

    Stored compressed frames go one per part; native pixels are one part, read
    as a byte range when stored little endian, otherwise decoded frame by frame.
    """
    if transcode.is_encapsulated(source.syntax) and not plan.decode:
        return source.frame_parts(list(range(source.n_frames)), False), None, False
    if source.syntax in NATIVE_LITTLE_ENDIAN:
        if source.frames is not None:
            start = source.frames[0][0][0]
            length = struct.unpack("<I", _read_range(source, start - 4, 4))[0]
            return _stream_range(source, start, length), length, True
        value = _other_bulk(source, PIXEL_DATA_TAG)  # bit-packed: the stored value as it is
        if value is not None:
            return iter([value]), len(value), True
    return source.frame_parts(list(range(source.n_frames)), True), None, True


def _read_range(source: PixelSource, offset: int, length: int) -> bytes:
    return get_storage(source.tier).read_ranges(source.key, [[offset, length]])


def _stream_range(source: PixelSource, offset: int, length: int) -> Iterator[bytes]:
    """``length`` bytes from ``offset``, in chunks (one part, never all in memory)."""
    with source.open() as fh:
        fh.seek(offset)
        left = length
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise OSError(f"object {source.key} is shorter than its index says")
            left -= len(chunk)
            yield chunk


def _other_bulk(source: PixelSource, tag: str) -> bytes | None:
    with source.open() as fh:
        return transcode.element_value(fh, int(tag, 16))


@dicomweb_view(methods=READ_METHODS)
def bulkdata(request: HttpRequest, study: str, series: str, instance: str, tag: str) -> HttpResponse:
    if not TAG_RE.match(tag):
        return error(400, "The bulk data tag must be eight hexadecimal digits, e.g. 7FE00010")
    tag = tag.upper()
    source = pixel_source(request, study, series, instance)
    if source is None:
        return not_found("instance")
    accept = acceptables(accept_header(request), OCTET_STREAM)
    if tag == PIXEL_DATA_TAG and source.n_frames:
        single_ok = not transcode.is_encapsulated(source.syntax) or source.n_frames == 1
        plan = pixel_plan(accept, source.syntax, single_ok=single_ok)
        if plan is None:
            return error(406, f"Pixel data of this instance is available as {pixel_offer(source.syntax)}")
    else:
        plan = pixel_plan(accept, ExplicitVRLittleEndian, single_ok=True)
        if plan is None:
            return error(406, "Bulk data is available as application/octet-stream")
    etag = strong_etag(source.sha256, "bulk", tag, plan.multipart, plan.content_type)
    if (unchanged := not_modified(request, etag, IMMUTABLE)) is not None:
        return unchanged
    if tag == PIXEL_DATA_TAG and source.n_frames:
        try:
            parts, length, one_part = _pixel_data_parts(source, plan)
        except (OSError, TranscodeError) as exc:
            log.error("bulk data of %s unreadable: %s", log_name(source.key), exc)
            return error(404, "The pixel data of this instance is not readable")
    else:
        try:
            value = _other_bulk(source, tag)
        except TranscodeError as exc:
            return error(404, str(exc))
        if value is None:
            return error(404, f"The instance has no bulk data element ({tag[:4]},{tag[4:]})")
        parts, length, one_part = iter([value]), len(value), True
    response = pixel_response(request, source, plan, parts, etag, length, one_part)
    if response.status_code == 200 and request.method == "GET":
        detail = {"level": "bulkdata", "tag": tag}
        record("retrieve", request, patient_id=source.patient_id, study_instance_uid=study, detail=detail)
        touch_study(study)
    return response
