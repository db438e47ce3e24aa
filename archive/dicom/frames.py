"""Where each frame of Pixel Data lies in a Part 10 file: byte ranges found once, at ingest.

Encapsulated frames come from the Basic Offset Table or the fragment items;
native frames from the frame size. A frame request is then a ranged read.
"""

from __future__ import annotations

import logging
import struct
from typing import BinaryIO

from pydicom.dataset import Dataset

from archive.dicom.elements import ITEM, SEQ_DELIM, InvalidInstance, text_value

log = logging.getLogger(__name__)


def _read_items(fh: BinaryIO, start: int) -> list[tuple[int, int]]:
    """(offset, length) of every item of encapsulated Pixel Data starting at ``start``."""
    fh.seek(start)
    items: list[tuple[int, int]] = []
    while True:
        header = fh.read(8)
        if len(header) < 8:
            raise InvalidInstance("encapsulated Pixel Data is truncated")
        group, elem, length = struct.unpack("<HHI", header)
        tag = (group << 16) | elem
        if tag == SEQ_DELIM:
            return items
        if tag != ITEM or length == 0xFFFFFFFF:
            raise InvalidInstance("encapsulated Pixel Data has a malformed item")
        items.append((fh.tell(), length))
        fh.seek(length, 1)


def encapsulated_frames(
    fh: BinaryIO, value_tell: int, n_frames: int, eot: list[int] | None
) -> list[list[list[int]]] | None:
    items = _read_items(fh, value_tell)
    if not items:
        raise InvalidInstance("encapsulated Pixel Data has no Basic Offset Table item")
    (bot_pos, bot_len), fragments = items[0], items[1:]
    if not fragments:
        raise InvalidInstance("encapsulated Pixel Data has no fragments")
    if n_frames <= 1:
        return [[[off, ln] for off, ln in fragments]]
    if len(fragments) == n_frames:
        return [[[off, ln]] for off, ln in fragments]
    offsets: list[int] | None = eot
    if offsets is None and bot_len:
        fh.seek(bot_pos)
        offsets = list(struct.unpack(f"<{bot_len // 4}I", fh.read(bot_len)))
    if not offsets or len(offsets) != n_frames:
        return None  # frame boundaries unknown: decode at request time
    first_item = fragments[0][0] - 8
    frames: list[list[list[int]]] = [[] for _ in range(n_frames)]
    starts = [first_item + o for o in offsets] + [1 << 62]
    index = 0
    for off, ln in fragments:
        while index + 1 < n_frames and off - 8 >= starts[index + 1]:
            index += 1
        frames[index].append([off, ln])
    return frames if all(frames) else None


def native_frames(
    ds: Dataset, pixels: dict[str, int | None], value_tell: int, length: int, n_frames: int
) -> list[list[list[int]]] | None:
    rows, cols = pixels["Rows"] or 0, pixels["Columns"] or 0
    samples = pixels["SamplesPerPixel"] or 1
    bits = pixels["BitsAllocated"] or 0
    if not bits or bits % 8 or not rows or not cols:
        return None  # bit-packed (1-bit) frames do not start on byte boundaries
    frame_len = rows * cols * samples * bits // 8
    if samples == 3 and text_value(ds, "PhotometricInterpretation", 32) == "YBR_FULL_422":
        frame_len = rows * cols * 2 * bits // 8  # two samples per pixel after horizontal subsampling
    count = max(n_frames, 1)
    if frame_len * count > length:
        raise InvalidInstance("Pixel Data is shorter than Rows × Columns × frames require")
    return [[[value_tell + i * frame_len, frame_len]] for i in range(count)]
