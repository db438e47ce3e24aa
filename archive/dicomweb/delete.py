"""DELETE on a study or series (administrators only): the DICOMweb face of :mod:`archive.ingest.delete`.

The UIDs in the URL are checked by :func:`archive.dicomweb.auth.dicomweb_view` before a view runs.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from archive.access import policy, visible_studies
from archive.dicomweb.auth import dicomweb_view
from archive.dicomweb.http import error
from archive.ingest.delete import remove_series, remove_study
from archive.models import Series
from audit.trail import record


@dicomweb_view
def delete_study(request: HttpRequest, study: str) -> HttpResponse:
    if not policy().can_delete(request.user):
        record("delete", request, outcome="denied", study_instance_uid=study)
        return error(403, "Only administrators may delete studies")
    found = visible_studies(request.user).select_related("patient").filter(study_instance_uid=study).first()
    if found is None:
        return error(404, "No such study")
    count = remove_study(found)
    record(
        "delete", request, patient_id=found.patient.patient_id, study_instance_uid=study, detail={"instances": count}
    )
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
    count = remove_series(found)
    record(
        "delete",
        request,
        patient_id=found.study.patient.patient_id,
        study_instance_uid=study,
        detail={"series": series, "instances": count},
    )
    return HttpResponse(status=204)
