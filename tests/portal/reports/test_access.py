"""Who sees a report: an outsider of another site sees nothing by any URL; referring clinicians see final and
amended reports of the studies they may see, never a draft or a preliminary; hostile text stays text everywhere;
critical results show on the worklist and their communication is in the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from audit.models import AuditEvent
from portal.reports import pdf
from portal.reports.dicom import read_stored
from portal.reports.models import CriticalResult, Report, ReportVersion
from portal.worklist.models import WorklistItem
from tests.portal.reports.conftest import signed_in
from tests.portal.reports.helpers import amend, open_page, save, sign, url

pytestmark = pytest.mark.django_db

DRAFT = "Draft words nobody outside may read."
HOSTILE = "<script>alert('x')</script> <b onmouseover=alert(1)>bold</b> ) Tj ET BT (injected"


def _drafted(client: Client, uid: str, findings: str = DRAFT) -> None:
    open_page(client, uid)
    assert save(client, uid, 1, findings=findings).status_code == 200


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get", "report"),
        ("get", "report-panel"),
        ("get", "report-print"),
        ("post", "report-save"),
        ("post", "report-sign"),
        ("post", "report-amend"),
        ("post", "report-critical"),
    ],
)
def test_an_outsider_of_another_site_sees_neither_the_report_nor_the_editor_by_any_url(
    claimed: WorklistItem, radiologist: User, outside_radiologist: User, method: str, name: str
) -> None:
    uid = claimed.study_instance_uid
    mine = signed_in(radiologist)
    _drafted(mine, uid)
    sign(mine, uid, "final")
    outsider = signed_in(outside_radiologist)
    data: dict[str, Any] = {"version": 3, "level": "final", "findings": "x", "addendum": "x", "finding": "x"}
    response = getattr(outsider, method)(url(name, uid), data if method == "post" else {})
    assert response.status_code == 404
    body = response.content.decode()
    assert DRAFT not in body and "report-editor" not in body and "EVE" not in body
    assert ReportVersion.objects.count() == 1 and Report.objects.get().findings == DRAFT
    assert AuditEvent.objects.filter(action="report_view", outcome="denied", actor="rad-elsewhere").exists()


def test_referring_clinicians_never_see_drafts_or_preliminaries_only_final_and_amended_reports(
    claimed: WorklistItem, radiologist: User, clinician: User
) -> None:
    uid = claimed.study_instance_uid
    reader, referrer = signed_in(radiologist), Client()
    referrer.force_login(clinician)
    _drafted(reader, uid)
    for name in ("report", "report-panel"):
        page = referrer.get(url(name, uid))
        assert page.status_code == 200 and DRAFT not in page.content.decode()
        assert "No final report yet." in page.content.decode() and "report-editor" not in page.content.decode()
    assert referrer.get(url("report-print", uid)).status_code == 404
    sign(reader, uid, "preliminary")
    assert DRAFT not in referrer.get(url("report", uid)).content.decode()
    assert referrer.get(url("report-print", uid) + "?v=1").status_code == 404  # no version by number either
    listed = referrer.get(f"/dicom-web/studies/{uid}/series", headers={"Accept": "application/dicom+json"})
    modalities = {s["00080060"]["Value"][0] for s in listed.json()}
    assert listed.status_code == 200 and modalities == {"CT"}  # no preliminary SR or PDF for DICOMweb to serve
    assert save(referrer, uid, 3, findings="clinician edit").status_code == 403
    assert sign(referrer, uid, "final").status_code == 403
    sign(reader, uid, "final")
    page = referrer.get(url("report", uid)).content.decode()
    assert DRAFT in page and "Final, signed by Rita Reader" in page
    printed = referrer.get(url("report-print", uid))
    assert printed.status_code == 200 and DRAFT in printed.content.decode()
    amend(reader, uid, "Addendum for the clinician.")
    assert "Addendum for the clinician." in referrer.get(url("report-print", uid)).content.decode()
    assert Report.objects.get().findings == DRAFT


def test_hostile_text_and_patient_name_are_shown_as_text_in_the_editor_the_printable_page_and_the_pdf(
    claimed: WorklistItem, radiologist: User
) -> None:
    uid = claimed.study_instance_uid
    client = signed_in(radiologist)
    _drafted(client, uid, findings=HOSTILE)
    editor = open_page(client, uid).content.decode()
    assert "<script>alert" not in editor and "<b onmouseover" not in editor and "<img src=x" not in editor
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in editor
    assert 'rp-name">&lt;img src</span>' in editor  # "=" ends the name's first component group (DICOM PN)
    sign(client, uid, "final")
    printed = client.get(url("report-print", uid)).content.decode()
    assert "<script>alert" not in printed and "&lt;script&gt;" in printed and 'rp-name">&lt;img src</dd>' in printed
    document = pdf.render([pdf.Line(HOSTILE)])
    escaped = b"(<script>alert\\('x'\\)</script> <b onmouseover=alert\\(1\\)>bold</b> \\) Tj ET BT \\(injected) Tj"
    assert escaped in document
    version = ReportVersion.objects.get()
    stored = read_stored(version.pdf_sop_instance_uid).EncapsulatedDocument
    assert b"\\) Tj ET BT \\(injected" in stored and b"onerror=alert\\(1\\)>^EVE" in stored


def test_a_critical_result_shows_on_the_worklist_and_its_communication_is_in_the_audit_trail(
    claimed: WorklistItem, radiologist: User
) -> None:
    uid = claimed.study_instance_uid
    client = signed_in(radiologist)
    _drafted(client, uid)
    response = client.post(
        url("report-critical", uid),
        {
            "finding": "Tension pneumothorax",
            "communicated_to": "Dr Alice Referrer",
            "method": "phone",
            "communicated_at": "2026-12-06T00:15",
        },
    )
    assert response.status_code == 302
    assert WorklistItem.objects.get(pk=claimed.pk).critical is True
    result = CriticalResult.objects.get()
    assert (result.communicated_to, result.method) == ("Dr Alice Referrer", "phone")
    event = AuditEvent.objects.get(action="report_critical_result")
    assert event.study_instance_uid == uid and event.actor == "rad-one"
    assert event.detail["communicated_to"] == "Dr Alice Referrer" and event.detail["method"] == "phone"
    assert event.detail["communicated_at"].startswith("2026-12-06T00:15")
    assert event.detail["finding"] == "Tension pneumothorax"
    rows = client.get("/worklist/").content.decode()
    assert 'title="Critical result">Critical</span>' in rows and "critical-result" in rows
    page = open_page(client, uid).content.decode()
    assert "Tension pneumothorax" in page and "Dr Alice Referrer" in page


@pytest.mark.parametrize(
    "posted",
    [
        {"finding": "", "communicated_to": "Dr A", "method": "phone"},
        {"finding": "x", "communicated_to": "", "method": "phone"},
        {"finding": "x", "communicated_to": "Dr A", "method": "carrier pigeon"},
        {"finding": "x", "communicated_to": "Dr A", "method": "phone", "communicated_at": "yesterday"},
    ],
)
def test_a_critical_result_without_what_whom_how_or_a_real_time_is_a_bad_request(
    claimed: WorklistItem, radiologist: User, posted: dict[str, str]
) -> None:
    client = signed_in(radiologist)
    _drafted(client, claimed.study_instance_uid)
    assert client.post(url("report-critical", claimed.study_instance_uid), posted).status_code == 400
    assert not CriticalResult.objects.exists() and not WorklistItem.objects.get(pk=claimed.pk).critical


def test_a_malformed_study_uid_is_a_bad_request(radiologist: User) -> None:
    assert signed_in(radiologist).get("/reports/studies/not-a-uid/").status_code == 400
