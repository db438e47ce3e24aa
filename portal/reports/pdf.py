"""A minimal PDF writer for the report's printable rendition: plain text lines in Helvetica, A4, several pages.

No dependency: the PDF is written by hand (PDF 1.4, one content stream per page, the standard
Helvetica font in WinAnsiEncoding). Text is only ever placed inside PDF string literals with ``\\``,
``(`` and ``)`` escaped and control characters removed, so hostile text (HTML, script, PDF syntax)
is printed as the characters it is and can never become PDF operators.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
MARGIN = 56
LINE_HEIGHT = 14
WRAP = 88  # characters per line at 10 pt Helvetica, roughly the page's width


@dataclass(frozen=True)
class Line:
    text: str
    bold: bool = False
    size: int = 10


def escape(text: str) -> bytes:
    """``text`` as the body of a PDF literal string: WinAnsi bytes, controls dropped, delimiters escaped."""
    clean = "".join(ch for ch in text if ch >= " " and ch != "\x7f")
    raw = clean.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def wrap(lines: Iterable[Line]) -> list[Line]:
    """Break long lines (and embedded newlines) so every line fits the page."""
    out: list[Line] = []
    for line in lines:
        for paragraph in line.text.splitlines() or [""]:
            pieces = textwrap.wrap(paragraph, WRAP, replace_whitespace=False, drop_whitespace=True) or [""]
            out.extend(Line(piece, line.bold, line.size) for piece in pieces)
    return out


def _page_stream(lines: list[Line]) -> bytes:
    parts = [b"BT"]
    y = PAGE_HEIGHT - MARGIN
    for line in lines:
        font = b"/F2" if line.bold else b"/F1"
        parts.append(b"%s %d Tf 1 0 0 1 %d %d Tm (%s) Tj" % (font, line.size, MARGIN, y, escape(line.text)))
        y -= LINE_HEIGHT
    parts.append(b"ET")
    return b"\n".join(parts)


def render(lines: Iterable[Line], title: str = "") -> bytes:
    """The PDF document holding ``lines``, as bytes."""
    wrapped = wrap(lines)
    per_page = (PAGE_HEIGHT - 2 * MARGIN) // LINE_HEIGHT
    pages = [wrapped[i : i + per_page] for i in range(0, len(wrapped), per_page)] or [[]]
    objects: list[bytes] = []  # object n is objects[n - 1]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(b"")  # the page tree, filled in below
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    objects.append(b"<< /Title (%s) /Producer (Cloud PACS) >>" % escape(title))
    kids = []
    for page in pages:
        stream = _page_stream(page)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>" % (PAGE_WIDTH, PAGE_HEIGHT, content)
        )
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
