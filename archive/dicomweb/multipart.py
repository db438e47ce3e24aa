"""Streaming multipart/related (RFC 2387) reading and writing.

:func:`iter_parts` reads a request body from a file-like stream in fixed-size
chunks and hands each body part's content to a sink as it arrives, so a 2 GB
STOW-RS request never sits in memory. A part is yielded only once its closing
delimiter has been seen: a truncated last part is never mistaken for a whole
one. :func:`encode_part`, :func:`closing` and :func:`stream_parts` build multipart responses.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024  # bounded memory per request, few trips through the WSGI input
MAX_HEADER_BYTES = 16 * 1024
MAX_PREAMBLE_BYTES = 64 * 1024
BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}\Z")


class MultipartError(ValueError):
    """The body is not well-formed multipart/related."""


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class PartSink(Protocol):
    """Receives a part's content; ``data`` is only valid during the call."""

    def write(self, data: bytes | memoryview) -> None: ...


@dataclass
class Part:
    headers: dict[str, str]
    sink: Any

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a media type from its parameters; names lower-cased, quotes removed."""
    pieces = split_unquoted(value)
    media = pieces[0].strip().lower() if pieces else ""
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        if "=" not in piece:
            continue
        name, _, val = piece.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1].replace('\\"', '"')
        params[name.strip().lower()] = val
    return media, params


def split_unquoted(value: str, separator: str = ";") -> list[str]:
    """Split ``value`` at ``separator`` outside double quotes."""
    if '"' not in value:
        return value.split(separator)
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return out


def valid_boundary(boundary: str) -> bool:
    return bool(BOUNDARY_RE.match(boundary)) and not boundary.endswith(" ")


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        if not line:
            continue
        if b":" not in line:
            raise MultipartError("a part header line has no colon")
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return headers


def iter_parts(stream: Readable, boundary: str, new_sink: Callable[[dict[str, str]], Any]) -> Iterator[Part]:
    """Yield each complete part of ``stream``; its bytes go to ``new_sink(headers)``.

    Raises :class:`MultipartError` on a missing boundary, oversized headers or a
    body that ends before the closing delimiter. A sink whose part was cut off
    is passed to ``abort`` (if it has one) before the error is raised.
    """
    delim = b"\r\n--" + boundary.encode("latin-1")
    buf = bytearray(b"\r\n")  # so the first delimiter looks like the others
    eof = False

    def fill() -> bool:
        nonlocal eof
        if eof:
            return False
        chunk = stream.read(READ_SIZE)
        if not chunk:
            eof = True
            return False
        buf.extend(chunk)
        return True

    # Preamble: discard everything up to the first delimiter.
    while True:
        at = buf.find(delim)
        if at >= 0:
            del buf[: at + len(delim)]
            break
        if len(buf) > MAX_PREAMBLE_BYTES:
            raise MultipartError("no multipart boundary found at the start of the body")
        if not fill():
            raise MultipartError("the body does not contain the declared multipart boundary")

    while True:
        # After a delimiter: "--" closes the body, otherwise padding and CRLF.
        while len(buf) < 2 and fill():
            pass
        if buf[:2] == b"--":
            return
        while True:
            eol = buf.find(b"\r\n")
            if eol >= 0:
                if buf[:eol].strip(b" \t"):
                    raise MultipartError("unexpected bytes after a multipart boundary")
                del buf[: eol + 2]
                break
            if len(buf) > 1024 or not fill():
                raise MultipartError("the body ends inside a multipart boundary line")
        # Part headers.
        while True:
            end = buf.find(b"\r\n\r\n")
            if buf.startswith(b"\r\n"):
                headers: dict[str, str] = {}
                del buf[:2]
                break
            if end >= 0:
                headers = _parse_headers(bytes(buf[:end]))
                del buf[: end + 4]
                break
            if len(buf) > MAX_HEADER_BYTES:
                raise MultipartError("multipart part headers are too large")
            if not fill():
                raise MultipartError("the body ends inside part headers")
        # Part content up to the next delimiter, handed over without copying.
        sink = new_sink(headers)
        keep = len(delim) - 1
        try:
            while True:
                at = buf.find(delim)
                if at >= 0:
                    _write(sink, buf, at)
                    del buf[: at + len(delim)]
                    break
                if len(buf) > keep:
                    cut = len(buf) - keep
                    _write(sink, buf, cut)
                    del buf[:cut]
                if not fill():
                    raise MultipartError("the body ends before the closing multipart boundary")
        except BaseException:  # a cut body, a client gone mid-part, a sink that refused: drop the partial part
            abort = getattr(sink, "abort", None)
            if abort is not None:
                abort()
            raise
        yield Part(headers, sink)


def _write(sink: PartSink, buf: bytearray, end: int) -> None:
    """Give ``buf[:end]`` to ``sink`` as a view, released before ``buf`` changes (sinks must not keep it)."""
    if end:
        with memoryview(buf) as view, view[:end] as data:
            sink.write(data)


def encode_part(boundary: str, content_type: str, extra_headers: dict[str, str] | None = None) -> bytes:
    """The delimiter and headers that precede one part's content."""
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    for name, value in (extra_headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def stream_parts(
    boundary: str, parts: Iterable[tuple[str, Iterable[bytes]]], faults: tuple[type[Exception], ...] = (OSError,)
) -> Iterator[bytes]:
    """The body of a multipart/related response: each part's chunks (its header first), then the closing delimiter.

    ``parts`` yields ``(name, chunks)``: ``name`` says in a log line which
    object a part comes from (never a UID), ``chunks`` are produced lazily. The
    status has gone out before the body, so when a part fails with one of
    ``faults`` the body ends there, without the closing delimiter: the client
    sees an incomplete response, never a silent gap. Every multipart response
    of the archive (retrieve, frames, bulk data, rendered) ends this way.
    """
    where = "the first part"
    try:
        for name, content in parts:
            where = name
            yield from content
            yield b"\r\n"
    except faults as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.error("multipart response stopped at %s: %s", where, reason)
        return
    yield closing(boundary)
