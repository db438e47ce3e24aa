"""The transfer syntaxes the archive treats by name (PS3.5 §10), and the sets it decides by.

The one place for them: every module imports the UIDs from here, which are
pydicom's own :class:`~pydicom.uid.UID` constants (``str`` subclasses, equal to
the dotted strings stored in the index), so no module spells a transfer
syntax UID as a string of its own.
"""

from __future__ import annotations

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

__all__ = [
    "NATIVE_LITTLE_ENDIAN",
    "NOT_FOR_THE_WEB",
    "UNCOMPRESSED",
    "DeflatedExplicitVRLittleEndian",
    "ExplicitVRBigEndian",
    "ExplicitVRLittleEndian",
    "ImplicitVRLittleEndian",
]

#: Native pixels in little endian: a frame is a plain byte range of the stored file.
NATIVE_LITTLE_ENDIAN = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian})
#: The syntaxes whose pixels are not compressed (pydicom reads them without a codec).
UNCOMPRESSED = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian}
)
#: Syntaxes PS3.18 §8.7.3 forbids on the web; a wildcard request gets Explicit VR Little Endian instead.
NOT_FOR_THE_WEB = frozenset({ImplicitVRLittleEndian, ExplicitVRBigEndian})
