"""The viewer's two pages: the study search and the diagnostic viewer.

Both pages are shells: they carry the DICOMweb root and, for the viewer, the
Study Instance UID as ``data-`` attributes and load ES modules (the viewer as one
bundle of them, see :mod:`viewer.bundle`) from
``static/viewer/``. Everything shown about a patient is fetched by that
JavaScript over DICOMweb, so the viewer is just another DICOMweb client of the
archive. Access is decided by :func:`archive.access.visible_studies`; a study
the user may not see answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from archive.access import visible_studies
from archive.uid import is_valid_uid
from audit.trail import record
from viewer.hints import preload_urls

# The viewer's ES modules joined into one file (viewer/bundle.py): one request instead of ten.
SCRIPT = "viewer/viewer.bundle.js"


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
        "script": SCRIPT,
        "preloads": preload_urls(root, found),
    }
    return render(request, "viewer/viewer.html", context)
