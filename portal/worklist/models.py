"""The worklist's own tables.

* :class:`WorklistItem`: one row per study, kept by ingest (see
  :mod:`portal.worklist.rows`), holding copies of what the list shows and
  sorts by, so a page is one indexed query and never a search of the index.
  Who may see a row is still decided by the study's access policy.
* :class:`RoutingRule`: administrators route arriving studies by site,
  modality and body part to a reader group.
* :class:`SavedWorklist`: a named set of filters, per user, optionally shared
  with a group.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone

from archive.models import Site, Study
from portal.worklist.statuses import Priority, Status


class WorklistItem(models.Model):
    """The reading state of one study and what its worklist row shows."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="worklist_item")
    study_instance_uid = models.CharField(max_length=64, unique=True)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.ROUTINE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ARRIVED)
    patient_name = models.CharField(max_length=1024, blank=True, default="")
    patient_name_search = models.CharField(max_length=1024, blank=True, default="")
    patient_id = models.CharField(max_length=64, blank=True, default="")
    patient_age = models.CharField(max_length=8, blank=True, default="", help_text="(0010,1010) form, e.g. 045Y.")
    patient_sex = models.CharField(max_length=16, blank=True, default="")
    modality = models.CharField(max_length=200, blank=True, default="")
    body_part = models.CharField(max_length=64, blank=True, default="")
    description = models.CharField(max_length=1024, blank=True, default="")
    accession_number = models.CharField(max_length=64, blank=True, default="")
    site = models.ForeignKey(Site, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    site_code = models.CharField(max_length=32, blank=True, default="")
    study_date = models.CharField(max_length=8, blank=True, default="")
    arrived_at = models.DateTimeField(default=timezone.now)
    image_count = models.PositiveIntegerField(default=0)
    priors_count = models.PositiveIntegerField(default=0)
    assigned_group = models.ForeignKey(
        Group, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", help_text="Set by routing rules."
    )
    assigned_reader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reader_name = models.CharField(
        max_length=150, blank=True, default="", help_text="Who reads it as the list shows it: claimer, reader or group."
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_touched_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of the claimer's activity.")
    critical = models.BooleanField(default=False, help_text="The report flagged a critical result.")
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["priority", "arrived_at", "id"]
        indexes = [
            models.Index(fields=["priority", "arrived_at", "id"], name="wl_default_order"),
            models.Index(fields=["status", "priority", "arrived_at", "id"], name="wl_status_order"),
            models.Index(fields=["patient_name_search", "id"], name="wl_patient_name"),
            models.Index(fields=["patient_id", "id"], name="wl_patient_id"),
            models.Index(fields=["study_date", "id"], name="wl_study_date"),
            models.Index(fields=["arrived_at", "id"], name="wl_arrived"),
            models.Index(fields=["modality", "id"], name="wl_modality"),
            models.Index(fields=["site", "id"], name="wl_site"),
            models.Index(fields=["claimed_by", "status"], name="wl_claimed"),
            models.Index(fields=["assigned_group", "id"], name="wl_group"),
        ]

    def __str__(self) -> str:
        return f"{self.study_instance_uid} ({self.get_status_display()})"

    @property
    def is_stat(self) -> bool:
        return self.priority == Priority.STAT

    @property
    def claim_is_stale(self) -> bool:
        """Claimed, but idle longer than ``PACS_WORKLIST_CLAIM_IDLE_SECONDS``: another reader may take it."""
        idle = timedelta(seconds=settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS)
        touched = self.claim_touched_at
        return self.status == Status.IN_PROGRESS and touched is not None and touched < timezone.now() - idle


class RoutingRule(models.Model):
    """Arriving studies matching every non-empty condition go to ``group``; the lowest ``order`` wins."""

    order = models.PositiveIntegerField(default=100, help_text="Rules are tried from the lowest order up.")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, help_text="Empty: any site.")
    modality = models.CharField(max_length=16, blank=True, default="", help_text="e.g. CT; empty: any modality.")
    body_part = models.CharField(
        max_length=64, blank=True, default="", help_text="(0018,0015) Body Part Examined, e.g. CHEST; empty: any."
    )
    group = models.ForeignKey(Group, on_delete=models.CASCADE, help_text="The reader group the study is assigned to.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        conditions = [c for c in (self.site and self.site.code, self.modality, self.body_part) if c]
        return f"{' + '.join(conditions) or 'everything'} → {self.group}"

    def matches(self, site_id: int | None, modalities: str, body_part: str) -> bool:
        if self.site_id is not None and self.site_id != site_id:
            return False
        if self.modality and self.modality.upper() not in modalities.upper().split("\\"):
            return False
        return not self.body_part or self.body_part.strip().upper() == body_part.strip().upper()


class SavedWorklist(models.Model):
    """A named set of worklist filters; visible to its owner and, when set, to a group's members."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_worklists")
    name = models.CharField(max_length=100)
    filters = models.JSONField(default=dict)
    shared_with = models.ForeignKey(
        Group, on_delete=models.SET_NULL, null=True, blank=True, help_text="Members of this group may use it too."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="unique_saved_worklist_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.owner})"

    @classmethod
    def usable_by(cls, user: Any) -> models.QuerySet[SavedWorklist]:
        return cls.objects.filter(models.Q(owner=user) | models.Q(shared_with__in=user.groups.all())).distinct()
