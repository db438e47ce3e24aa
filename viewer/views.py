"""The viewer's two pages: the study search and the diagnostic viewer.

Both pages are shells: they carry the DICOMweb root and, for the viewer, the
Study Instance UID as ``data-`` attributes and load ES modules from ``static/viewer/`` (the
viewer as one script joined from them at first request, see
:mod:`viewer.bundle`). Everything shown about a patient is fetched by that
JavaScript over DICOMweb, so the viewer is just another DICOMweb client of the
archive. Access is decided by :func:`archive.access.visible_studies`; a study
the user may not see answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from archive.access import visible_studies
from archive.dicom.uid import is_valid_uid
from archive.dicomweb.http import not_modified
from audit.trail import record
from viewer.bundle import script
from viewer.hints import preload_urls


def dicomweb_base(request: HttpRequest) -> str:
    """The DICOMweb root as a path, so the page works behind any host name."""
    return reverse("dicomweb-root").rstrip("/")


@login_required
def search(request: HttpRequest) -> HttpResponse:
    """The study search page (QIDO-RS from the browser)."""
    return render(request, "viewer/search.html", {"dicomweb": dicomweb_base(request)})


@login_required
def study(request: HttpRequest, study_instance_uid: str) -> HttpResponse:
    """The viewer for one study: 400 for a malformed UID, 404 if not visible."""
    if not is_valid_uid(study_instance_uid):
        return render(request, "viewer/error.html", {"message": "That is not a valid Study Instance UID."}, status=400)
    found = (
        visible_studies(request.user).filter(study_instance_uid=study_instance_uid).select_related("patient").first()
    )
    if found is None:
        return render(request, "viewer/error.html", {"message": "Study not found."}, status=404)
    record("viewer.open", request, patient_id=found.patient.patient_id, study_instance_uid=study_instance_uid)
    root = dicomweb_base(request)
    context = {
        "dicomweb": root,
        "study_instance_uid": study_instance_uid,
        "script": reverse("viewer-script"),
        "preloads": preload_urls(root, found),
    }
    return render(request, "viewer/viewer.html", context)


@login_required
@require_GET
def viewer_script(request: HttpRequest) -> HttpResponse:
    """The viewer's modules as one script, built once per process from ``static/viewer/``."""
    text, etag = script()
    cache_control = "private, no-cache"  # revalidated each load: a deploy changes it at once
    response = not_modified(request, etag, cache_control)
    if response is None:
        response = HttpResponse(text, content_type="text/javascript; charset=utf-8")
        response["ETag"] = etag
        response["Cache-Control"] = cache_control
    return response
