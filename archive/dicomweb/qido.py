"""QIDO-RS (PS3.18 §10.6): searching studies, series and instances.

A search is answered from the index alone: matching runs on indexed columns
and responses are assembled from the JSON precomputed at ingest
(``Study.attributes``, ``Series.attributes`` and, at instance level,
``Instance.metadata``); no DICOM file is opened. Every search starts from
:func:`archive.access.visible_studies`, costs a fixed number of queries
whatever the number of results, and leaves one audit record.

Matching (PS3.4 C.2.2.2 as profiled by PS3.18 §8.3.4) lives in
:mod:`archive.query.matching`. Unsupported query keys are ignored with a
``Warning: 299`` header; malformed values are a 400 that names the parameter.
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse

from archive.access import policy
from archive.dicomweb.auth import READ_METHODS, dicomweb_view
from archive.dicomweb.http import add_warnings, dicomweb_root, error
from archive.dicomweb.negotiation import accept_header, json_media_type
from archive.query.matching import BadQuery, Level, parse_query, search_queryset
from archive.query.results import INSTANCE_FIELDS, SERIES_FIELDS, STUDY_FIELDS, results
from audit.trail import record


def search(request: HttpRequest, level: Level, study: str | None = None, series: str | None = None) -> HttpResponse:
    """The shared body of the three search resources."""
    media_type = json_media_type(accept_header(request))
    if media_type is None:
        return error(406, "Search results are available as application/dicom+json only")
    audit = {"level": level.name.lower(), "query": {k[:64]: v[:64] for k, v in list(request.GET.items())[:16]}}
    if study is None and not policy().can_search(request.user):
        record("search", request, outcome="denied", detail=audit)
        return error(403, "You may not search the archive; open a study you were given instead")
    try:
        query = parse_query(request, level)
        queryset = search_queryset(request, query, study, series)
    except BadQuery as exc:
        return error(400, str(exc))
    fields = {Level.STUDY: STUDY_FIELDS, Level.SERIES: SERIES_FIELDS, Level.INSTANCE: INSTANCE_FIELDS}[level]
    rows = list(queryset.values(*fields)[query.offset : query.offset + query.limit + 1])
    truncated = len(rows) > query.limit
    # Attributes in tag order (PS3.18 F.2.2): parents' and the level's own attributes were merged.
    body = [
        dict(sorted(item.items()))
        for item in results(query, rows[: query.limit], dicomweb_root(request), study is not None)
    ]
    record("search", request, study_instance_uid=study or "", detail=audit)
    response = HttpResponse(
        b"" if request.method == "HEAD" else json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        content_type=media_type,
    )
    warnings = []
    if query.ignored:
        names = ", ".join(sorted(set(query.ignored))[:10])
        warnings.append(f"The following query keys are not supported and were ignored: {names}")
    if truncated and query.server_limited:
        warnings.append(f"The number of results exceeded the maximum of {query.limit}; use limit and offset")
    add_warnings(response, request, warnings)
    response["Cache-Control"] = "no-store"
    return response


@dicomweb_view(methods=READ_METHODS)
def root(request: HttpRequest) -> HttpResponse:
    """GET /dicom-web/: a small signed-in answer naming the service's resources."""
    base = dicomweb_root(request)
    return JsonResponse(
        {
            "service": "DICOMweb",
            "user": request.user.get_username(),
            "studies": f"{base}/studies",
            "series": f"{base}/series",
            "instances": f"{base}/instances",
        }
    )


@dicomweb_view(methods=READ_METHODS)
def search_studies(request: HttpRequest) -> HttpResponse:
    """SearchForStudies: GET /studies."""
    return search(request, Level.STUDY)


@dicomweb_view(methods=READ_METHODS)
def search_series(request: HttpRequest, study: str | None = None) -> HttpResponse:
    """SearchForSeries: GET /series and /studies/{study}/series."""
    return search(request, Level.SERIES, study)


@dicomweb_view(methods=READ_METHODS)
def search_instances(request: HttpRequest, study: str | None = None, series: str | None = None) -> HttpResponse:
    """SearchForInstances: GET /instances, /studies/{study}/instances, /studies/{study}/series/{series}/instances."""
    return search(request, Level.INSTANCE, study, series)
