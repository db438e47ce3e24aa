"""The technologist's QC list over HTTP: what it lists, in which order, the QC moves, who may make them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from archive.models import Site
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.worklist import qc
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Status
from tests.conftest import role_user
from tests.portal.worklist.conftest import signed_in
from tests.portal.worklist.test_views import HOSTILE, add_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def tech(general_site: Site) -> User:
    return role_user("tech", Role.TECHNOLOGIST, general_site)


@pytest.fixture
def tech_client(tech: User) -> Client:
    return signed_in(tech)


def listed(client: Client, query: str = "") -> list[str]:
    page = client.get(f"/worklist/qc/{query}")
    assert page.status_code == 200
    return re.findall(r'<td class="col-patient_id">([^<]*)</td>', page.content.decode())


def test_it_lists_arrived_and_qc_failed_studies_of_the_users_sites_newest_first(
    tech_client: Client, general_site: Site, other_site: Site
) -> None:
    old, new = add_rows(general_site, 2, "A", status=Status.ARRIVED)
    (failed,) = add_rows(general_site, 1, "F", status=Status.QC_FAILED)
    add_rows(general_site, 1, "R", status=Status.READY)
    add_rows(other_site, 1, "O", status=Status.ARRIVED)
    now = timezone.now()
    for row, minutes in ((old, 30), (new, 1), (failed, 10)):
        WorklistItem.objects.filter(pk=row.pk).update(arrived_at=now - timedelta(minutes=minutes))
    assert listed(tech_client) == ["A-1", "F-0", "A-0"]
    event = AuditEvent.objects.filter(action="worklist_view").latest("pk")
    assert event.detail == {"rows": 3, "list": "qc"}


def test_older_pages_follow_by_keyset(tech_client: Client, general_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qc, "PAGE_SIZE", 2)
    rows = add_rows(general_site, 5, "P", status=Status.ARRIVED)
    now = timezone.now()
    for n, row in enumerate(rows):
        WorklistItem.objects.filter(pk=row.pk).update(arrived_at=now - timedelta(minutes=n))
    first = tech_client.get("/worklist/qc/").content.decode()
    assert re.findall(r'<td class="col-patient_id">([^<]*)</td>', first) == ["P-0", "P-1"]
    token = re.search(r'\?before=([0-9.]+)" id="qc-older"', first).group(1)
    assert listed(tech_client, f"?before={token}") == ["P-2", "P-3"]
    assert tech_client.get("/worklist/qc/?before=x.1").status_code == 400
    assert tech_client.get("/worklist/qc/?before=1." + "9" * 30).status_code == 400


def test_qc_passed_makes_the_study_ready_and_qc_failed_needs_a_reason(tech_client: Client, general_site: Site) -> None:
    first, second = add_rows(general_site, 2, "Q", status=Status.ARRIVED)
    passed = tech_client.post(f"/worklist/qc/{first.pk}/ready")
    assert passed.status_code == 200 and b"Ready to read" in passed.content
    assert WorklistItem.objects.get(pk=first.pk).status == Status.READY

    no_reason = tech_client.post(f"/worklist/qc/{second.pk}/failed", {"reason": "  "})
    assert no_reason.status_code == 400 and b"Say why QC failed." in no_reason.content
    too_long = tech_client.post(f"/worklist/qc/{second.pk}/failed", {"reason": "x" * 201})
    assert too_long.status_code == 400
    assert WorklistItem.objects.get(pk=second.pk).status == Status.ARRIVED

    failed = tech_client.post(f"/worklist/qc/{second.pk}/failed", {"reason": "motion  artefact\n"})
    assert failed.status_code == 200 and b"QC failed" in failed.content
    assert WorklistItem.objects.get(pk=second.pk).status == Status.QC_FAILED
    event = AuditEvent.objects.filter(action="worklist_status", outcome="success").latest("pk")
    assert event.detail == {"from": "arrived", "to": "qc_failed", "reason": "motion artefact"}
    again = tech_client.post(f"/worklist/qc/{first.pk}/ready")
    assert again.status_code == 409 and b"cannot go from Ready to Ready" in again.content


def test_a_radiologist_may_not_judge_qc_and_an_outsider_gets_404(
    rad_client: Client, general_site: Site, other_site: Site
) -> None:
    (row,) = add_rows(general_site, 1, "Q", status=Status.ARRIVED)
    assert rad_client.post(f"/worklist/qc/{row.pk}/ready").status_code == 403
    outsider = signed_in(role_user("far-tech", Role.TECHNOLOGIST, other_site))
    assert outsider.post(f"/worklist/qc/{row.pk}/ready").status_code == 404
    assert outsider.post(f"/worklist/qc/{row.pk}/failed", {"reason": "blur"}).status_code == 404
    assert outsider.post(f"/worklist/qc/{2**63}/ready").status_code == 404
    assert listed(outsider) == []
    assert WorklistItem.objects.get(pk=row.pk).status == Status.ARRIVED
    assert rad_client.get(f"/worklist/qc/{row.pk}/ready").status_code == 405


def test_hostile_names_and_reasons_are_shown_as_text(tech_client: Client, general_site: Site) -> None:
    (row,) = add_rows(general_site, 1, "H", status=Status.ARRIVED, patient_name=HOSTILE, description="<b>x</b>")
    page = tech_client.get("/worklist/qc/").content.decode()
    assert "<script>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    failed = tech_client.post(f"/worklist/qc/{row.pk}/failed", {"reason": "<script>x</script>"})
    assert failed.status_code == 200 and b"<script>" not in failed.content
