"""HTTP content negotiation for DICOMweb (PS3.18 §8.7): Accept parsing with q-values.

:func:`parse_accept` turns an Accept header into media ranges, best first.
Views offer what they can produce and :func:`choose` picks the first range a
view can satisfy, or ``None`` for a 406.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from archive.multipart import _split_params

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
    out, buf, quoted = [], [], False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return [p for p in (o.strip() for o in out) if p]


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, highest q first; empty header means */*."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for raw in _split_ranges(header)[:64]:
        pieces = _split_params(raw)
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


def accepts_json(header: str | None) -> bool:
    """True if DICOM JSON (application/dicom+json or application/json) is acceptable."""
    return choose(
        header,
        lambda r: True if r.matches("application/dicom+json") or r.matches("application/json") else None,
    ) is not None
