"""The reports' JSON API: draft, save with version (409 with both texts), sign preliminary and final, addendum,
templates; a final signature needs a session with a fresh second factor and is never a bearer token's;
an outsider gets 404 for everything; hostile text comes back as plain JSON data; the schema lists it all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from archive.models import ApiToken, Instance
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.reports.models import Report, ReportTemplate
from portal.worklist.models import WorklistItem
from portal.worklist.statuses import Status
from tests.conftest import bearer_client, role_user
from tests.portal.reports.conftest import HOSTILE_NAME, signed_in

pytestmark = pytest.mark.django_db

FINDINGS = "Small nodule in the right upper lobe."
HOSTILE_TEXT = '<script>alert("report")</script><img src=x onerror=alert(1)> & "quotes"'


def report_url(uid: str, action: str = "") -> str:
    return f"/api/studies/{uid}/report" + (f"/{action}" if action else "")


def send(client: Client, method: str, url: str, body: Any = None) -> Any:
    data = body if isinstance(body, str) else json.dumps(body if body is not None else {})
    return getattr(client, method)(url, data, content_type="application/json")


def drafted(client: Client, uid: str, **sections: str) -> dict[str, Any]:
    """Start the draft and save ``sections`` over it; the report as answered."""
    assert send(client, "post", report_url(uid)).status_code in (200, 201)
    version = Report.objects.get(study_instance_uid=uid).version
    response = send(client, "patch", report_url(uid), {"version": version, "sections": sections})
    assert response.status_code == 200, response.content
    return dict(response.json())


def signing(client: Client, uid: str, status: str) -> Any:
    version = Report.objects.get(study_instance_uid=uid).version
    return send(client, "post", report_url(uid, "sign"), {"status": status, "version": version})


def test_a_reader_starts_a_draft_from_the_best_template_and_reads_it(claimed: WorklistItem, radiologist: User) -> None:
    ReportTemplate.objects.create(name="CT", modality="CT", technique="Helical CT.", impression="")
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    assert client.get(report_url(uid)).status_code == 404  # nothing started yet
    started = send(client, "post", report_url(uid))
    assert started.status_code == 201
    body = started.json()
    assert (body["status"], body["version"], body["sections"]["technique"], body["versions"]) == (
        "draft",
        1,
        "Helical CT.",
        [],
    )
    assert send(client, "post", report_url(uid)).status_code == 200  # it exists: opened, not made twice
    assert client.get(report_url(uid)).json() == body
    assert AuditEvent.objects.filter(action="report_view", study_instance_uid=uid, outcome="success").count() == 4


def test_saves_name_their_version_and_a_stale_save_gets_409_with_both_texts(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist)
    token = bearer_client(radiologist)  # a script of the same reader drafts too
    uid = claimed.study_instance_uid
    send(client, "post", report_url(uid))
    whole = {"indication": "Cough.", "technique": "CT.", "comparison": "None.", "findings": FINDINGS, "impression": ""}
    saved = send(token, "put", report_url(uid), {"version": 1, "sections": whole})
    assert (saved.status_code, saved.json()["version"], saved.json()["sections"]) == (200, 2, whole)
    patched = send(client, "patch", report_url(uid), {"version": 2, "sections": {"impression": "Benign."}})
    assert patched.json()["sections"] == {**whole, "impression": "Benign."} and patched.json()["version"] == 3
    stale = send(token, "patch", report_url(uid), {"version": 2, "sections": {"findings": "Mine."}})
    assert stale.status_code == 409
    assert stale.json() == {
        "detail": "The report changed: it is at version 3 now. Merge the texts and save over that version.",
        "version": 3,
        "theirs": {**whole, "impression": "Benign."},
        "yours": {**whole, "impression": "Benign.", "findings": "Mine."},
    }
    assert Report.objects.get(study_instance_uid=uid).findings == FINDINGS
    assert AuditEvent.objects.filter(action="report_save", outcome="denied").get().detail["reason"] == "conflict"
    partial_put = send(client, "put", report_url(uid), {"version": 3, "sections": {"findings": "x"}})
    assert partial_put.status_code == 400 and "every section" in json.dumps(partial_put.json())


def test_only_the_claimant_saves_and_signs(claimed: WorklistItem, radiologist: User, second_radiologist: User) -> None:
    uid = claimed.study_instance_uid
    send(signed_in(radiologist), "post", report_url(uid))
    other = signed_in(second_radiologist)
    refused = send(other, "patch", report_url(uid), {"version": 1, "sections": {"findings": "x"}})
    assert (refused.status_code, refused.json()["detail"]) == (403, "Refused: only the claimant edits.")
    assert signing(other, uid, "preliminary").status_code == 403
    assert AuditEvent.objects.filter(outcome="denied", actor="rad-two").count() == 2


def test_a_token_signs_preliminary_but_never_final_and_the_refusal_is_audited(
    claimed: WorklistItem, radiologist: User
) -> None:
    token = bearer_client(radiologist)
    uid = claimed.study_instance_uid
    drafted(token, uid, findings=FINDINGS)
    preliminary = signing(token, uid, "preliminary")
    assert preliminary.status_code == 201, preliminary.content
    assert preliminary.json()["status"] == "preliminary"
    assert [v["status"] for v in preliminary.json()["versions"]] == ["preliminary"]
    before = Instance.objects.count()
    refused = signing(token, uid, "final")
    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "Refused: bearer tokens never sign final reports or addenda: a radiologist signs in the browser.",
        "code": "token_may_not_sign_final",
    }
    assert Report.objects.get(study_instance_uid=uid).status == "preliminary" and Instance.objects.count() == before
    event = AuditEvent.objects.get(action="report_sign", outcome="denied")
    assert (event.actor, event.study_instance_uid) == ("rad-one", uid)
    assert event.detail["reason"].startswith("bearer tokens never sign final reports")


def test_a_token_beside_a_fresh_session_still_never_signs_final(claimed: WorklistItem, radiologist: User) -> None:
    client = signed_in(radiologist, mfa_age=0)
    uid = claimed.study_instance_uid
    drafted(client, uid, findings=FINDINGS)
    _, raw = ApiToken.issue(radiologist, "script")
    version = Report.objects.get(study_instance_uid=uid).version
    response = client.post(
        report_url(uid, "sign"),
        {"status": "final", "version": version},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert (response.status_code, response.json()["code"]) == (403, "token_may_not_sign_final")
    assert Report.objects.get(study_instance_uid=uid).status == "draft"


def test_a_session_without_a_fresh_second_factor_is_told_to_verify_again(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist, mfa_age=3600)
    uid = claimed.study_instance_uid
    drafted(client, uid, findings=FINDINGS)
    refused = signing(client, uid, "final")
    assert refused.status_code == 403 and refused["Content-Type"] == "application/json"
    body = refused.json()
    assert (body["code"], body["verify_url"]) == ("mfa_required", "/mfa/verify/?fresh=1")
    assert "second factor" in body["detail"]
    assert Report.objects.get(study_instance_uid=uid).status == "draft"
    event = AuditEvent.objects.get(action="report_sign", outcome="denied")
    assert event.detail["reason"] == "second factor not recent"


def test_a_session_with_a_fresh_second_factor_signs_final_and_the_report_travels_with_the_study(
    claimed: WorklistItem, radiologist: User
) -> None:
    client = signed_in(radiologist, mfa_age=0)
    uid = claimed.study_instance_uid
    drafted(client, uid, findings=FINDINGS, impression="Benign.")
    signed = signing(client, uid, "final")
    assert signed.status_code == 201, signed.content
    body = signed.json()
    assert (body["status"], body["sections"]["findings"]) == ("final", FINDINGS)
    (version,) = body["versions"]
    assert (version["status"], version["signer"], version["number"], version["amends"]) == (
        "final",
        "Rita Reader",
        1,
        None,
    )
    stored = set(
        Instance.objects.filter(series__study__study_instance_uid=uid).values_list("sop_instance_uid", flat=True)
    )
    assert {version["sr_sop_instance_uid"], version["pdf_sop_instance_uid"]} <= stored
    assert WorklistItem.objects.get(study_instance_uid=uid).status == Status.FINAL
    again = signing(client, uid, "final")
    assert (again.status_code, again.json()["code"]) == (409, "refused")
    edit = send(client, "patch", report_url(uid), {"version": body["version"], "sections": {"findings": "x"}})
    assert edit.status_code == 409 and "amended, not edited" in edit.json()["detail"]


def test_an_addendum_amends_a_final_report_with_a_session_only(claimed: WorklistItem, radiologist: User) -> None:
    client = signed_in(radiologist, mfa_age=0)
    uid = claimed.study_instance_uid
    drafted(client, uid, findings=FINDINGS)
    final = signing(client, uid, "final").json()
    token = bearer_client(radiologist)
    refused = send(token, "post", report_url(uid, "addendum"), {"text": "Later.", "version": final["version"]})
    assert (refused.status_code, refused.json()["code"]) == (403, "token_may_not_sign_final")
    assert AuditEvent.objects.get(action="report_amend", outcome="denied").detail["reason"].startswith("bearer")
    stale_mfa = signed_in(radiologist, mfa_age=3600)
    late = send(stale_mfa, "post", report_url(uid, "addendum"), {"text": "Later.", "version": final["version"]})
    assert (late.status_code, late.json()["code"]) == (403, "mfa_required")
    amended = send(client, "post", report_url(uid, "addendum"), {"text": "Nodule stable.", "version": final["version"]})
    assert amended.status_code == 201, amended.content
    versions = amended.json()["versions"]
    assert [(v["status"], v["addendum"], v["amends"]) for v in versions] == [
        ("final", "", None),
        ("amended", "Nodule stable.", 1),
    ]
    assert WorklistItem.objects.get(study_instance_uid=uid).status == Status.AMENDED
    blank = send(client, "post", report_url(uid, "addendum"), {"text": "  ", "version": amended.json()["version"]})
    assert blank.status_code == 400


def test_an_addendum_to_a_draft_is_a_conflict(claimed: WorklistItem, radiologist: User) -> None:
    client = signed_in(radiologist, mfa_age=0)
    uid = claimed.study_instance_uid
    drafted(client, uid, findings=FINDINGS)
    version = Report.objects.get(study_instance_uid=uid).version
    response = send(client, "post", report_url(uid, "addendum"), {"text": "More.", "version": version})
    assert response.status_code == 409 and "only a final report is amended" in response.json()["detail"]


def test_a_clinician_reads_only_the_final_text(claimed: WorklistItem, radiologist: User, clinician: User) -> None:
    uid = claimed.study_instance_uid
    reader = signed_in(radiologist, mfa_age=0)
    drafted(reader, uid, findings="Draft text.")
    clinician_client = bearer_client(clinician)
    assert clinician_client.get(report_url(uid)).json() == {"detail": "This study has no final report yet."}
    signing(reader, uid, "preliminary")
    assert clinician_client.get(report_url(uid)).status_code == 404
    send(reader, "patch", report_url(uid), {"version": 3, "sections": {"findings": FINDINGS}})
    assert signing(reader, uid, "final").status_code == 201
    send(reader, "post", report_url(uid, "addendum"), {"text": "Add.", "version": 5})
    seen = clinician_client.get(report_url(uid)).json()
    assert (seen["status"], seen["version"], seen["sections"]["findings"]) == ("amended", None, FINDINGS)
    assert [v["status"] for v in seen["versions"]] == ["final", "amended"]
    assert "Draft text." not in json.dumps(seen)
    refused = send(clinician_client, "post", report_url(uid))
    assert refused.status_code == 403
    assert send(clinician_client, "patch", report_url(uid), {"version": 6, "sections": {}}).status_code == 403


def test_templates_are_listed_for_readers(general_site: Any, radiologist: User, clinician: User) -> None:
    chest = ReportTemplate.objects.create(name="CT chest", modality="CT", body_part="CHEST", findings=HOSTILE_TEXT)
    ReportTemplate.objects.create(name="Any", impression="Normal.")
    ReportTemplate.objects.create(name="Old", enabled=False)
    client = bearer_client(radiologist)
    listed = client.get("/api/report-templates/")
    assert [t["name"] for t in listed.json()] == ["Any", "CT chest"]
    one = client.get(f"/api/report-templates/{chest.pk}").json()
    assert (one["modality"], one["body_part"], one["sections"]["findings"]) == ("CT", "CHEST", HOSTILE_TEXT)
    assert client.get("/api/report-templates/" + "9" * 30).status_code == 404
    disabled = ReportTemplate.objects.get(name="Old")
    assert client.get(f"/api/report-templates/{disabled.pk}").status_code == 404
    assert bearer_client(clinician).get("/api/report-templates/").status_code == 403


def test_an_outsider_gets_404_for_everything_like_a_study_that_does_not_exist(
    claimed: WorklistItem, radiologist: User, outside_radiologist: User
) -> None:
    uid = claimed.study_instance_uid
    drafted(signed_in(radiologist), uid, findings=FINDINGS)
    before = Report.objects.get(study_instance_uid=uid).version
    for client in (signed_in(outside_radiologist, mfa_age=0), bearer_client(outside_radiologist)):
        for target in (uid, "1.2.3.4.5.6.7.8.9"):
            answers = [
                client.get(report_url(target)),
                send(client, "post", report_url(target)),
                send(client, "put", report_url(target), {"version": before, "sections": {}}),
                send(client, "patch", report_url(target), {"version": before, "sections": {"findings": "x"}}),
                send(client, "post", report_url(target, "sign"), {"status": "preliminary", "version": before}),
                send(client, "post", report_url(target, "addendum"), {"text": "x", "version": before}),
            ]
            for response in answers:
                assert (response.status_code, response.json()) == (404, {"detail": "No such study."})
    assert Report.objects.get(study_instance_uid=uid).version == before
    denied = AuditEvent.objects.filter(action="report_view", outcome="denied")
    assert denied.count() == 24 and not denied.exclude(study_instance_uid="").exists()


def test_hostile_text_comes_back_as_plain_json_data(claimed: WorklistItem, radiologist: User) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    body = drafted(client, uid, findings=HOSTILE_TEXT, impression="ünïcødé ✓")
    assert (body["sections"]["findings"], body["sections"]["impression"]) == (HOSTILE_TEXT, "ünïcødé ✓")
    response = client.get(report_url(uid))
    assert response["Content-Type"] == "application/json"
    assert response.json()["sections"]["findings"] == HOSTILE_TEXT
    item = client.get(f"/api/worklist/items/{uid}").json()
    assert item["patient_name"] == HOSTILE_NAME


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        '"just a string"',
        "[]",
        "{}",
        '{"version": 1}',
        '{"version": "one", "sections": {}}',
        '{"version": 99999999999999999999999, "sections": {}}',
        '{"version": -1, "sections": {}}',
        '{"version": 1, "sections": []}',
        '{"version": 1, "sections": {"findings": 5}}',
        '{"version": 1, "sections": {"findings": {"a": 1}}}',
        '{"version": 1, "sections": {"password": "x"}}',
        '{"version": 1, "sections": {"findings": "a\\u0000b"}}',
        '{"version": 1, "sections": {"findings": "' + "x" * 20_001 + '"}}',
    ],
)
def test_bad_saves_get_a_400_in_json_and_change_nothing(claimed: WorklistItem, radiologist: User, body: str) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    send(client, "post", report_url(uid))
    response = send(client, "patch", report_url(uid), body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json" and response.json()["detail"]
    assert Report.objects.get(study_instance_uid=uid).version == 1


@pytest.mark.parametrize(
    "body",
    ['{"status": "draft", "version": 1}', '{"status": "FINAL", "version": 1}', '{"status": "final"}', "null"],
)
def test_bad_signatures_get_a_400(claimed: WorklistItem, radiologist: User, body: str) -> None:
    client = signed_in(radiologist, mfa_age=0)
    uid = claimed.study_instance_uid
    send(client, "post", report_url(uid))
    response = send(client, "post", report_url(uid, "sign"), body)
    assert response.status_code == 400 and response.json()["detail"]
    assert Report.objects.get(study_instance_uid=uid).status == "draft"


def test_bad_urls_sizes_and_media_types_are_answered_precisely(claimed: WorklistItem, radiologist: User) -> None:
    client = signed_in(radiologist)
    uid = claimed.study_instance_uid
    assert client.get(report_url("<script>")).status_code == 400
    assert client.get(report_url("1.2." + "3" * 70)).status_code == 400
    assert client.delete(report_url(uid)).status_code == 405
    send(client, "post", report_url(uid))
    form = client.post(report_url(uid, "sign"), {"status": "final", "version": 1})
    assert form.status_code == 415
    huge = client.patch(report_url(uid), "x" * (1024 * 1024 + 1), content_type="application/json")
    assert huge.status_code == 413 and huge.json()["detail"]


def test_the_schema_describes_every_endpoint_and_the_docs_page_is_served(radiologist: User) -> None:
    schema = bearer_client(radiologist).get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    expected = {
        "/api/worklist/items/": {"get"},
        "/api/worklist/items/search": {"post"},
        "/api/worklist/items/{study_uid}": {"get"},
        "/api/worklist/items/{study_uid}/claim": {"post"},
        "/api/worklist/items/{study_uid}/release": {"post"},
        "/api/studies/{study_uid}/report": {"get", "post", "put", "patch"},
        "/api/studies/{study_uid}/report/sign": {"post"},
        "/api/studies/{study_uid}/report/addendum": {"post"},
        "/api/report-templates/": {"get"},
        "/api/report-templates/{id}": {"get"},
        "/api/ehr/launch": {"post"},
    }
    assert {p: set(ops) & {"get", "post", "put", "patch", "delete"} for p, ops in paths.items()} == expected
    security = json.loads(schema.content)["components"]["securitySchemes"]
    assert security["bearerToken"] == {**security["bearerToken"], "type": "http", "scheme": "bearer"}
    sign = paths["/api/studies/{study_uid}/report/sign"]["post"]
    assert set(sign["responses"]) == {"201", "400", "401", "403", "404", "409", "503"}
    docs = signed_in(radiologist).get("/api/docs/")
    assert docs.status_code == 200 and b"<script src=" in docs.content and b"<script>" not in docs.content


def test_non_readers_are_refused_and_audited(claimed: WorklistItem, general_site: Any) -> None:
    technologist = bearer_client(role_user("tech", Role.TECHNOLOGIST, general_site))
    uid = claimed.study_instance_uid
    assert send(technologist, "post", report_url(uid)).status_code == 403
    assert send(technologist, "post", report_url(uid, "sign"), {"status": "final", "version": 1}).status_code == 403
    assert AuditEvent.objects.filter(outcome="denied", actor="tech").count() == 2
