"""Deleting a study or series for good (administrators only), behind the one guard.

Deleting a *study* or a *series* through any face (DICOMweb, admin, commands)
moves it to the recoverable trash (:mod:`archive.ingest.trash`), whose purge
removes it for good; :func:`remove_study` and :func:`remove_series` here
delete at once (no face calls them for a deletion any more). Both ask
:func:`archive.ingest.retention.check_deletable` first: a legal hold or a
retention policy refuses with :class:`~archive.ingest.retention.DeletionRefused`.

Here, index rows go in one transaction; the stored objects are removed after it
commits. A crash in between leaves objects without rows, which the sweeper
removes, never rows without objects. An instance in the middle of a tier move
has a second copy (the copy at the target, or the source waiting out its
grace period): it goes too, or sweep would find it and index it again; so do
the earlier versions a correction kept (:class:`~archive.models.InstanceVersion`).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from archive.ingest.retention import check_deletable
from archive.models import ACTIVE_MOVE_STATES, Instance, InstanceVersion, Series, Study, TierMove
from archive.storage.registry import get_storage
from pacs.lib.dblock import write_lock


def remove_objects(objects: list[tuple[str, str]]) -> None:
    for tier, key in objects:
        get_storage(tier).delete(key)


def stored_copies(instances: QuerySet[Instance]) -> list[tuple[str, str]]:
    """Every (tier, key) holding a copy of ``instances``: where the index says, both ends of moves under way,
    the earlier versions corrections kept, and the archive copies restores kept (``keep_source``)."""
    objects = set(instances.values_list("tier", "storage_key"))
    objects |= set(InstanceVersion.objects.filter(instance__in=instances).values_list("tier", "storage_key"))
    kept = TierMove.objects.filter(instance__in=instances, keep_source=True)
    objects |= set(kept.values_list("source_tier", "source_key"))
    moves = TierMove.objects.filter(instance__in=instances, state__in=ACTIVE_MOVE_STATES)
    for source_tier, target_tier, key in moves.values_list("source_tier", "target_tier", "source_key"):
        objects |= {(source_tier, key), (target_tier, key)}
    return sorted(objects)


def remove_study(study: Study) -> int:
    """Delete a study's rows now and its objects once the deletion commits (the guard first)."""
    instances = Instance.objects.filter(series__study=study)
    count, objects = instances.count(), stored_copies(instances)
    with write_lock(), transaction.atomic():
        check_deletable(Study.objects.select_for_update().select_related("patient").get(pk=study.pk))
        Study.objects.filter(pk=study.pk).delete()
        transaction.on_commit(lambda: remove_objects(objects))
    return count


def remove_series(series: Series) -> int:
    """Delete a series' rows now and its objects once the deletion commits (the guard on its study first)."""
    instances = Instance.objects.filter(series=series)
    count, objects = instances.count(), stored_copies(instances)
    with write_lock(), transaction.atomic():
        study = Study.objects.select_for_update().select_related("patient").get(pk=series.study_id)
        check_deletable(study)
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
        transaction.on_commit(lambda: remove_objects(objects))
    return count


def discard_unacknowledged(sop_instance_uids: list[str]) -> int:
    """Remove instances a caller stored moments ago for an act that then failed (a report signature).

    Such instances were never acknowledged to anyone as part of the record (the signature that would have
    made them so was not recorded), so they skip the recoverable trash and the retention guard: a legal
    hold preserves what the record holds, and these orphans never entered it. The caller names the exact
    instances it stored itself and audits the discard. Series and study counts are kept; an emptied series
    goes, the study stays (it held the images the report was about).
    """
    instances = Instance.objects.filter(sop_instance_uid__in=sop_instance_uids)
    objects = stored_copies(instances)
    with write_lock(), transaction.atomic():
        rows = list(instances.values_list("pk", "series_id", "series__study_id"))
        if not rows:
            return 0
        Instance.objects.filter(pk__in=[pk for pk, _, _ in rows]).delete()
        for series_id in {series_id for _, series_id, _ in rows}:
            left = Instance.objects.filter(series_id=series_id).count()
            if left:
                Series.objects.filter(pk=series_id).update(number_of_instances=left)
            else:
                Series.objects.filter(pk=series_id).delete()
        for study_id in {study_id for _, _, study_id in rows}:
            remaining = Series.objects.filter(study_id=study_id)
            modalities = sorted({m for m in remaining.values_list("modality", flat=True) if m})
            Study.objects.filter(pk=study_id).update(
                number_of_series=remaining.count(),
                number_of_instances=Instance.objects.filter(series__study_id=study_id).count(),
                modalities_in_study="\\".join(modalities),
            )
        transaction.on_commit(lambda: remove_objects(objects))
    return len(rows)
