"""HTTP content negotiation for DICOMweb (PS3.18 §8.7): Accept parsing with q-values.

:func:`parse_accept` turns an Accept header into media ranges, best first.
Views offer what they can produce and :func:`choose` picks the first range a
view can satisfy, or ``None`` for a 406. :func:`acceptables` flattens
``multipart/related; type=...; transfer-syntax=...`` ranges into the part
representations they allow; :func:`dicom_plan`, :func:`output_syntax` and
:func:`pixel_plan` apply the transfer syntax rules of PS3.18 §8.7.3 to
whole instances and to pixel data (frames, bulk data).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from archive.dicom import transcode
from archive.dicom.syntaxes import NATIVE_LITTLE_ENDIAN, NOT_FOR_THE_WEB, ExplicitVRLittleEndian
from archive.dicom.transcode import OCTET_STREAM
from archive.dicom.uid import is_valid_uid
from archive.dicomweb.multipart import split_unquoted

T = TypeVar("T")


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def main(self) -> str:
        return self.media_type.split("/", 1)[0]

    @property
    def sub(self) -> str:
        return self.media_type.split("/", 1)[1] if "/" in self.media_type else ""

    def matches(self, media_type: str) -> bool:
        """True if this range covers the concrete ``media_type``."""
        if self.media_type in ("*/*", media_type):
            return True
        return self.sub == "*" and media_type.split("/", 1)[0] == self.main


def _split_ranges(header: str) -> list[str]:
    return [p for p in (o.strip() for o in split_unquoted(header, ",")) if p]


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, highest q first; empty header means */*."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for raw in _split_ranges(header)[:64]:
        pieces = split_unquoted(raw)
        media = pieces[0].strip().lower()
        if "/" not in media:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name, value = name.strip().lower(), value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if name == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
            elif name:
                params[name] = value
        if q > 0:
            ranges.append(MediaRange(media, params, q))
    return sorted(ranges, key=lambda r: -r.q)


def choose(header: str | None, offer: Callable[[MediaRange], T | None]) -> T | None:
    """The first non-None ``offer(range)`` over the ranges, best first."""
    for media_range in parse_accept(header):
        result = offer(media_range)
        if result is not None:
            return result
    return None


def json_media_type(header: str | None) -> str | None:
    """The JSON media type to label DICOM JSON with: application/dicom+json, or application/json
    when that is what the client prefers; None when neither is acceptable."""

    def offer(r: MediaRange) -> str | None:
        if r.matches("application/dicom+json"):
            return "application/dicom+json"
        if r.matches("application/json"):
            return "application/json"
        return None

    return choose(header, offer)


def accepts_json(header: str | None) -> bool:
    """True if DICOM JSON (application/dicom+json or application/json) is acceptable."""
    return json_media_type(header) is not None


@dataclass(frozen=True)
class Acceptable:
    """One representation a client accepts, flattened from an Accept media range.

    ``media_type`` is the type of each part of a multipart response (the
    ``type`` parameter) or of a single-part body, possibly a wildcard;
    ``multipart`` is None when the range (``*/*``) allows either packaging;
    ``transfer_syntax`` is the requested syntax, ``"*"`` for any, or None for
    the default of the media type (PS3.18 §8.7.3.5).
    """

    media_type: str
    multipart: bool | None
    transfer_syntax: str | None = None
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        return MediaRange(self.media_type).matches(media_type)

    @property
    def is_wildcard(self) -> bool:
        return self.media_type.endswith("/*")


def acceptables(header: str | None, default_part_type: str) -> list[Acceptable]:
    """What an Accept header allows, best first; ``multipart/related`` without a
    ``type`` parameter means multipart of ``default_part_type``."""
    out = []
    for r in parse_accept(header):
        syntax = r.params.get("transfer-syntax") or None
        if r.main == "multipart" and r.sub in ("related", "*"):
            part = (r.params.get("type") or default_part_type).strip().lower()
            out.append(Acceptable(part, True, syntax, r.q))
        elif r.media_type == "*/*":
            out.append(Acceptable("*/*", None, syntax, r.q))
        elif r.main != "multipart":
            out.append(Acceptable(r.media_type, False, syntax, r.q))
    return out


def accept_header(request: Any) -> str | None:
    """The Accept query parameter (PS3.18 §8.3.3.1) if present, else the Accept header field."""
    values = request.GET.getlist("accept")
    if values:
        return ",".join(values)
    header = request.META.get("HTTP_ACCEPT")
    return header if isinstance(header, str) else None


# --------------------------------------------------------------------------- WADO-RS representations (PS3.18 §8.7.3)

DICOM = "application/dicom"


def parse_syntax(value: str | None) -> str | None:
    """A transfer-syntax parameter: None, ``*`` or a UID; anything else can match nothing."""
    if value is None or value == "*" or is_valid_uid(value):
        return value
    return "invalid"


def dicom_plan(accept: list[Acceptable], single_ok: bool) -> tuple[bool, list[str | None]] | None:
    """Packaging (multipart or not) and acceptable syntaxes, best first, for application/dicom."""
    plan: tuple[bool, list[str | None]] | None = None
    for a in accept:
        if a.media_type == "*/*" and a.multipart is None:
            multipart = True
        elif a.matches(DICOM) and (a.multipart or single_ok):
            multipart = bool(a.multipart)
        else:
            continue
        syntax = parse_syntax(a.transfer_syntax)
        if plan is None:
            plan = (multipart, [])
        if plan[0] == multipart:
            plan[1].append(syntax)
    return plan


def output_syntax(stored: str, wanted: Iterable[str | None], pixels: int) -> tuple[str, bool] | None:
    """The syntax to send a stored object in and whether that needs transcoding (PS3.18 §8.7.3)."""
    decodable = transcode.can_decode(stored)
    for want in wanted:
        if want == "*":
            if stored in NOT_FOR_THE_WEB and decodable:
                return ExplicitVRLittleEndian, True
            return stored, False
        if want is None:
            too_big = pixels * 6 >= 0xFFFFFFFE
            if stored == ExplicitVRLittleEndian or stored in transcode.LOSSY or not decodable or too_big:
                return stored, False
            return ExplicitVRLittleEndian, True
        if want == stored:
            return stored, False
        if want == ExplicitVRLittleEndian and decodable:
            return ExplicitVRLittleEndian, True
    return None


@dataclass(frozen=True)
class PixelPlan:
    """How to send pixel data: packaging, whether to decode, and each part's Content-Type."""

    multipart: bool
    decode: bool
    part_type: str  # media type of each part (or the single body)
    syntax: str

    @property
    def content_type(self) -> str:
        return f"{self.part_type}; transfer-syntax={self.syntax}"


def pixel_plan(accept: list[Acceptable], stored: str, single_ok: bool) -> PixelPlan | None:
    """The first representation of ``stored`` pixels the client accepts (PS3.18 §8.7.3.3)."""
    encapsulated = transcode.is_encapsulated(stored)
    stored_type = transcode.media_type_of(stored)
    stored_syntax = transcode.web_syntax(stored)
    decodable = transcode.can_decode(stored)
    for a in accept:
        multipart = True if a.multipart is None else a.multipart
        if not multipart and not single_ok:
            continue
        native = PixelPlan(
            multipart, encapsulated or stored not in NATIVE_LITTLE_ENDIAN, OCTET_STREAM, ExplicitVRLittleEndian
        )
        as_stored = PixelPlan(multipart, False, stored_type, stored_syntax)
        a = replace(a, media_type=transcode.canonical_media_type(a.media_type))
        media = a.media_type
        want = parse_syntax(a.transfer_syntax)
        if not encapsulated and stored not in NATIVE_LITTLE_ENDIAN:
            as_stored = native  # deflated / big endian: the stored bytes are not pixels
        if media == "*/*" and a.multipart is None:
            if want is None:
                return as_stored if (stored in transcode.LOSSY or not decodable) else native
            if want == "*":
                return as_stored
        elif want == "*":
            if a.matches(OCTET_STREAM) or a.matches(stored_type):
                return as_stored
        elif want is None:
            if a.matches(OCTET_STREAM) and decodable:
                return native
            if encapsulated and a.matches(stored_type):
                return as_stored
        elif want in (stored, stored_syntax) and (a.matches(stored_type) or a.matches(OCTET_STREAM)):
            return as_stored
        elif want in transcode.ALSO_VALID_AS.get(stored, ()) and a.matches(stored_type):
            return replace(as_stored, syntax=want)
        elif want == ExplicitVRLittleEndian and a.matches(OCTET_STREAM) and decodable:
            return native
    return None


@functools.lru_cache(maxsize=256)
def frame_plan(header: str | None, stored: str, single_ok: bool) -> PixelPlan | None:
    """:func:`pixel_plan` for an Accept header as received, pixel parts by default.

    A viewer sends the same header for every frame it reads, so each header is
    parsed and matched once per stored transfer syntax, not once per frame.
    """
    return pixel_plan(acceptables(header, OCTET_STREAM), stored, single_ok)
