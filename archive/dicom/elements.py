"""Tags and small data set readers that every module of :mod:`archive.dicom` shares.

:class:`InvalidInstance` is the one error for an object the archive cannot keep.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

BULK_THRESHOLD = 1024
PIXEL_DATA = 0x7FE00010
ITEM = 0xFFFEE000
SEQ_DELIM = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF


class InvalidInstance(ValueError):
    """The object is not a DICOM instance the archive can keep.

    ``uids`` holds the identifying UIDs (``sop_class_uid``, ``sop_instance_uid``,
    ``study_instance_uid``, ``series_instance_uid``) when they were read and
    valid before the object was refused, so that the refusal can name the instance.
    """

    def __init__(self, message: str, uids: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.uids: dict[str, str] = uids or {}


def text_value(ds: Dataset, keyword: str, limit: int = 1024) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text.replace("\x00", "").strip()[:limit]


def int_value(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):  # OverflowError: "inf", "1e400"
        return None
