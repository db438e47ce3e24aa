"""Modalities, as (0008,0060) Modality names them: which ones carry no images.

A study holds images and, beside them, objects that are not pictures: a
structured report (SR), an encapsulated PDF (DOC), presentation states (PR),
key object selections (KO), segmentations, RT plans and so on. The viewer
hangs only image series (``static/viewer/displaysets.js`` ``NON_IMAGE``, the
same set), and the worklist counts and lists only what a reader calls
images: a signed report's SR and PDF never add to a study's image count.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Modalities whose series carry no pixels (the viewer's ``NON_IMAGE``).
NON_IMAGE = frozenset({"SR", "PR", "KO", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "DOC", "AU", "ECG"})


def is_image(modality: str) -> bool:
    """Does a series of this modality hold images? (An unknown or empty modality is taken to.)"""
    return modality.strip().upper() not in NON_IMAGE


def image_modalities(modalities: Iterable[str]) -> list[str]:
    """The image modalities among ``modalities``, in their order; all of them when none is an image modality."""
    given = [m for m in modalities if m]
    images = [m for m in given if is_image(m)]
    return images or given
