"""The reports' own tables.

* :class:`ReportTemplate`: starting texts per modality and body part, managed in the admin.
* :class:`Report`: one per study, the text being edited (its sections), its ``version`` (bumped by every
  save: a save names the version it edited, so two editors never overwrite each other silently) and the
  status of its latest signature.
* :class:`ReportVersion`: every signed version (preliminary, final, amended), kept for ever with the text
  as signed, the signer and the SOP Instance UIDs of its DICOM copies (SR and Encapsulated PDF).
* :class:`CriticalResult`: a finding flagged as critical and how it was communicated.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from archive.models import Study

#: The sections of a report, in order: (field name, label).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("indication", "Indication"),
    ("technique", "Technique"),
    ("comparison", "Comparison"),
    ("findings", "Findings"),
    ("impression", "Impression"),
)
SECTION_NAMES = tuple(name for name, _ in SECTIONS)
#: The longest text a section may hold (characters).
MAX_SECTION_LENGTH = 20_000


class ReportStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PRELIMINARY = "preliminary", "Preliminary"
    FINAL = "final", "Final"
    AMENDED = "amended", "Amended"


#: Statuses a referring clinician may read.
RELEASED = (ReportStatus.FINAL, ReportStatus.AMENDED)


class ReportTemplate(models.Model):
    """Starting text for new reports of a modality and body part (empty: any)."""

    name = models.CharField(max_length=100)
    modality = models.CharField(max_length=16, blank=True, default="", help_text="e.g. CT; empty: any modality.")
    body_part = models.CharField(max_length=64, blank=True, default="", help_text="e.g. CHEST; empty: any.")
    indication = models.TextField(blank=True, default="")
    technique = models.TextField(blank=True, default="")
    comparison = models.TextField(blank=True, default="")
    findings = models.TextField(blank=True, default="")
    impression = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["modality", "body_part", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.modality or 'any'} / {self.body_part or 'any'})"

    @classmethod
    def best_for(cls, modalities: str, body_part: str) -> ReportTemplate | None:
        """The most specific enabled template matching: modality and body part, then either, then neither."""
        wanted = {m.strip().upper() for m in modalities.split("\\") if m.strip()}
        part = body_part.strip().upper()
        best: tuple[int, ReportTemplate] | None = None
        for template in cls.objects.filter(enabled=True).order_by("id"):
            if template.modality and template.modality.upper() not in wanted:
                continue
            if template.body_part and template.body_part.upper() != part:
                continue
            score = (2 if template.modality else 0) + (1 if template.body_part else 0)
            if best is None or score > best[0]:
                best = (score, template)
        return best[1] if best else None


class Report(models.Model):
    """The report of one study: the text being edited and where its signatures stand."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="report")
    study_instance_uid = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=ReportStatus.choices, default=ReportStatus.DRAFT)
    version = models.PositiveIntegerField(default=1, help_text="Bumped by every save; a save names the one it edited.")
    indication = models.TextField(blank=True, default="")
    technique = models.TextField(blank=True, default="")
    comparison = models.TextField(blank=True, default="")
    findings = models.TextField(blank=True, default="")
    impression = models.TextField(blank=True, default="")
    critical = models.BooleanField(default=False, help_text="A finding was flagged as a critical result.")
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)
    sr_series_instance_uid = models.CharField(max_length=64, blank=True, default="")
    pdf_series_instance_uid = models.CharField(max_length=64, blank=True, default="")
    signing_since = models.DateTimeField(
        null=True, blank=True, help_text="A signature is being stored since then: no save or other signature meanwhile."
    )

    def __str__(self) -> str:
        return f"Report of {self.study_instance_uid} ({self.get_status_display()}, v{self.version})"

    def sections(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SECTION_NAMES}

    @property
    def locked(self) -> bool:
        """Final and amended reports are never edited again, only amended."""
        return self.status in RELEASED


class ReportVersion(models.Model):
    """One signed version of a report, as signed; never changed afterwards."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=ReportStatus.choices)
    indication = models.TextField(blank=True, default="")
    technique = models.TextField(blank=True, default="")
    comparison = models.TextField(blank=True, default="")
    findings = models.TextField(blank=True, default="")
    impression = models.TextField(blank=True, default="")
    addendum = models.TextField(blank=True, default="", help_text="The addendum this version added (amended).")
    predecessor = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    signer_name = models.CharField(max_length=150)
    signed_at = models.DateTimeField()
    sr_sop_instance_uid = models.CharField(max_length=64)
    pdf_sop_instance_uid = models.CharField(max_length=64)

    class Meta:
        ordering = ["report", "number"]
        constraints = [models.UniqueConstraint(fields=["report", "number"], name="unique_report_version_number")]

    def __str__(self) -> str:
        return f"v{self.number} {self.get_status_display()} by {self.signer_name}"

    def sections(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SECTION_NAMES}

    def addenda(self) -> list[ReportVersion]:
        """The amended versions up to and including this one, oldest first (their addenda in order)."""
        chain: list[ReportVersion] = []
        current: ReportVersion | None = self
        while current is not None and current.status == ReportStatus.AMENDED:
            chain.append(current)
            current = current.predecessor
        return list(reversed(chain))


class CriticalResult(models.Model):
    """A finding flagged as critical, and to whom, when and how it was communicated."""

    class Method(models.TextChoices):
        PHONE = "phone", "Phone"
        IN_PERSON = "in_person", "In person"
        SECURE_MESSAGE = "secure_message", "Secure message"
        PAGER = "pager", "Pager"

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="critical_results")
    finding = models.CharField(max_length=1000)
    communicated_to = models.CharField(max_length=200)
    method = models.CharField(max_length=16, choices=Method.choices)
    communicated_at = models.DateTimeField()
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    flagged_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["report", "flagged_at", "id"]

    def __str__(self) -> str:
        return f"Critical result to {self.communicated_to} by {self.get_method_display()}"
