"""Deleting a study or series (administrators only).

Index rows go in one transaction; the stored objects are removed after it
commits. A crash in between leaves objects without rows, which the sweeper
removes, never rows without objects.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from archive.access import policy, visible_studies
from archive.auth import dicomweb_view
from archive.models import Instance, Series, Study
from archive.responses import error
from archive.storage import get_storage
from archive.uid import is_valid_uid
from audit.trail import record


def _remove_objects(objects: list[tuple[str, str]]) -> None:
    for tier, key in objects:
        get_storage(tier).delete(key)


def remove_study(study: Study) -> int:
    """Delete a study's rows now and its objects once the deletion commits."""
    objects = list(Instance.objects.filter(series__study=study).values_list("tier", "storage_key"))
    with transaction.atomic():
        Study.objects.filter(pk=study.pk).delete()
        transaction.on_commit(lambda: _remove_objects(objects))
    return len(objects)


def remove_series(series: Series) -> int:
    objects = list(Instance.objects.filter(series=series).values_list("tier", "storage_key"))
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=series.study_id)
        Series.objects.filter(pk=series.pk).delete()
        remaining = Series.objects.filter(study=study)
        if not remaining.exists():
            Study.objects.filter(pk=study.pk).delete()
        else:
            modalities = sorted({m for m in remaining.values_list("modality", flat=True) if m})
            Study.objects.filter(pk=study.pk).update(
                number_of_series=remaining.count(),
                number_of_instances=Instance.objects.filter(series__study=study).count(),
                modalities_in_study="\\".join(modalities),
            )
        transaction.on_commit(lambda: _remove_objects(objects))
    return len(objects)


@dicomweb_view
def delete_study(request: HttpRequest, study: str) -> HttpResponse:
    if not is_valid_uid(study):
        return error(400, "The Study Instance UID is not a valid UID")
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
    if not (is_valid_uid(study) and is_valid_uid(series)):
        return error(400, "A UID in the URL is not a valid UID")
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
