"""Method dispatch for DICOMweb resources that answer more than one method.

The same URL serves QIDO (GET) and STOW (POST) on ``/studies``, WADO (GET),
STOW (POST) and deletion (DELETE) on ``/studies/{study}``. Each function here
only picks the handler; the handlers live in ``qido``, ``wado``, ``stow`` and
``delete``.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from archive import delete, qido, stow, wado
from archive.responses import error


def studies(request: HttpRequest) -> HttpResponse:
    if request.method in ("GET", "HEAD"):
        return qido.search_studies(request)
    if request.method == "POST":
        return stow.stow(request)
    return error(405, "Method not allowed on /studies", allow="GET, HEAD, POST")


def study(request: HttpRequest, study: str) -> HttpResponse:
    if request.method in ("GET", "HEAD"):
        return wado.retrieve_study(request, study)
    if request.method == "POST":
        return stow.stow(request, study)
    if request.method == "DELETE":
        return delete.delete_study(request, study)
    return error(405, "Method not allowed on a study", allow="GET, HEAD, POST, DELETE")


def series(request: HttpRequest, study: str, series: str) -> HttpResponse:
    if request.method in ("GET", "HEAD"):
        return wado.retrieve_series(request, study, series)
    if request.method == "DELETE":
        return delete.delete_series(request, study, series)
    return error(405, "Method not allowed on a series", allow="GET, HEAD, DELETE")
