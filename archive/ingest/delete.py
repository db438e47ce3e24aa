"""Deleting a study or series (administrators only).

Index rows go in one transaction; the stored objects are removed after it
commits. A crash in between leaves objects without rows, which the sweeper
removes, never rows without objects.
"""

from __future__ import annotations

from django.db import transaction

from archive.models import Instance, Series, Study
from archive.storage.registry import get_storage


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
