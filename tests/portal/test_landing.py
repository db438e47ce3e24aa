"""Where each role lands after signing in, "My studies" for referring clinicians and the operations page."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from archive.models import Budget, Instance, Patient, Restore, Series, Site, Study, TierMove
from audit.models import AuditEvent
from audit.trail import record
from portal import landing
from portal.accounts.roles import Role
from portal.models import AccessGrant, UserProfile
from portal.reports.models import Report, ReportStatus, ReportVersion
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Priority, Status
from tests.conftest import role_user
from tests.portal.worklist.conftest import signed_in

pytestmark = pytest.mark.django_db

HOSTILE = "<img src=x onerror=alert(1)>^EVIL"


def make_study(
    pid: str, name: str = "DOE^JANE", date: str = "20260101", referring: str = "", site: Site | None = None
) -> Study:
    patient, _ = Patient.objects.get_or_create(patient_id=pid, defaults={"patient_name": name})
    return Study.objects.create(
        study_instance_uid=f"2.25.{uuid.uuid4().int}",
        patient=patient,
        site=site,
        study_date=date,
        study_time="120000",
        study_description=f"CT of {pid}",
        modalities_in_study="CT\\SR",
        referring_physician_name=referring,
        referring_physician_search=referring.upper(),
        number_of_instances=3,
    )


def sign_report(study: Study, *statuses: str) -> Report:
    report = Report.objects.create(study=study, study_instance_uid=study.study_instance_uid, status=statuses[-1])
    for number, status in enumerate(statuses, start=1):
        ReportVersion.objects.create(
            report=report,
            number=number,
            status=status,
            findings=f"{status} findings",
            signer_name="RAD^ROSE",
            signed_at=timezone.now(),
            sr_sop_instance_uid=f"2.25.{uuid.uuid4().int}",
            pdf_sop_instance_uid=f"2.25.{uuid.uuid4().int}",
        )
    return report


@pytest.fixture
def clinician(db: Any) -> User:
    """A referring clinician named WELBY^MARCUS in the studies they refer."""
    user = role_user("clinician", Role.REFERRING_CLINICIAN)
    UserProfile.objects.update_or_create(user=user, defaults={"dicom_person_name": "WELBY^MARCUS"})
    return user


@pytest.fixture
def clinician_studies(clinician: User, general_site: Site) -> dict[str, Study]:
    """Studies the clinician refers (final, amended, preliminary, draft), one granted, one of someone else."""
    studies = {
        "final": make_study("P-FINAL", date="20260105", referring="WELBY^MARCUS", site=general_site),
        "amended": make_study("P-AMENDED", name=HOSTILE, date="20260104", referring="WELBY^MARCUS"),
        "preliminary": make_study("P-PRELIM", date="20260103", referring="WELBY^MARCUS"),
        "draft": make_study("P-DRAFT", date="20260102", referring="WELBY^MARCUS"),
        "granted": make_study("P-GRANTED", date="20260101"),
        "other": make_study("P-OTHER", date="20260106", referring="KILDARE^JAMES", site=general_site),
    }
    sign_report(studies["final"], ReportStatus.FINAL)
    sign_report(studies["amended"], ReportStatus.FINAL, ReportStatus.AMENDED)
    sign_report(studies["preliminary"], ReportStatus.PRELIMINARY)
    Report.objects.create(study=studies["draft"], study_instance_uid=studies["draft"].study_instance_uid)
    sign_report(studies["other"], ReportStatus.FINAL)
    AccessGrant.objects.create(
        user=clinician, study=studies["granted"], reason="test", expires_at=timezone.now() + timedelta(hours=1)
    )
    return studies


def rows(response: Any) -> list[tuple[str, str]]:
    """(patient ID, report cell) of each row of the "My studies" table."""
    import re

    html = response.content.decode()
    ids = re.findall(r'<td class="col-patient_id">([^<]*)</td>', html)
    states = re.findall(r'<td class="col-report">([^<]*)</td>', html)
    return list(zip(ids, states, strict=True))


# --- where each role lands ---


@pytest.mark.parametrize(
    ("role", "marker"),
    [
        (Role.RADIOLOGIST, b'id="worklist"'),
        (Role.TECHNOLOGIST, b'id="qc-list"'),
        (Role.REFERRING_CLINICIAN, b'id="my-studies"'),
        (Role.ADMINISTRATOR, b'id="ops-worklist"'),
        (Role.AUDITOR, b'class="tiles"'),
    ],
)
def test_each_role_lands_where_its_work_is_and_home_shows_the_tiles(
    role: Role, marker: bytes, general_site: Site
) -> None:
    client = signed_in(role_user(f"user-{role.name.lower()}", role, general_site))
    landed = client.get("/")
    assert landed.status_code == 200 and marker in landed.content
    tiles = client.get("/?home")
    assert tiles.status_code == 200 and b'class="tiles"' in tiles.content


def test_a_superuser_lands_on_the_operations_page(admin_user: User) -> None:
    response = signed_in(admin_user).get("/")
    assert response.status_code == 200 and b'id="ops-worklist"' in response.content
    assert AuditEvent.objects.filter(action="operations_view", outcome="success", actor="admin").count() == 1
    tiles = signed_in(admin_user).get("/?home")
    assert b'id="link-operations" href="/operations/"' in tiles.content


# --- My studies ---


def test_a_clinician_sees_only_their_studies_newest_first_with_only_released_report_states(
    clinician: User, clinician_studies: dict[str, Study]
) -> None:
    response = signed_in(clinician).get("/")
    assert rows(response) == [
        ("P-FINAL", "Final"),
        ("P-AMENDED", "Amended"),
        ("P-PRELIM", "Not reported yet"),
        ("P-DRAFT", "Not reported yet"),
        ("P-GRANTED", "Not reported yet"),
    ]
    html = response.content.decode()
    assert "P-OTHER" not in html and "preliminary findings" not in html
    # the modalities of the images, as the worklist lists them: the report's SR is no modality of the study's images
    assert html.count('<td class="col-modality">CT</td>') == 5
    assert html.count('class="print-report"') == 2
    final = clinician_studies["final"].study_instance_uid
    assert f'href="/reports/studies/{final}/print"' in html
    assert f'href="/viewer/studies/{final}"' in html
    event = AuditEvent.objects.get(action="my_studies_view")
    assert event.actor == "clinician" and event.outcome == "success" and event.detail["rows"] == 5


def test_a_study_in_the_trash_leaves_my_studies(clinician: User, clinician_studies: dict[str, Study]) -> None:
    Study.objects.filter(pk=clinician_studies["final"].pk).update(trashed_at=timezone.now())
    assert [pid for pid, _ in rows(signed_in(clinician).get("/studies/"))] == [
        "P-AMENDED",
        "P-PRELIM",
        "P-DRAFT",
        "P-GRANTED",
    ]


def test_a_hostile_patient_name_is_shown_as_text(clinician: User, clinician_studies: dict[str, Study]) -> None:
    html = signed_in(clinician).get("/studies/").content.decode()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt; EVIL" in html


def test_an_outsider_sees_no_study(outsider: User, clinician_studies: dict[str, Study]) -> None:
    stranger = role_user("stranger", Role.REFERRING_CLINICIAN)
    assert rows(signed_in(stranger).get("/studies/")) == []
    assert b"No studies yet." in signed_in(stranger).get("/").content
    assert rows(signed_in(outsider).get("/studies/")) == []


def test_my_studies_pages_by_keyset_with_a_constant_number_of_queries(
    clinician: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(landing, "PAGE_SIZE", 3)
    for n in range(8):
        study = make_study(f"P-{n}", date=f"202601{n + 10:02d}", referring="WELBY^MARCUS")
        sign_report(study, ReportStatus.FINAL)
    client = signed_in(clinician)
    seen: list[str] = []
    counts: list[int] = []
    url = "/studies/"
    while url:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200
        counts.append(len(queries))
        page = rows(response)
        seen += [pid for pid, _ in page]
        older = response.context["page"].more
        url = f"/studies/?before={older}" if older else ""
    assert seen == [f"P-{n}" for n in reversed(range(8))]
    assert len(counts) == 3 and counts[1] == counts[2] == counts[0] + 1  # the paging token's row, once


#: Superscript digits pass str.isdigit() but not int().
@pytest.mark.parametrize("token", ["abc", "-1", "9" * 30, "999999", "\u00b2", "1\u00b9"])
def test_a_bad_or_foreign_paging_token_is_a_400(
    clinician: User, clinician_studies: dict[str, Study], token: str
) -> None:
    response = signed_in(clinician).get("/studies/", {"before": token})
    assert response.status_code == 400
    assert AuditEvent.objects.filter(action="my_studies_view", outcome="failure").count() == 1


def test_a_token_naming_a_study_the_clinician_may_not_see_is_a_400(
    clinician: User, clinician_studies: dict[str, Study]
) -> None:
    other = clinician_studies["other"].pk
    assert signed_in(clinician).get("/studies/", {"before": str(other)}).status_code == 400


# --- the operations page ---


def test_a_non_administrator_gets_403_on_the_operations_page(clinician: User, general_site: Site) -> None:
    for user in (clinician, role_user("rad", Role.RADIOLOGIST, general_site)):
        response = signed_in(user).get("/operations/")
        assert response.status_code == 403
    assert AuditEvent.objects.filter(action="operations_view", outcome="denied").count() == 2
    assert Client().get("/operations/").status_code == 302  # signed out: to the sign-in page


def test_the_operations_page_counts_what_was_seeded(admin_user: User, settings: Any) -> None:
    settings.PACS_WORKLIST_CLAIM_IDLE_SECONDS = 600
    now = timezone.now()
    fresh = [make_study(f"OPS-{n}") for n in range(3)]
    old = make_study("OPS-OLD")
    Study.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=2))
    statuses = [
        (fresh[0], Status.ARRIVED, Priority.STAT, None),
        (fresh[1], Status.IN_PROGRESS, Priority.STAT, now),
        (fresh[2], Status.IN_PROGRESS, Priority.ROUTINE, now - timedelta(hours=1)),
        (old, Status.FINAL, Priority.STAT, None),
    ]
    for study, status, priority, touched in statuses:
        WorklistItem.objects.create(
            study=study,
            study_instance_uid=study.study_instance_uid,
            status=status,
            priority=priority,
            claimed_by=admin_user if touched else None,
            claimed_at=touched,
            claim_touched_at=touched,
        )
    series = Series.objects.create(study=old, series_instance_uid=f"2.25.{uuid.uuid4().int}")
    instances = [
        Instance.objects.create(
            series=series,
            sop_instance_uid=f"2.25.{uuid.uuid4().int}",
            sop_class_uid="1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            size=10,
            sha256="0" * 64,
            storage_key=f"k{n}",
            metadata="{}",
        )
        for n in range(3)
    ]
    TierMove.objects.create(instance=instances[0], batch="b", source_tier="hot", source_key="k", target_tier="cold")
    TierMove.objects.create(
        instance=instances[1], batch="b", source_tier="hot", source_key="k", target_tier="cold", state="done"
    )
    Restore.objects.create(instance=instances[2], source_tier="cold", target_tier="hot")
    Budget.objects.create(name="<b>Cold</b> budget", monthly_limit=10, alerted_at=now)
    Budget.objects.create(name="Quiet", monthly_limit=10)
    record("audit-verify", user=admin_user, detail={"checked": 41, "first_broken_id": None})

    client = signed_in(admin_user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/operations/")
    assert response.status_code == 200
    ops = response.context["ops"]
    assert (ops.studies_arrived, ops.instances_arrived) == (3, 9)
    assert ops.backlog == [("Arrived", 1), ("In progress", 2)]
    assert ops.stat_unread == 2
    assert (ops.claims_held, ops.claims_expired) == (2, 1)
    assert ops.moves_in_flight == [("pending", 1)]
    assert ops.restores_in_flight == [("requested", 1)]
    assert [b.name for b in ops.budgets_alerting] == ["<b>Cold</b> budget"]
    html = response.content.decode()
    assert '<dd id="stat-unread">2</dd>' in html and '<dd id="claims-expired">1</dd>' in html
    assert "&lt;b&gt;Cold&lt;/b&gt; budget" in html
    assert "intact (41 records)" in html
    assert 'href="/admin/"' in html
    assert len(queries) < 25
