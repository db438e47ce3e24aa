"""The inventory: what the legacy PACS holds, listed instance by instance into the ledger.

Study Root C-FIND, top down, so that no query ever asks for the whole archive:
STUDY level one study date at a time (and, when a day answers
``job.max_results`` studies or more, hour by hour, then minute by minute, since
many PACS cut long answers short), then SERIES level per study, then IMAGE
level per series. A study whose (0020,1208) Number of Study Related Instances,
or a series whose (0020,1209) Number of Series Related Instances, is what the
last inventory found is not queried further: a re-run lists only what
appeared or changed. An instance already in the ledger under another series,
or with another SOP class, is set back to pending as changed.

The day cursor is saved after each day, so an interrupted inventory resumes at
the day it stopped on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, timedelta

from django.db import transaction
from django.utils import timezone
from pydicom.dataset import Dataset

from migration.models import Job, LedgerInstance, LedgerSeries, LedgerStudy, State
from migration.scu import LegacyPeer, Matches
from pacs.lib.dblock import write_lock

log = logging.getLogger(__name__)

#: Called before each query: returns False when the run must stop (it also waits out the working-hours window).
Gate = Callable[[], bool]


def inventory(job: Job, peer: LegacyPeer, gate: Gate, on_day: Callable[[date], None] = lambda d: None) -> bool:
    """List the job's date range into the ledger from its cursor on; False if stopped before the end."""
    last = job.date_to or timezone.localdate()
    day = job.inventory_cursor or job.date_from
    while day <= last:
        if not gate():
            return False
        on_day(day)
        for match in studies_of_day(peer, day, job.max_results):
            if not gate():
                return False
            inventory_study(job, peer, match)
        day += timedelta(days=1)
        job.inventory_cursor = day
        job.save(update_fields=["inventory_cursor"])
    job.inventory_cursor = None
    job.inventory_done = True
    job.save(update_fields=["inventory_cursor", "inventory_done"])
    return True


STUDY_KEYS = {"StudyInstanceUID": "", "StudyTime": "", "NumberOfStudyRelatedInstances": "", "ModalitiesInStudy": ""}


def studies_of_day(peer: LegacyPeer, day: date, max_results: int) -> list[Dataset]:
    """The studies of one study date; a day (or hour) that answers ``max_results`` or more is asked again narrower."""
    stamp = day.strftime("%Y%m%d")
    day_matches = peer.find("STUDY", {**STUDY_KEYS, "StudyDate": stamp})
    found = {str(m.StudyInstanceUID): m for m in day_matches}
    if len(found) < max_results and not day_matches.cut_short:
        return list(found.values())
    log.info("inventory: %s answered %d studies, cut short or at the limit: asking hour by hour", stamp, len(found))
    for hour in range(24):
        matches = _find_time(peer, stamp, f"{hour:02d}0000-{hour:02d}5959")
        if len(matches) >= max_results or matches.cut_short:
            for minute in range(60):
                narrow = _find_time(peer, stamp, f"{hour:02d}{minute:02d}00-{hour:02d}{minute:02d}59")
                if narrow.cut_short or len(narrow) >= max_results:
                    log.warning("inventory: %s %02d:%02d still answers at the limit", stamp, hour, minute)
                matches += narrow
        found.update((str(m.StudyInstanceUID), m) for m in matches)
    return list(found.values())


def _find_time(peer: LegacyPeer, stamp: str, times: str) -> Matches:
    return peer.find("STUDY", {**STUDY_KEYS, "StudyDate": stamp, "StudyTime": times})


def _count(match: Dataset, keyword: str) -> int | None:
    try:
        value = match.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _values(match: Dataset, keyword: str) -> list[str]:
    value = match.get(keyword)
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [str(v).strip().upper() for v in items if str(v).strip()]


def inventory_study(job: Job, peer: LegacyPeer, match: Dataset) -> None:
    """Descend into one study (SERIES, then IMAGE level) unless its instance count says nothing changed."""
    study_uid = str(match.get("StudyInstanceUID", "") or "")
    if not study_uid:
        return
    wanted = set(job.modality_list())
    in_study = set(_values(match, "ModalitiesInStudy"))
    if wanted and in_study and not wanted & in_study:
        return
    count = _count(match, "NumberOfStudyRelatedInstances")
    known = LedgerStudy.objects.filter(job=job, study_instance_uid=study_uid).first()
    if known is not None and count is not None and known.legacy_count == count:
        return
    series_keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "Modality": ""}
    answer = peer.find("SERIES", {**series_keys, "NumberOfSeriesRelatedInstances": ""})
    if answer.cut_short:
        log.warning("inventory: the series of a study were cut short by the legacy PACS")
    series = [s for s in answer if not wanted or str(s.get("Modality", "")).upper() in wanted]
    if not series and known is None:
        return
    with write_lock(), transaction.atomic():
        study, _ = LedgerStudy.objects.get_or_create(
            job=job, study_instance_uid=study_uid, defaults={"study_date": str(match.get("StudyDate", "") or "")}
        )
    for found in series:
        inventory_series(job, peer, study, found)
    study.legacy_count = count
    study.save(update_fields=["legacy_count"])


def inventory_series(job: Job, peer: LegacyPeer, study: LedgerStudy, match: Dataset) -> None:
    series_uid = str(match.get("SeriesInstanceUID", "") or "")
    if not series_uid:
        return
    count = _count(match, "NumberOfSeriesRelatedInstances")
    series = LedgerSeries.objects.filter(study=study, series_instance_uid=series_uid).first()
    if series is not None and count is not None and series.legacy_count == count:
        if series.instances.count() == count:
            return
    keys = {
        "StudyInstanceUID": study.study_instance_uid,
        "SeriesInstanceUID": series_uid,
        "SOPInstanceUID": "",
        "SOPClassUID": "",
        "InstanceNumber": "",
    }
    images = peer.find("IMAGE", keys)
    now = timezone.now()
    with write_lock(), transaction.atomic():
        if series is None:
            series = LedgerSeries.objects.create(
                study=study, series_instance_uid=series_uid, modality=str(match.get("Modality", "") or "")
            )
        listed = {str(m.SOPInstanceUID): m for m in images if m.get("SOPInstanceUID")}
        known = {i.sop_instance_uid: i for i in LedgerInstance.objects.filter(job=job, sop_instance_uid__in=listed)}
        new = []
        for uid, image in listed.items():
            sop_class = str(image.get("SOPClassUID", "") or "")
            number = _count(image, "InstanceNumber")
            row = known.get(uid)
            if row is None:
                new.append(
                    LedgerInstance(
                        job=job, series=series, sop_instance_uid=uid, sop_class_uid=sop_class, instance_number=number
                    )
                )
            elif row.series_id != series.pk or (sop_class and row.sop_class_uid != sop_class):
                row.series, row.sop_class_uid, row.instance_number = series, sop_class, number
                row.state, row.last_error, row.updated_at = State.PENDING, "changed in the legacy PACS", now
                row.save()
        LedgerInstance.objects.bulk_create(new, batch_size=500)
        if images.cut_short:  # the run then asks for the whole series and adopts what was not listed
            count = max(count or 0, len(listed) + 1)
        series.legacy_count = count
        series.save(update_fields=["legacy_count"])
        if new:
            LedgerStudy.objects.filter(pk=study.pk).exclude(state=State.PENDING).update(state=State.IN_PROGRESS)
