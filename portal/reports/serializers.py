"""The JSON shapes of the reports API: a report with its signed versions, the bodies that change it, templates."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.reports.models import SECTION_NAMES, ReportStatus, ReportTemplate

#: The largest version number a client may name (a database integer; anything larger names nothing).
MAX_VERSION = 2**31 - 1


class TextField(serializers.CharField):
    """Text that must arrive as a JSON string (a number or an object is refused, not turned into text)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class SectionsSerializer(serializers.Serializer[Any]):
    """A report's text, one member per section (plain text: never markup)."""

    indication = TextField(required=False, allow_blank=True, trim_whitespace=False)
    technique = TextField(required=False, allow_blank=True, trim_whitespace=False)
    comparison = TextField(required=False, allow_blank=True, trim_whitespace=False)
    findings = TextField(required=False, allow_blank=True, trim_whitespace=False)
    impression = TextField(required=False, allow_blank=True, trim_whitespace=False)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k)[:40] for k in data if k not in SECTION_NAMES)
            if unknown:
                raise serializers.ValidationError(
                    f"Unknown sections: {', '.join(unknown[:10])}; a report has {', '.join(SECTION_NAMES)}."
                )
        return super().to_internal_value(data)


class SignedVersionSerializer(serializers.Serializer[Any]):
    """One signed version, kept for ever, with the SOP Instance UIDs of its DICOM copies (final and amended)."""

    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ReportStatus.choices)
    signer = serializers.CharField()
    signed_at = serializers.DateTimeField()
    sections = SectionsSerializer()
    addendum = serializers.CharField(allow_blank=True, help_text="The addendum this version added (amended).")
    amends = serializers.IntegerField(allow_null=True, help_text="The number of the version it amends.")
    sr_sop_instance_uid = serializers.CharField(allow_blank=True)
    pdf_sop_instance_uid = serializers.CharField(allow_blank=True)


class ReportSerializer(serializers.Serializer[Any]):
    """A study's report: for readers the working text and every signed version; for others the final text only."""

    study_instance_uid = serializers.CharField()
    status = serializers.ChoiceField(choices=ReportStatus.choices)
    version = serializers.IntegerField(
        allow_null=True, help_text="The text's version: name it when you save or sign (null for non-readers)."
    )
    sections = SectionsSerializer()
    critical = serializers.BooleanField()
    updated_at = serializers.DateTimeField()
    updated_by = serializers.CharField(allow_null=True)
    versions = SignedVersionSerializer(many=True)


class DraftSerializer(serializers.Serializer[Any]):
    """A save of the draft over the version it edited (PUT: every section; PATCH: those that change)."""

    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)
    sections = SectionsSerializer()


class SignSerializer(serializers.Serializer[Any]):
    """Sign the current text (of ``version``) preliminary or final."""

    status = serializers.ChoiceField(choices=[ReportStatus.PRELIMINARY, ReportStatus.FINAL])
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)


class AddendumSerializer(serializers.Serializer[Any]):
    """An addendum to a final report (a new, amended version)."""

    text = TextField(trim_whitespace=False)
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION)


class ConflictSerializer(serializers.Serializer[Any]):
    """The report changed since the version named: its current version and text, and the text that was sent."""

    detail = serializers.CharField()
    version = serializers.IntegerField()
    theirs = SectionsSerializer()
    yours = SectionsSerializer()


class SignRefusedSerializer(serializers.Serializer[Any]):
    """Why a signature was refused, as a code a client can act on, and where a person verifies again."""

    detail = serializers.CharField()
    code = serializers.ChoiceField(choices=["mfa_required", "token_may_not_sign_final", "refused"], required=False)
    verify_url = serializers.CharField(required=False)


class TemplateSerializer(serializers.ModelSerializer[ReportTemplate]):
    """A report template: the starting text of new reports of a modality and body part (empty: any)."""

    sections = serializers.SerializerMethodField()

    class Meta:
        model = ReportTemplate
        fields = ["id", "name", "modality", "body_part", "sections"]
        read_only_fields = fields

    @extend_schema_field(SectionsSerializer)
    def get_sections(self, template: ReportTemplate) -> dict[str, str]:
        return {name: getattr(template, name) for name in SECTION_NAMES}
