"""housekeeping runs every configured command by name, goes on past a failing one, and says so."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import Study
from tests.conftest import stow

pytestmark = pytest.mark.django_db(transaction=True)  # the worklist row follows the commit


def test_one_round_expires_idle_claims_and_a_failing_command_does_not_stop_the_others(
    settings: Any, upload_client: Any, colleague: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from portal.worklist.models import WorklistItem
    from portal.worklist.statuses import Status

    assert stow(upload_client, make_series(StudySpec(patient_id="HK-1"), "CT", count=1)).status_code == 200
    item = WorklistItem.objects.get(study=Study.objects.get())
    stale = timezone.now() - timedelta(seconds=settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS + 60)
    WorklistItem.objects.filter(pk=item.pk).update(
        status=Status.IN_PROGRESS, claimed_by=colleague, claimed_at=stale, claim_touched_at=stale
    )
    settings.PACS_HOUSEKEEPING = ["no_such_command", "worklist_expire"]
    with pytest.raises(SystemExit) as stopped:
        call_command("housekeeping", "--once", stdout=io.StringIO(), stderr=io.StringIO())
    assert stopped.value.code == 1  # one command failed: cron sees it
    assert "housekeeping: no_such_command failed" in caplog.text
    item.refresh_from_db()
    assert item.status == Status.READY and item.claimed_by is None
