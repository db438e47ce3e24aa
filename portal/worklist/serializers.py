"""The JSON shapes of the worklist API: a row, a page of rows, a claim refused."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Priority, Status

PRIORITY_NAMES = {Priority.STAT: "stat", Priority.URGENT: "urgent", Priority.ROUTINE: "routine"}


class WorklistItemSerializer(serializers.ModelSerializer[WorklistItem]):
    """One study on the worklist, as the page's row shows it (plain data: names are never markup)."""

    id = serializers.IntegerField(read_only=True, help_text="The row's id (what a cursor names).")
    priority = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=Status.choices, read_only=True)
    site = serializers.CharField(source="site_code", read_only=True, help_text="The site's code.")
    images = serializers.IntegerField(read_only=True, help_text="Instances stored now.")
    reader = serializers.CharField(
        source="reader_name", read_only=True, help_text="Who reads it: the claimer, else the assigned reader or group."
    )
    claimed_by = serializers.SerializerMethodField()

    class Meta:
        model = WorklistItem
        fields = [
            "id",
            "study_instance_uid",
            "priority",
            "status",
            "patient_name",
            "patient_id",
            "patient_age",
            "patient_sex",
            "modality",
            "body_part",
            "description",
            "accession_number",
            "site",
            "study_date",
            "arrived_at",
            "images",
            "priors_count",
            "reader",
            "claimed_by",
            "claimed_at",
            "critical",
        ]
        read_only_fields = fields

    def get_priority(self, item: WorklistItem) -> str:
        """stat, urgent or routine."""
        return PRIORITY_NAMES.get(Priority(item.priority), "routine")

    def get_claimed_by(self, item: WorklistItem) -> str | None:
        """The user name of the reader holding the claim, or null."""
        return item.reader_name if item.status == Status.IN_PROGRESS and item.claimed_by_id else None


class WorklistPageSerializer(serializers.Serializer[Any]):
    """One page of rows; ``next`` is the URL of the next page (keyset paging), null on the last."""

    results = WorklistItemSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="Pass as ?cursor= for the next page.")
    next = serializers.CharField(allow_null=True, help_text="The next page's URL (GET), or null.")


class ClaimSerializer(serializers.Serializer[Any]):
    """A claim's options."""

    override = serializers.BooleanField(
        default=False, help_text="Administrators only: take the study from the reader holding it (audited)."
    )


class ClaimRefusedSerializer(serializers.Serializer[Any]):
    """Why a claim or release was refused, and who holds the study (empty when nobody)."""

    detail = serializers.CharField()
    holder = serializers.CharField(allow_blank=True)


class SearchSerializer(serializers.Serializer[Any]):
    """The filters of a worklist search sent in a POST body (free text never travels in a URL).

    It describes the body for the schema; the filters themselves are checked by the page's own
    :class:`~portal.worklist.listing.FilterForm`, so the API and the page accept exactly the same.
    """

    status = serializers.ListField(child=serializers.CharField(), required=False)
    modality = serializers.CharField(required=False, allow_blank=True)
    site = serializers.CharField(required=False, allow_blank=True)
    body_part = serializers.CharField(required=False, allow_blank=True)
    priority = serializers.ChoiceField(choices=list(PRIORITY_NAMES.values()), required=False, allow_blank=True)
    date_from = serializers.DateField(required=False, allow_null=True)
    date_to = serializers.DateField(required=False, allow_null=True)
    mine = serializers.BooleanField(required=False)
    unassigned = serializers.BooleanField(required=False)
    q = serializers.CharField(required=False, allow_blank=True, help_text="Free text: patient name or ID, accession.")
    sort = serializers.CharField(required=False, allow_blank=True)
    desc = serializers.BooleanField(required=False)
    cursor = serializers.CharField(required=False, allow_blank=True)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)
