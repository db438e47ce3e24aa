"""Method dispatch for DICOMweb resources that answer more than one method.

The same URL serves QIDO (GET) and STOW (POST) on ``/studies``, WADO (GET),
STOW (POST) and deletion (DELETE) on ``/studies/{study}``. Each function here
only picks the handler; the handlers live in ``qido``, ``wado``, ``stow`` and
``delete``. The dispatchers are CSRF-exempt because the handlers, wrapped in
:func:`archive.dicomweb.auth.dicomweb_view`, do the check themselves: bearer requests
carry no ambient credentials, and session requests must still pass it.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from archive.dicomweb import delete, qido, stow, wado
from archive.dicomweb.http import error


@csrf_exempt
def studies(request: HttpRequest) -> HttpResponseBase:
    if request.method in ("GET", "HEAD"):
        return qido.search_studies(request)
    if request.method == "POST":
        return stow.stow(request)
    return error(405, "Method not allowed on /studies", allow="GET, HEAD, POST")


@csrf_exempt
def study(request: HttpRequest, study: str) -> HttpResponseBase:
    if request.method in ("GET", "HEAD"):
        return wado.retrieve_study(request, study)
    if request.method == "POST":
        return stow.stow(request, study)
    if request.method == "DELETE":
        return delete.delete_study(request, study)
    return error(405, "Method not allowed on a study", allow="GET, HEAD, POST, DELETE")


@csrf_exempt
def series(request: HttpRequest, study: str, series: str) -> HttpResponseBase:
    if request.method in ("GET", "HEAD"):
        return wado.retrieve_series(request, study, series)
    if request.method == "DELETE":
        return delete.delete_series(request, study, series)
    return error(405, "Method not allowed on a series", allow="GET, HEAD, DELETE")
