"""The migration ledger: a job, and the state of every study, series and instance the legacy PACS listed.

A :class:`Job` names the legacy PACS (its :class:`~archive.models.DicomDevice`,
which must be allowed to store: the migrated studies belong to the device's
site) and the filters (dates, modalities), the working-hours window and the
rate limit. Its inventory (C-FIND down to IMAGE level) fills
:class:`LedgerStudy`, :class:`LedgerSeries` and :class:`LedgerInstance`; the
retrieval moves each instance from ``pending`` through ``in_progress`` to a
final state, checked against what actually arrived in the index, never
against the counts the legacy side reports. Every state change is a row
update, so a job killed at any point resumes where it stood.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from archive.models import DicomDevice

#: (0008,0060) Modality: a Code String.
MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")


class State(models.TextChoices):
    """The state of a ledger row (an instance, or a study summarising its instances)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress", "in progress"
    COMPLETE = "complete"  # arrived, stored object verified, as the inventory said
    MISSING = "missing"  # listed by the legacy PACS, never arrived
    MISMATCHED = "mismatched"  # arrived but contradicting the inventory (other study/series UID, SOP class, content)
    FAILED = "failed"  # could not be asked for (association refused, network), or failed verification


#: States a run works on: everything not final, and the failures it retries.
TO_RETRIEVE = (State.PENDING, State.IN_PROGRESS, State.FAILED, State.MISSING)


class JobState(models.TextChoices):
    NEW = "new"
    QUEUED = "queued"  # enqueued for the task worker
    RUNNING = "running"
    WAITING = "waiting"  # outside its working-hours window
    STOPPED = "stopped"  # stopped on request (or interrupted): resume it
    COMPLETE = "complete"  # inventory and retrieval done (some instances may be missing: see the report)
    FAILED = "failed"  # the run ended on an error (the legacy PACS unreachable, ...): resume it


class Method(models.TextChoices):
    MOVE = "move", "C-MOVE to this node"
    GET = "get", "C-GET"


class Job(models.Model):
    """One migration from one legacy PACS, with its filters; run it again to resume or to fetch what is new."""

    device = models.ForeignKey(
        DicomDevice,
        on_delete=models.PROTECT,
        related_name="migration_jobs",
        help_text="The legacy PACS as a DICOM device: it must be allowed to store; its site receives the studies.",
    )
    host = models.CharField(max_length=255, help_text="Address or name of the legacy PACS.")
    port = models.PositiveIntegerField(help_text="Its DICOM port.")
    method = models.CharField(max_length=8, choices=Method.choices, default=Method.MOVE)
    destination_ae = models.CharField(
        "move destination AE title",
        max_length=16,
        blank=True,
        default="",
        help_text="The AE title the legacy PACS knows this node by (C-MOVE); empty: this node's own.",
    )
    date_from = models.DateField("from", help_text="First study date to migrate.")
    date_to = models.DateField("to", null=True, blank=True, help_text="Last study date; empty: the day it runs.")
    modalities = models.CharField(
        max_length=200, blank=True, default="", help_text="Modalities to migrate, comma-separated; empty: all."
    )
    window_start = models.TimeField(null=True, blank=True, help_text="Work only from this time of day ...")
    window_end = models.TimeField(null=True, blank=True, help_text="... to this one (may wrap past midnight).")
    rate_limit = models.FloatField(
        null=True, blank=True, help_text="At most this many instances per second; empty: as fast as it goes."
    )
    max_results = models.PositiveIntegerField(
        default=500, help_text="A C-FIND answering this many studies is asked again over narrower time ranges."
    )

    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.NEW)
    stop_requested = models.BooleanField(default=False)
    last_error = models.TextField(blank=True, default="")
    inventory_cursor = models.DateField(null=True, blank=True, help_text="The next study date to inventory.")
    inventory_done = models.BooleanField(default=False)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    work_seconds = models.FloatField(default=0.0, help_text="Time spent retrieving (waits excluded).")
    received_instances = models.PositiveBigIntegerField(default=0)
    received_bytes = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "migration job"

    def __str__(self) -> str:
        return f"#{self.pk} from {self.device.ae_title}"

    def clean(self) -> None:
        """The rules the command checks too: dates in order, a whole non-empty window, a positive rate."""
        errors: dict[str, str] = {}
        if self.date_to is not None and self.date_from is not None and self.date_to < self.date_from:
            errors["date_to"] = "The last study date is before the first."
        if (self.window_start is None) != (self.window_end is None):
            errors["window_end"] = "Give both ends of the window, or neither."
        elif self.window_start is not None and self.window_start == self.window_end:
            errors["window_end"] = "The window is empty: its start and end are the same."
        if self.rate_limit is not None and not self.rate_limit > 0:
            errors["rate_limit"] = "A rate limit is a positive number of instances per second."
        bad = [m for m in self.modality_list() if not MODALITY.match(m)]
        if bad:
            errors["modalities"] = f"Not DICOM modalities: {', '.join(bad)}."
        if errors:
            raise ValidationError(errors)
        self.modalities = ",".join(sorted(set(self.modality_list())))

    def modality_list(self) -> list[str]:
        return [m.strip().upper() for m in self.modalities.split(",") if m.strip()]


class LedgerStudy(models.Model):
    """A study the legacy PACS listed; its state summarises its instances'."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="studies")
    study_instance_uid = models.CharField(max_length=64)
    study_date = models.CharField(max_length=8, blank=True, default="")
    legacy_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="(0020,1208) Number of Study Related Instances at the last full inventory."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    last_error = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "ledger studies"
        constraints = [models.UniqueConstraint(fields=["job", "study_instance_uid"], name="ledger_study_unique")]
        indexes = [models.Index(fields=["job", "state"], name="ledger_study_state")]

    def __str__(self) -> str:
        return self.study_instance_uid


class LedgerSeries(models.Model):
    """A series the legacy PACS listed, with the count it gave at the last full inventory."""

    study = models.ForeignKey(LedgerStudy, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, blank=True, default="")
    legacy_count = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "ledger series"
        constraints = [models.UniqueConstraint(fields=["study", "series_instance_uid"], name="ledger_series_unique")]

    def __str__(self) -> str:
        return self.series_instance_uid


class LedgerInstance(models.Model):
    """An instance the legacy PACS listed, and what became of it."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="instances")
    series = models.ForeignKey(LedgerSeries, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(max_length=64)
    sop_class_uid = models.CharField(max_length=64, blank=True, default="")
    instance_number = models.IntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    size = models.BigIntegerField(null=True, blank=True, help_text="Bytes of the stored object.")
    verified = models.BooleanField(default=False, help_text="The stored object matched its SHA-256 when checked.")
    pixel_sha256 = models.CharField(max_length=64, blank=True, default="", db_index=True)
    received_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "sop_instance_uid"], name="ledger_instance_unique")]
        indexes = [models.Index(fields=["job", "state"], name="ledger_instance_state")]

    def __str__(self) -> str:
        return self.sop_instance_uid
