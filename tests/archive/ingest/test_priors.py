"""Ahead of need: a new study of a patient brings that patient's relevant archived priors back (moto GLACIER)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.restore import advance_restores
from archive.models import Instance, Restore, RestoreState
from audit.models import AuditEvent
from tests.archive.ingest.test_restore import archived_study, glacier  # noqa: F401 - the GLACIER tier fixture
from tests.archive.storage.test_s3_restore import moto_server  # noqa: F401
from tests.conftest import stow

pytestmark = pytest.mark.django_db


def restored_studies() -> set[str]:
    return set(Restore.objects.values_list("instance__series__study__study_instance_uid", flat=True))


def test_a_new_study_restores_the_most_recent_relevant_priors_of_the_patient(
    glacier: dict[str, Any],  # noqa: F811
    upload_client: Client,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    patient = {"patient_id": "PAT-P", "patient_name": "PRIOR^PAT"}
    ct_2023 = archived_study(upload_client, StudySpec(study_date="20230101", **patient))["spec"]
    ct_2022 = archived_study(upload_client, StudySpec(study_date="20220101", **patient))["spec"]
    ct_2021 = archived_study(upload_client, StudySpec(study_date="20210101", **patient))["spec"]
    mr_2023 = archived_study(upload_client, StudySpec(study_date="20230601", **patient), modality="MR")["spec"]
    other = archived_study(upload_client, StudySpec(study_date="20230101", patient_id="PAT-OTHER"))["spec"]
    assert not Restore.objects.exists()  # the priors of a study moved away are not asked for by the move

    settings.PACS_PRIORS_COUNT = 2
    settings.PACS_PRIORS_MATCH = "modality"
    new = StudySpec(study_date="20240115", **patient)
    with django_capture_on_commit_callbacks(execute=True):
        assert stow(upload_client, make_series(new, "CT", count=2)).status_code == 200
    # The two most recent CT priors; not the older CT, not the MR, not another patient's study.
    assert restored_studies() == {ct_2023.study_uid, ct_2022.study_uid}
    assert {ct_2021.study_uid, mr_2023.study_uid, other.study_uid}.isdisjoint(restored_studies())
    assert set(Restore.objects.values_list("reason", flat=True)) == {"prior"}
    event = AuditEvent.objects.get(action="restore")
    assert event.actor == "priors" and event.study_instance_uid == new.study_uid

    # More of the new study arriving (one C-STORE at a time, say) asks nothing again.
    with django_capture_on_commit_callbacks(execute=True):
        assert stow(upload_client, make_series(new, "CT", count=1)).status_code == 200
    assert Restore.objects.count() == 6

    for _ in range(10):
        if not advance_restores().active:
            break
    assert set(Restore.objects.values_list("state", flat=True)) == {RestoreState.DONE}
    online = Instance.objects.filter(series__study__study_instance_uid__in=[ct_2023.study_uid, ct_2022.study_uid])
    assert set(online.values_list("tier", "availability")) == {("hot", "ONLINE")}
    archived = Instance.objects.filter(series__study__study_instance_uid=ct_2021.study_uid)
    assert set(archived.values_list("availability", flat=True)) == {"NEARLINE"}


def test_priors_match_on_body_part_too_and_can_be_switched_off(
    glacier: dict[str, Any],  # noqa: F811
    upload_client: Client,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    patient = {"patient_id": "PAT-B", "patient_name": "BODY^PART"}
    mr = archived_study(upload_client, StudySpec(study_date="20230101", **patient), modality="MR")["spec"]
    from archive.models import Series

    Series.objects.filter(study__study_instance_uid=mr.study_uid).update(body_part_examined="CHEST")
    settings.PACS_PRIORS_MATCH = "modality"
    settings.PACS_PRIORS_COUNT = 3
    first = StudySpec(study_date="20240101", **patient)
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            stow(upload_client, make_series(first, "CT", count=1, extra={"BodyPartExamined": "CHEST"})).status_code
            == 200
        )
    assert not Restore.objects.exists()  # an MR is no prior of a CT by modality alone
    settings.PACS_PRIORS_COUNT = 0
    settings.PACS_PRIORS_MATCH = "modality,body_part"
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            stow(upload_client, make_series(first, "CT", count=1, extra={"BodyPartExamined": "CHEST"})).status_code
            == 200
        )
    assert not Restore.objects.exists()  # switched off
    settings.PACS_PRIORS_COUNT = 3
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            stow(upload_client, make_series(first, "CT", count=1, extra={"BodyPartExamined": "CHEST"})).status_code
            == 200
        )
    assert restored_studies() == {mr.study_uid}  # same body part
