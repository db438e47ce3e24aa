"""The index writer: one stored instance into its Patient, Study, Series and Instance rows."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from archive.dicom.part10 import ParsedInstance
from archive.ingest.signals import announce
from archive.models import Instance, Patient, PersonNameWord, Series, Site, Study
from pacs.lib.dblock import write_lock
from pacs.lib.sql import per_vendor

log = logging.getLogger(__name__)


def site_for(parsed: ParsedInstance, sender_site: Site | None = None) -> Site | None:
    """The site a new study belongs to.

    By default (``PACS_STUDY_SITE_SOURCE = "sender"``) a sender that belongs to
    one site decides; otherwise (0008,0080) Institution Name is matched against
    the sites' institution names. ``"institution"`` reverses the order.
    """
    by_institution = _site_by_institution(parsed)
    if settings.PACS_STUDY_SITE_SOURCE == "institution":
        return by_institution or sender_site
    return sender_site or by_institution


def _site_by_institution(parsed: ParsedInstance) -> Site | None:
    name = parsed.index.institution_name.strip().upper()
    if name:
        for site in Site.objects.exclude(institution_names=""):
            if name in site.institution_name_list():
                return site
    return None


def _merge_modalities(current: str, modality: str) -> str:
    values = set(filter(None, current.split("\\")))
    if modality:
        values.add(modality)
    return "\\".join(sorted(values))


def index_instance(
    parsed: ParsedInstance, key: str, sha256: str, size: int, tier: str = "hot", site: Site | None = None
) -> int:
    """Write the Patient/Study/Series/Instance rows for one placed object; returns the instance's pk."""
    with write_lock(), transaction.atomic():
        writer = IndexWriter(site_of=lambda: site)
        pk = writer.add(parsed, key, sha256, size, tier)
        writer.flush()
    announce(writer.studies_of([parsed]))
    return pk


class IndexWriter:
    """Writes instance rows inside the caller's transaction; counters once per series at the end.

    The common case, another instance of a series already indexed, costs one
    lookup per series and one INSERT per instance in plain SQL (the ORM's query
    building cost more than the statements); the first instance of a series or
    study takes the full ORM path. :meth:`flush` adds the instance and series
    counts in two UPDATEs per series.
    """

    def __init__(self, site_of: Callable[[], Site | None]) -> None:
        self.site_of = site_of
        self.connection = connections[router.db_for_write(Instance)]
        self.series: dict[str, tuple[int, int, str]] = {}  # series UID -> (series pk, study pk, study UID)
        self.counts: dict[tuple[int, int], list[int]] = {}  # (series pk, study pk) -> [instances, new series]
        self.uncommitted: tuple[tuple[int, int], bool] | None = None
        self.created: set[str] = set()

    def add(self, parsed: ParsedInstance, key: str, sha256: str, size: int, tier: str = "hot") -> int:
        uid = parsed.series_instance_uid
        known = self.series.get(uid) or self._lookup(uid)
        created = False
        if known is None:
            series_pk, study_pk, created = _index_parents(parsed, self.site_of)
            known = (series_pk, study_pk, parsed.study_instance_uid)
            if created:
                self.created.add(uid)
        if known[2] != parsed.study_instance_uid:
            raise InvalidSeriesParent(uid)
        self.series[uid] = known
        pk = self._insert(parsed, known[0], key, sha256, size, tier)
        self.uncommitted = ((known[0], known[1]), created)
        return pk

    def studies_of(self, parsed: Iterable[ParsedInstance]) -> set[int]:
        """The primary keys of the studies that instances this writer added belong to."""
        known = (self.series.get(p.series_instance_uid) for p in parsed)
        return {k[1] for k in known if k is not None}

    def commit_counts(self) -> None:
        if self.uncommitted is not None:
            group, created = self.uncommitted
            counts = self.counts.setdefault(group, [0, 0])
            counts[0] += 1
            counts[1] += int(created)
            self.uncommitted = None

    def forget(self, parsed: ParsedInstance) -> None:
        """The last :meth:`add` was rolled back: forget what it learned inside its savepoint."""
        self.uncommitted = None
        uid = parsed.series_instance_uid
        if uid in self.created:
            self.created.discard(uid)
            self.series.pop(uid, None)

    def flush(self) -> None:
        self.commit_counts()
        if not self.counts:
            return
        sql = _statements(self.connection)
        now = self.connection.ops.adapt_datetimefield_value(timezone.now())
        with self.connection.cursor() as cursor:
            for (series_pk, study_pk), (instances, new_series) in self.counts.items():
                cursor.execute(sql.count_series, [instances, series_pk])
                cursor.execute(sql.count_study, [instances, new_series, now, study_pk])
        self.counts = {}

    def _lookup(self, series_uid: str) -> tuple[int, int, str] | None:
        with self.connection.cursor() as cursor:
            cursor.execute(_statements(self.connection).find_series, [series_uid])
            row = cursor.fetchone()
        return (row[0], row[1], row[2]) if row else None

    def _insert(self, parsed: ParsedInstance, series_pk: int, key: str, sha256: str, size: int, tier: str) -> int:
        instance = Instance(
            sop_instance_uid=parsed.sop_instance_uid,
            series_id=series_pk,
            sop_class_uid=parsed.sop_class_uid,
            instance_number=parsed.index.instance_number,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            number_of_frames=parsed.number_of_frames,
            rows=parsed.rows,
            columns=parsed.columns,
            size=size,
            sha256=sha256,
            storage_key=key,
            tier=tier,
            metadata=parsed.metadata_text(),
            frames=parsed.frames,
        )
        params = [f.get_db_prep_save(f.pre_save(instance, True), self.connection) for f in _INSTANCE_FIELDS]
        with self.connection.cursor() as cursor:
            cursor.execute(_statements(self.connection).insert_instance, params)
            return int(cursor.fetchone()[0])


