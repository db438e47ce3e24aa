"""Preload hints: the DICOMweb requests the viewer page will make first.

The viewer's JavaScript asks, in a chain, for the series of the study (QIDO-RS),
then the metadata of the series it hangs first (WADO-RS), then that series'
first image: a small rendered preview and the lossless frame. Started only once
the page's modules have run, that chain sits behind every module download and
evaluation. The page instead names those
requests as ``<link rel="preload" as="fetch">`` so the browser starts them
while it is still parsing the HTML; the JavaScript's own ``fetch()`` of the
same URL then takes the preloaded response. The viewer stays a plain DICOMweb
client: a wrong guess costs one unused request, never a wrong image.

The choices here mirror ``static/viewer/displaysets.js`` (``hangingOrder``,
the sort of a stack along its slice normal) and the query of
``static/viewer/viewer.js``; the browser tests check that every hinted URL is
fetched exactly once.
"""

from __future__ import annotations

import math
import re
from urllib.parse import quote, urlencode

from archive.dicom.modalities import NON_IMAGE
from archive.dicom.syntaxes import NATIVE_LITTLE_ENDIAN
from archive.models import Series, Study

#: The ``includefield`` list of the viewer's series search, in its order (viewer.js).
SERIES_FIELDS = ("SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances", "BodyPartExamined")
LOCALIZER = re.compile(r"\b(scout|localizer|localiser|topogram|survey|scanogram|3.?plane)\b", re.IGNORECASE)
#: Above this many instances the first slice is not worth finding on the server.
MAX_SORTED = 2000
#: The largest side of the viewer's rendered preview (viewport.js ``PREVIEW_MAX``).
PREVIEW_MAX = 512


def series_search_path(root: str, study_uid: str) -> str:
    """The viewer's QIDO-RS series search of a study, as the page's JavaScript spells it."""
    query = urlencode([("includefield", name) for name in SERIES_FIELDS])
    return f"{root}/studies/{quote(study_uid, safe='')}/series?{query}"


def hanging_score(series: Series) -> int:
    """The score ``hangingOrder`` gives a series: biggest first, localizers and non-images last."""
    score = series.number_of_instances
    if series.modality in NON_IMAGE:
        score -= 10**9
    if LOCALIZER.search(series.series_description or ""):
        score -= 10**6
    return score


def first_series(study: Study) -> Series | None:
    """The image series the viewer hangs first, or None."""
    candidates = [s for s in study.series.all() if s.modality not in NON_IMAGE]
    if not candidates:
        return None
    return min(candidates, key=lambda s: (-hanging_score(s), s.series_number or 0))


def _element_values(metadata: str, tag: str) -> list[float]:
    """The numbers of one element of an instance's stored DICOM JSON, read without parsing all of it."""
    match = re.search(rf'"{tag}"\s*:\s*\{{[^{{}}]*?"Value"\s*:\s*\[([^\]]*)\]', metadata)
    if not match:
        return []
    try:
        return [float(v.strip().strip('"')) for v in match.group(1).split(",")]
    except ValueError:
        return []


def slice_position(metadata: str) -> float | None:
    """Position along the slice normal from (0020,0032) and (0020,0037), like displaysets.js."""
    ipp, iop = _element_values(metadata, "00200032"), _element_values(metadata, "00200037")
    if len(ipp) != 3 or len(iop) != 6:
        return None
    r, c = iop[:3], iop[3:]
    normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    return sum(n * p for n, p in zip(normal, ipp, strict=True))


def preview_size(rows: int, columns: int) -> str:
    """The ``viewport`` of the viewer's rendered preview: the image fitted into 512 pixels (viewport.js)."""
    scale = min(1.0, PREVIEW_MAX / max(rows, columns))
    width = max(1, math.floor(columns * scale + 0.5))  # JavaScript's Math.round
    height = max(1, math.floor(rows * scale + 0.5))
    return f"{width},{height}"


def first_image(series: Series) -> tuple[str, str, int, int] | None:
    """(SOP Instance UID, transfer syntax, rows, columns) of the image the viewer shows first, if cheap to tell."""
    rows = list(
        series.instances.filter(number_of_frames__lte=1, rows__isnull=False).values_list(
            "sop_instance_uid", "instance_number", "transfer_syntax_uid", "metadata", "rows", "columns"
        )[: MAX_SORTED + 1]
    )
    if not rows or len(rows) > MAX_SORTED:
        return None
    positions = [slice_position(row[3]) for row in rows]
    if all(p is not None for p in positions):
        # Highest position first, then by (0020,0013) Instance Number: displaysets.js sorts the same way.
        best = min(range(len(rows)), key=lambda k: (-(positions[k] or 0.0), rows[k][1] or 0))
    else:
        best = min(range(len(rows)), key=lambda k: rows[k][1] or 0)
    return rows[best][0], rows[best][2], rows[best][4] or 0, rows[best][5] or 0


def preload_urls(root: str, study: Study) -> list[str]:
    """The URLs the viewer fetches first for ``study``: series search, metadata, first frame."""
    urls = [series_search_path(root, study.study_instance_uid)]
    series = first_series(study)
    if series is None:
        return urls
    study_path = f"{root}/studies/{quote(study.study_instance_uid, safe='')}"
    series_path = f"{study_path}/series/{quote(series.series_instance_uid, safe='')}"
    urls.append(f"{series_path}/metadata")
    image = first_image(series)
    if image is not None:
        sop_uid, transfer_syntax, rows, columns = image
        instance_path = f"{series_path}/instances/{quote(sop_uid, safe='')}"
        if rows and columns:
            urls.append(f"{instance_path}/rendered?viewport={preview_size(rows, columns)}")
        if transfer_syntax in NATIVE_LITTLE_ENDIAN:  # the browser reads these frames as stored
            urls.append(f"{instance_path}/frames/1")
    return urls
