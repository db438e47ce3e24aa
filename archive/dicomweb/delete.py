"""DELETE on a study or series (administrators only): the DICOMweb face of the trash and of deletion.

A study or a series goes to the recoverable trash (204; restored with
``manage.py trash restore UID`` or in the admin; a series that is the last of
its study takes the study with it). PS3.18 defines no
DELETE transaction, so the answers follow HTTP (RFC 9110): a legal hold or a
retention policy that forbids the deletion is ``409 Conflict`` — the request
conflicts with the resource's current state — with a JSON body saying which
and, for retention, until when. The UIDs in the URL are checked by
:func:`archive.dicomweb.auth.dicomweb_view` before a view runs (400 if bad).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from archive.access import policy, visible_studies
from archive.dicomweb.auth import dicomweb_view
from archive.dicomweb.http import error
from archive.ingest.retention import DeletionRefused, Refusal
from archive.ingest.trash import TrashError, trash_series, trash_study
from archive.models import Series
from audit.trail import record


def refused(refusal: Refusal) -> HttpResponse:
    """409 Conflict with what blocks the deletion (``legal-hold`` or ``retention``) and, for retention, until when."""
    body: dict[str, str] = {"detail": refusal.message, "reason": refusal.why}
    if refusal.why == "retention":
        body["retainUntil"] = refusal.until.isoformat() if refusal.until else "indefinitely"
    return JsonResponse(body, status=409)


@dicomweb_view
def delete_study(request: HttpRequest, study: str) -> HttpResponse:
    if not policy().can_delete(request.user):
        record("delete", request, outcome="denied", study_instance_uid=study)
        return error(403, "Only administrators may delete studies")
    found = visible_studies(request.user).select_related("patient").filter(study_instance_uid=study).first()
    if found is None:
        return error(404, "No such study")
    try:
        trash_study(found, request=request, via="dicomweb")
    except DeletionRefused as exc:
        return refused(exc.refusal)
    except TrashError:
        return error(404, "No such study")  # deleted by someone else a moment ago
    return HttpResponse(status=204)


@dicomweb_view
def delete_series(request: HttpRequest, study: str, series: str) -> HttpResponse:
    if not policy().can_delete(request.user):
        record("delete", request, outcome="denied", study_instance_uid=study)
        return error(403, "Only administrators may delete series")
    found = (
        Series.objects.select_related("study__patient")
        .filter(series_instance_uid=series, study__in=visible_studies(request.user).filter(study_instance_uid=study))
        .first()
    )
    if found is None:
        return error(404, "No such series")
    try:
        trash_series(found, request=request, via="dicomweb")  # audited there, refusals included
    except DeletionRefused as exc:
        return refused(exc.refusal)
    except TrashError:
        return error(404, "No such series")  # deleted by someone else a moment ago
    return HttpResponse(status=204)