_INSTANCE_FIELDS = [f for f in Instance._meta.concrete_fields if not f.primary_key]


@dataclass(frozen=True)
class _Statements:
    find_series: str
    insert_instance: str
    count_series: str
    count_study: str


@per_vendor
def _statements(q: Callable[[str], str]) -> _Statements:
    series, study, instance = (q(m._meta.db_table) for m in (Series, Study, Instance))
    columns = ", ".join(q(str(f.column)) for f in _INSTANCE_FIELDS)
    marks = ", ".join(["%s"] * len(_INSTANCE_FIELDS))
    # Only model metadata is interpolated (quoted table and column names); values are parameters.
    return _Statements(
        find_series=(
            f"SELECT s.id, s.study_id, st.study_instance_uid FROM {series} s "  # noqa: S608
            f"JOIN {study} st ON st.id = s.study_id WHERE s.series_instance_uid = %s"
        ),
        insert_instance=f"INSERT INTO {instance} ({columns}) VALUES ({marks}) RETURNING id",  # noqa: S608
        count_series=f"UPDATE {series} SET number_of_instances = number_of_instances + %s WHERE id = %s",  # noqa: S608
        count_study=(
            f"UPDATE {study} SET number_of_instances = number_of_instances + %s, "  # noqa: S608
            "number_of_series = number_of_series + %s, updated_at = %s WHERE id = %s"
        ),
    )


def _index_parents(parsed: ParsedInstance, site_of: Callable[[], Site | None]) -> tuple[int, int, bool]:
    """Create (or find) the patient, study and series of a series not yet indexed.

    The caller has just looked the series up in this transaction, so it is
    created straight away (a savepoint catches a concurrent writer on
    PostgreSQL); likewise the study once the locking lookup found none.
    """
    ix = parsed.index
    patient, new_patient = Patient.objects.get_or_create(
        patient_id=ix.patient_id,
        issuer_of_patient_id=ix.issuer_of_patient_id,
        defaults={
            "patient_name": ix.patient_name,
            "patient_name_search": ix.patient_name_search,
            "patient_birth_date": ix.patient_birth_date,
            "patient_sex": ix.patient_sex,
        },
    )
    words = []
    if new_patient:
        words += [PersonNameWord(word=w, patient=patient) for w in name_words(ix.patient_name_search)]
    study = Study.objects.select_for_update().filter(study_instance_uid=parsed.study_instance_uid).first()
    if study is None:
        study, new_study = _create_or_get(
            Study,
            {"study_instance_uid": parsed.study_instance_uid},
            lambda: {
                "patient": patient,
                "site": site_for(parsed, site_of()),
                "study_date": ix.study_date,
                "study_time": ix.study_time,
                "accession_number": ix.accession_number,
                "study_id": ix.study_id,
                "study_description": ix.study_description,
                "referring_physician_name": ix.referring_physician_name,
                "referring_physician_search": ix.referring_physician_search,
                "institution_name": ix.institution_name,
                "modalities_in_study": _merge_modalities("", ix.modality),
                "attributes": parsed.study_attributes(),
            },
        )
        if new_study:
            words += [PersonNameWord(word=w, study=study) for w in name_words(ix.referring_physician_search)]
    if words:
        PersonNameWord.objects.bulk_create(words)
    series, created = _create_or_get(
        Series,
        {"series_instance_uid": parsed.series_instance_uid},
        lambda: {
            "study": study,
            "modality": ix.modality,
            "series_number": ix.series_number,
            "series_description": ix.series_description,
            "series_date": ix.series_date,
            "series_time": ix.series_time,
            "body_part_examined": ix.body_part_examined,
            "attributes": parsed.series_attributes(),
        },
    )
    if series.study_id != study.pk:
        raise InvalidSeriesParent(parsed.series_instance_uid)
    modalities = _merge_modalities(study.modalities_in_study, ix.modality)
    if modalities != study.modalities_in_study:
        Study.objects.filter(pk=study.pk).update(modalities_in_study=modalities)
    return series.pk, study.pk, created


def _create_or_get(model: Any, unique: dict[str, Any], values: Callable[[], dict[str, Any]]) -> tuple[Any, bool]:
    """INSERT the row the caller has just not found; a concurrent twin wins and is read back (locked)."""
    try:
        with transaction.atomic():
            return model.objects.create(**unique, **values()), True
    except IntegrityError as exc:
        try:
            return model.objects.select_for_update().get(**unique), False
        except model.DoesNotExist:
            raise exc from None  # not a twin: the row itself was refused


def name_words(name_search: str) -> set[str]:
    """The words of an upper-cased alphabetic name group, as :class:`PersonNameWord` stores them."""
    return {w[:64] for w in re.split(r"[ ^]+", name_search) if w}


class InvalidSeriesParent(IntegrityError):
    """A Series Instance UID already belongs to another study."""
