"""The launch request and response bodies: strict validation of everything an EHR sends.

Strings are checked against the DICOM value representation they will be
matched with (Patient ID and its issuer: LO, 64 characters, no backslash;
accession number: SH, 16; Study Instance UID: UI) or against a plain limit,
and none may hold control characters. Unknown members are refused rather than
ignored, so a misspelt field is a 400 and not a launch that opens less than
the EHR meant.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from rest_framework import serializers

from archive.dicom.uid import is_valid_uid

MAX_STUDIES = 20
CLINICIAN_ID = re.compile(r"[A-Za-z0-9._:@/+|-]{1,64}")


def _no_controls(value: str) -> str:
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in value):
        raise serializers.ValidationError("Control and unassigned characters are not allowed.")
    return value


def _dicom_string(value: str) -> str:
    _no_controls(value)
    if "\\" in value:
        raise serializers.ValidationError("A backslash is not allowed (it separates DICOM values).")
    return value


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses members it does not know."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k)[:40] for k in data if k not in self.fields)
            if unknown:
                raise serializers.ValidationError({k: ["Unknown field."] for k in unknown})
        return super().to_internal_value(data)


class ClinicianSerializer(StrictSerializer):
    id = serializers.CharField(max_length=64, help_text="The EHR's identifier of the clinician (stable).")
    name = serializers.CharField(max_length=200, validators=[_no_controls])
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True, default="")
    role = serializers.CharField(max_length=64, required=False, allow_blank=True, default="", validators=[_no_controls])

    def validate_id(self, value: str) -> str:
        if not CLINICIAN_ID.fullmatch(value):
            raise serializers.ValidationError("Use letters, digits and . _ : @ / + | - only.")
        return value


class PatientSerializer(StrictSerializer):
    id = serializers.CharField(max_length=64, validators=[_dicom_string], help_text="(0010,0020) Patient ID.")
    issuer = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        validators=[_dicom_string],
        help_text="(0010,0021) Issuer of Patient ID, exactly as in the images (empty if they carry none).",
    )


class StudySerializer(StrictSerializer):
    study_instance_uid = serializers.CharField(max_length=64, required=False)
    accession_number = serializers.CharField(max_length=16, required=False, validators=[_dicom_string])

    def validate_study_instance_uid(self, value: str) -> str:
        if not is_valid_uid(value):
            raise serializers.ValidationError("Not a valid DICOM UID.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if len(attrs) != 1:
            raise serializers.ValidationError("Give exactly one of study_instance_uid and accession_number.")
        return attrs


class LaunchRequestSerializer(StrictSerializer):
    clinician = ClinicianSerializer()
    patient = PatientSerializer()
    studies = serializers.ListField(child=StudySerializer(), min_length=1, max_length=MAX_STUDIES)
    return_url = serializers.URLField(
        max_length=2000,
        required=False,
        allow_blank=True,
        default="",
        help_text="Where the clinician may go back to: its origin must be one of the integration's return origins.",
    )
    client_assertion_type = serializers.CharField(
        required=False, write_only=True, help_text="RFC 7523: urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    client_assertion = serializers.CharField(required=False, write_only=True, help_text="RFC 7523 signed JWT.")

    def validate_return_url(self, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        origins = self.context.get("return_origins", [])
        if f"{parts.scheme}://{parts.netloc}".lower() not in [o.lower() for o in origins]:
            raise serializers.ValidationError("Its origin is not one of this integration's return origins.")
        return value


class LaunchStudySerializer(serializers.Serializer[Any]):
    study_instance_uid = serializers.CharField(required=False)
    accession_number = serializers.CharField(required=False)
    available = serializers.BooleanField(help_text="Whether its images are in the archive yet.")


class LaunchResponseSerializer(serializers.Serializer[Any]):
    launch_url = serializers.CharField(help_text="Open it once in the clinician's browser; the token is its fragment.")
    expires_at = serializers.DateTimeField()
    expires_in = serializers.IntegerField(help_text="Seconds left to open it.")
    studies = LaunchStudySerializer(many=True)


class ErrorSerializer(serializers.Serializer[Any]):
    detail = serializers.CharField()
