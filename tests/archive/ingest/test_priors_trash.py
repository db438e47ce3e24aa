"""The priors restored ahead of need are never studies, or series, in the trash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.priors import restore_priors
from archive.ingest.trash import trash_series, trash_study
from archive.models import Instance, Restore, Series, Study
from tests.archive.nearline import declare_tiers, move_to
from tests.conftest import stow

pytestmark = pytest.mark.django_db


def test_a_study_or_a_series_in_the_trash_is_no_prior_and_is_not_restored(
    upload_client: Client, settings: Any, tmp_path: Path
) -> None:
    declare_tiers(settings, tmp_path / "tiers")
    patient = {"patient_id": "PAT-PT", "patient_name": "PRIOR^TRASH"}
    old = StudySpec(study_date="20200101", **patient)
    older = StudySpec(study_date="20190101", **patient)
    assert stow(upload_client, make_series(old, "CT", count=1) + make_series(old, "CT", count=1)).status_code == 200
    assert stow(upload_client, make_series(older, "CT", count=1)).status_code == 200
    move_to(Instance.objects.all(), "vault")
    trash_study(Study.objects.get(study_instance_uid=older.study_uid), actor="test")
    trash_series(Series.objects.filter(study__study_instance_uid=old.study_uid).first(), actor="test")  # type: ignore[arg-type]

    settings.PACS_PRIORS_COUNT = 3
    settings.PACS_PRIORS_MATCH = "modality"
    new = StudySpec(study_date="20240101", **patient)
    assert stow(upload_client, make_series(new, "CT", count=1)).status_code == 200
    restore_priors(Study.objects.get(study_instance_uid=new.study_uid).pk)
    restored = Restore.objects.values_list(
        "instance__series__study__study_instance_uid", "instance__series__study__trashed_at"
    )
    assert list(restored) == [(old.study_uid, None)]  # the live series of the old study only
