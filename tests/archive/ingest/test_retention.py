"""Retention policies never let a study go early; a legal hold blocks deletion on every path."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest import retention
from archive.ingest.delete import remove_series, remove_study
from archive.ingest.retention import DeletionRefused, add_years, deletion_refusal, keep_until
from archive.ingest.trash import purge, purge_study, trash_study
from archive.models import (
    Instance,
    LegalHold,
    PatientDeath,
    RetentionPolicy,
    Series,
    Site,
    Study,
    TrashEntry,
)
from audit.models import AuditEvent
from tests.conftest import stow


def at(day: str) -> datetime:
    return timezone.make_aware(datetime.fromisoformat(day + "T12:00:00"))


@pytest.fixture
def ct(admin_client_token: Client, general_site: Site) -> Study:
    spec = StudySpec(patient_id="RET-1", birth_date="19500101", study_date="20200115")
    assert (
        stow(admin_client_token, make_series(spec, "CT", count=2) + make_series(spec, "MR", count=1)).status_code == 200
    )
    study = Study.objects.select_related("patient").get()
    Study.objects.filter(pk=study.pk).update(created_at=at("2020-02-01"))
    study.refresh_from_db()
    assert study.site == general_site
    return study


# ---------------------------------------------------------------- retention, with a controllable clock


@pytest.mark.django_db
@pytest.mark.parametrize(
    "basis,years,first_day",
    [
        ("study_date", 10, date(2030, 1, 15)),
        ("receipt", 10, date(2030, 2, 1)),
        ("patient_life", 10, date(2080, 1, 1)),  # no death recorded: born 1950 + 120 years + 10
    ],
)
def test_retention_refuses_every_day_before_the_first_allowed_day_and_allows_it(
    ct: Study, basis: str, years: int, first_day: date
) -> None:
    RetentionPolicy.objects.create(name="statute", basis=basis, years=years)
    day_before = timezone.make_aware(datetime.combine(first_day - timedelta(days=1), datetime.max.time()))
    refusal = deletion_refusal(ct, day_before)
    assert refusal is not None and refusal.why == "retention" and refusal.until == first_day
    assert f"until {first_day:%Y-%m-%d}" in refusal.message
    assert deletion_refusal(ct, timezone.make_aware(datetime.combine(first_day, datetime.min.time()))) is None


@pytest.mark.django_db
def test_the_longest_applicable_policy_wins_and_others_sites_or_modalities_do_not_apply(ct: Study) -> None:
    other = Site.objects.create(code="other", name="Other")
    RetentionPolicy.objects.create(name="short", basis="study_date", years=5)
    RetentionPolicy.objects.create(name="mr", basis="study_date", years=12, modality="MR")
    RetentionPolicy.objects.create(name="mammo", basis="study_date", years=30, modality="MG")
    RetentionPolicy.objects.create(name="elsewhere", basis="study_date", years=50, site=other)
    RetentionPolicy.objects.create(name="off", basis="study_date", years=90, enabled=False)
    until, policy = keep_until(ct) or (None, None)
    assert (until, policy.name if policy else None) == (date(2032, 1, 15), "mr")


@pytest.mark.django_db
def test_unknown_dates_never_shorten_retention(ct: Study) -> None:
    RetentionPolicy.objects.create(name="life", basis="patient_life", years=10)
    ct.patient.patient_birth_date = ""
    assert deletion_refusal(ct, at("2999-01-01")) is not None  # neither birth nor death known: kept indefinitely
    assert "indefinitely" in deletion_refusal(ct, at("2999-01-01")).message  # type: ignore[union-attr]
    PatientDeath.objects.create(patient_id="RET-1", death_date=date(2021, 6, 1), source="EHR")
    assert keep_until(ct)[0] == date(2031, 6, 1)  # type: ignore[index]
    RetentionPolicy.objects.all().delete()
    RetentionPolicy.objects.create(name="dated", basis="study_date", years=1)
    ct.study_date = "2020XX15"  # unreadable: counts from receipt (later), never from nothing
    assert keep_until(ct)[0] == date(2021, 2, 1)  # type: ignore[index]


def test_a_leap_day_plus_years_is_never_earlier() -> None:
    assert add_years(date(2024, 2, 29), 1) == date(2025, 3, 1)
    assert add_years(date(9000, 1, 1), 2000) == date.max


@pytest.mark.django_db
def test_the_clock_decides_for_every_path(
    ct: Study, admin_client_token: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    RetentionPolicy.objects.create(name="ten", basis="study_date", years=10)
    monkeypatch.setattr(retention, "clock", lambda: at("2030-01-14"))
    response = admin_client_token.delete(f"/dicom-web/studies/{ct.study_instance_uid}")
    assert response.status_code == 409
    assert response.json() == {
        "detail": 'Retention policy "ten" keeps this study until 2030-01-15.',
        "reason": "retention",
        "retainUntil": "2030-01-15",
    }
    monkeypatch.setattr(retention, "clock", lambda: at("2030-01-15"))
    assert admin_client_token.delete(f"/dicom-web/studies/{ct.study_instance_uid}").status_code == 204


@pytest.mark.django_db
def test_non_production_studies_are_under_no_retention_policy(admin_client_token: Client) -> None:
    spec = StudySpec(patient_id="DRILL-9")
    assert stow(admin_client_token, make_series(spec, "CT", count=1)).status_code == 200
    RetentionPolicy.objects.create(name="forever", basis="receipt", years=200)
    assert deletion_refusal(Study.objects.select_related("patient").get()) is None


# ---------------------------------------------------------------- a legal hold blocks every path


@pytest.fixture(params=["patient", "study"])
def held(request: pytest.FixtureRequest, ct: Study) -> Study:
    if request.param == "patient":
        LegalHold.objects.create(patient_id="RET-1", reason="litigation", placed_by="counsel")
    else:
        LegalHold.objects.create(study_instance_uid=ct.study_instance_uid, reason="litigation", placed_by="counsel")
    return ct


def assert_untouched(isolated_storage: Any) -> None:
    assert Study.objects.get().trashed_at is None and not TrashEntry.objects.exists()
    assert Instance.objects.count() == 3 and len(list(isolated_storage.rglob("*.dcm"))) == 3


@pytest.mark.django_db
def test_a_hold_refuses_dicomweb_delete_of_the_study_and_of_a_series_with_409(
    held: Study, admin_client_token: Client, isolated_storage: Any
) -> None:
    base = f"/dicom-web/studies/{held.study_instance_uid}"
    response = admin_client_token.delete(base)
    assert response.status_code == 409 and response.json()["reason"] == "legal-hold"
    assert "legal hold" in response.json()["detail"] and "retainUntil" not in response.json()
    series = Series.objects.filter(modality="MR").get().series_instance_uid
    assert admin_client_token.delete(f"{base}/series/{series}").status_code == 409
    assert_untouched(isolated_storage)
    refusals = AuditEvent.objects.filter(action="delete", outcome="denied")
    assert [e.detail["refused"] for e in refusals] == ["legal-hold", "legal-hold"]


@pytest.mark.django_db
def test_a_hold_refuses_the_command_the_service_functions_and_the_purge(held: Study, isolated_storage: Any) -> None:
    with pytest.raises(CommandError, match="not deleted: A legal hold"):
        call_command("trash", "delete", held.study_instance_uid)
    for attempt in (
        lambda: trash_study(held, actor="t"),
        lambda: remove_study(held),
        lambda: remove_series(Series.objects.first()),  # type: ignore[arg-type]
    ):
        with pytest.raises(DeletionRefused):
            attempt()
    assert_untouched(isolated_storage)
    # in the trash before the hold: the purge, by command, function or task, keeps it
    LegalHold.objects.update(released_at=timezone.now(), release_reason="test")
    trash_study(held, actor="t")
    LegalHold.objects.create(patient_id="RET-1", reason="again", placed_by="counsel")
    with pytest.raises(DeletionRefused):
        purge_study(held.study_instance_uid)
    assert purge(older_than=timedelta(0)).kept[0][0] == held.study_instance_uid
    assert Instance.objects.count() == 3 and len(list(isolated_storage.rglob("*.dcm"))) == 3


@pytest.mark.django_db
def test_a_released_hold_no_longer_blocks(held: Study, admin_client_token: Client) -> None:
    LegalHold.objects.update(released_at=timezone.now(), released_by="admin", release_reason="settled")
    assert admin_client_token.delete(f"/dicom-web/studies/{held.study_instance_uid}").status_code == 204


@pytest.mark.django_db
def test_a_hold_on_another_patient_or_issuer_does_not_block(ct: Study) -> None:
    LegalHold.objects.create(patient_id="RET-1", issuer_of_patient_id="OTHER", reason="x")
    LegalHold.objects.create(study_instance_uid="1.2.3.4", reason="x")
    assert deletion_refusal(ct) is None


@pytest.mark.django_db
def test_a_hold_without_an_issuer_holds_the_patient_id_under_every_issuer(ct: Study) -> None:
    from archive.models import Patient

    Patient.objects.filter(pk=ct.patient_id).update(issuer_of_patient_id="HOSP-A")
    ct.refresh_from_db()
    ct.patient.refresh_from_db()
    LegalHold.objects.create(patient_id="RET-1", reason="x")
    refusal = deletion_refusal(ct)
    assert refusal is not None and refusal.why == "legal-hold"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    ["/dicom-web/studies/1.2.x", "/dicom-web/studies/1.2.3/series/abc", "/dicom-web/studies/" + "1." * 40 + "1"],
)
def test_hostile_uids_in_a_delete_are_400(admin_client_token: Client, path: str) -> None:
    assert admin_client_token.delete(path).status_code == 400


@pytest.mark.django_db
def test_purge_output_reports_what_was_kept_and_why(held: Study) -> None:
    LegalHold.objects.update(released_at=timezone.now(), release_reason="test")
    trash_study(held, actor="t")
    LegalHold.objects.create(study_instance_uid=held.study_instance_uid, reason="subpoena", placed_by="counsel")
    out = io.StringIO()
    call_command("trash", "purge", "--older-than", "0", stdout=out)
    assert f"kept {held.study_instance_uid}: A legal hold on the study" in out.getvalue()
    assert "0 studies purged" in out.getvalue() and "1 kept" in out.getvalue()
