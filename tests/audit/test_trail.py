"""The audit trail: tamper evidence, verification, the read-only admin, exports to a SIEM."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from audit.export import SyslogSender, to_fhir, to_syslog
from audit.models import AppendOnlyError, AuditEvent
from audit.trail import record
from portal.accounts.groups import sync_staff_flag
from portal.accounts.roles import Role
from tests.conftest import role_user


@pytest.fixture
def trail(db: Any) -> list[AuditEvent]:
    return [
        record("sign-in", actor="alice"),
        record("retrieve", actor="alice", patient_id="PAT-9", study_instance_uid="1.2.3.4", detail={"level": "study"}),
        record("store", actor="modality", patient_id="PAT-9", study_instance_uid="1.2.3.4"),
        record("sign-in", actor="mallory", outcome="failure"),
    ]


def verify() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def test_an_untouched_chain_verifies(trail: list[AuditEvent]) -> None:
    assert verify().startswith("intact: 4 record(s)")


def test_each_verification_from_the_command_is_itself_recorded_with_its_outcome(trail: list[AuditEvent]) -> None:
    verify()
    done = AuditEvent.objects.filter(action="audit-verify").get()
    assert (done.actor, done.outcome, done.detail["checked"]) == ("audit_verify", "success", 4)
    assert verify().startswith("intact: 5 record(s)")  # the record of the first run is in the chain too
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor = %s WHERE id = %s", ["bob", trail[1].pk])
    with pytest.raises(CommandError):
        verify()
    failed = AuditEvent.objects.filter(action="audit-verify").order_by("-pk").first()
    assert failed is not None and failed.outcome == "failure" and failed.detail["first_broken_id"] == trail[1].pk


def test_a_nul_in_any_recorded_text_is_replaced_so_the_record_is_kept_on_every_database(
    trail: list[AuditEvent],
) -> None:
    event = record(
        "search",
        actor="eve\x00",
        patient_id="PAT\x00",
        detail={"query": {"modality\x00": "C\x00T"}, "values": ["a\x00", 1]},
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.detail == {"query": {"modality\ufffd": "C\ufffdT"}, "values": ["a\ufffd", 1]}
    assert (stored.actor, stored.patient_id) == ("eve\ufffd", "PAT\ufffd")
    assert verify().startswith("intact: 5 record(s)")


def test_the_orm_refuses_to_change_or_delete_records(trail: list[AuditEvent]) -> None:
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=trail[0].pk).update(actor="someone else")
    with pytest.raises(AppendOnlyError):
        trail[0].delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()


def test_editing_a_row_with_raw_sql_is_detected_and_named(trail: list[AuditEvent]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor = %s WHERE id = %s", ["bob", trail[1].pk])
    with pytest.raises(CommandError, match=rf"broken at record {trail[1].pk}: content does not match") as info:
        verify()
    assert info.value.returncode == 1


def test_deleting_a_row_with_raw_sql_is_detected_at_the_next_record(trail: list[AuditEvent]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [trail[1].pk])
    with pytest.raises(CommandError, match=rf"broken at record {trail[2].pk}: previous-hash link broken"):
        verify()


def test_deleting_the_newest_rows_is_detected(trail: list[AuditEvent]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id >= %s", [trail[2].pk])
    with pytest.raises(CommandError, match="broken at the end of the chain"):
        verify()


def test_rewriting_a_row_and_its_hash_is_still_detected(trail: list[AuditEvent]) -> None:
    from audit.trail import compute_hash

    forged = AuditEvent.objects.get(pk=trail[1].pk)
    forged.actor = "bob"
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET actor = %s, hash = %s WHERE id = %s", ["bob", compute_hash(forged), forged.pk]
        )
    with pytest.raises(CommandError, match=rf"broken at record {trail[2].pk}"):
        verify()


@pytest.fixture
def auditor_client(db: Any) -> Client:
    auditor = role_user("auditor", Role.AUDITOR)
    sync_staff_flag(auditor)
    client = Client()
    client.force_login(auditor)
    return client


def test_an_auditor_reads_the_trail_in_the_admin_but_cannot_change_it(
    trail: list[AuditEvent], auditor_client: Client
) -> None:
    listing = auditor_client.get("/admin/audit/auditevent/")
    assert listing.status_code == 200 and b"mallory" in listing.content
    assert b"Verify the chain" in listing.content
    assert auditor_client.get(f"/admin/audit/auditevent/{trail[1].pk}/change/").status_code == 200
    assert auditor_client.get("/admin/audit/auditevent/add/").status_code == 403
    assert auditor_client.post(f"/admin/audit/auditevent/{trail[1].pk}/delete/").status_code == 403
    assert auditor_client.post(f"/admin/audit/auditevent/{trail[1].pk}/change/", {"actor": "x"}).status_code == 403
    assert AuditEvent.objects.get(pk=trail[1].pk).actor == "alice"


def test_who_accessed_this_patient_is_one_filter_away(trail: list[AuditEvent], auditor_client: Client) -> None:
    page = auditor_client.get("/admin/audit/auditevent/", {"patient_id": "PAT-9"}).content.decode()
    assert page.count('class="field-actor"') == 2
    assert 'field-actor">mallory' not in page and 'field-actor">alice' in page
    searched = auditor_client.get("/admin/audit/auditevent/", {"q": "PAT-9"}).content.decode()
    assert searched.count('class="field-actor"') == 2


def test_an_auditor_sees_no_archive_pages(trail: list[AuditEvent], auditor_client: Client) -> None:
    assert auditor_client.get("/admin/archive/study/").status_code == 403


def test_the_admin_verification_page_shows_intact_or_the_first_broken_record(
    trail: list[AuditEvent], auditor_client: Client
) -> None:
    ok = auditor_client.get("/admin/audit/auditevent/verify/")
    assert ok.status_code == 200 and b'id="chain-intact"' in ok.content
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET patient_id = %s WHERE id = %s", ["PAT-0", trail[2].pk])
    broken = auditor_client.get("/admin/audit/auditevent/verify/")
    assert b'id="chain-broken"' in broken.content
    assert f"#{trail[2].pk}".encode() in broken.content


def export(fmt: str, *args: str) -> list[str]:
    out = io.StringIO()
    call_command("audit_export", "--format", fmt, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().splitlines()


def test_the_json_lines_export_keeps_every_field_and_the_hashes(trail: list[AuditEvent]) -> None:
    lines = [json.loads(line) for line in export("jsonl")]
    assert [e["action"] for e in lines] == ["sign-in", "retrieve", "store", "sign-in"]
    assert lines[1]["hash"] == trail[1].hash and lines[1]["prev_hash"] == trail[0].hash
    assert lines[1]["detail"] == {"level": "study"}


def test_the_export_filters_by_date_and_resumes_after_an_id(trail: list[AuditEvent]) -> None:
    assert export("jsonl", "--since", "2999-01-01") == []
    actions = [json.loads(x)["action"] for x in export("jsonl", "--since", "2000-01-01T00:00:00Z")]
    assert actions == ["sign-in", "retrieve", "store", "sign-in", "audit-export"]  # exporting is audited too
    resumed = [json.loads(x) for x in export("jsonl", "--after-id", str(trail[2].pk))]
    assert [e["id"] for e in resumed if e["action"] != "audit-export"] == [trail[3].pk]
    with pytest.raises(CommandError, match="--since must be"):
        export("jsonl", "--since", "yesterday")


RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>\S+) cloud-pacs - "
    r"(?P<msgid>\S{1,32}) (?P<sd>\[pacs@32473(?: \w+=\"(?:[^\"\\\]]|\\.)*\")*\]) (?P<msg>\{.*\})$"
)


def test_syslog_lines_follow_rfc_5424(trail: list[AuditEvent]) -> None:
    lines = export("syslog")
    assert len(lines) == 4
    for line, event in zip(lines, trail, strict=True):
        match = RFC5424.match(line)
        assert match, line
        assert match["msgid"] == event.action
        assert json.loads(match["msg"])["hash"] == event.hash
    assert RFC5424.match(lines[0])["pri"] == str(13 * 8 + 6)  # type: ignore[index]
    assert RFC5424.match(lines[3])["pri"] == str(13 * 8 + 4)  # type: ignore[index]


def test_syslog_structured_data_escapes_quotes_and_brackets(db: Any) -> None:
    event = record("sign-in", actor='eve"] [x', outcome="failure")
    line = to_syslog(event, hostname="pacs-1")
    assert 'actor="eve\\"\\] [x"' in line
    assert RFC5424.match(line)


@pytest.mark.parametrize(
    ("action", "code", "fhir_action"),
    [
        ("retrieve", "110103", "R"),
        ("store", "110104", "C"),
        ("export", "110106", "R"),
        ("query", "110112", "E"),
        ("delete", "110105", "D"),
        ("sign-in", "110114", "E"),
    ],
)
def test_fhir_audit_events_carry_the_dicom_event_codes(db: Any, action: str, code: str, fhir_action: str) -> None:
    event = record(action, actor="alice", patient_id="PAT-9", study_instance_uid="1.2.3.4")
    resource = to_fhir(event)
    assert resource["resourceType"] == "AuditEvent"
    assert resource["type"] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": code,
        "display": resource["type"]["display"],
    }
    assert resource["action"] == fhir_action and resource["outcome"] == "0"
    assert resource["agent"][0]["requestor"] is True and resource["agent"][0]["who"]["identifier"]["value"] == "alice"
    patient, study = resource["entity"][0], resource["entity"][1]
    assert patient["what"]["identifier"]["value"] == "PAT-9" and patient["role"]["code"] == "1"
    assert study["what"]["identifier"]["value"] == "1.2.3.4"
    assert study["what"]["identifier"]["type"]["coding"][0]["code"] == "110180"


def test_sign_in_events_say_login_and_failures_are_not_successes(trail: list[AuditEvent]) -> None:
    resources = [json.loads(line) for line in export("fhir")]
    assert resources[0]["subtype"][0]["code"] == "110122"
    assert resources[3]["outcome"] == "4" or resources[3]["outcome"] == "8"
    assert resources[3]["outcome"] != "0"


def test_the_syslog_sender_ships_lines_over_udp(trail: list[AuditEvent]) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    out = io.StringIO()
    call_command(
        "audit_export", "--format", "syslog", "--to", f"udp://127.0.0.1:{port}", stdout=out, stderr=io.StringIO()
    )
    got = [receiver.recv(65535).decode() for _ in range(4)]
    receiver.close()
    assert out.getvalue() == ""
    assert [RFC5424.match(g)["msgid"] for g in got] == ["sign-in", "retrieve", "store", "sign-in"]  # type: ignore[index]


def test_the_syslog_sender_frames_tcp_by_octet_counting(db: Any) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received: list[bytes] = []

    def accept() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65535):
                received.append(chunk)

    thread = threading.Thread(target=accept)
    thread.start()
    line = to_syslog(record("sign-in", actor="zoë"), hostname="h")
    with SyslogSender(f"tcp://127.0.0.1:{server.getsockname()[1]}") as sender:
        sender.send(line)
    thread.join(5)
    server.close()
    data = b"".join(received)
    length, _, rest = data.partition(b" ")
    assert int(length) == len(rest) == len(line.encode())


def test_a_bad_syslog_target_is_a_clear_error(db: Any) -> None:
    with pytest.raises(CommandError, match="syslog"):
        call_command("audit_export", "--format", "syslog", "--to", "http://example.org", stdout=io.StringIO())


def test_signing_in_and_out_is_recorded(client: Client, db: Any) -> None:
    user = User.objects.create_user("writer", password="a long and proper passphrase 7")
    client.post("/accounts/login/", {"username": "writer", "password": "wrong password here"})
    client.post("/accounts/login/", {"username": "writer", "password": "a long and proper passphrase 7"})
    client.post("/accounts/logout/")
    got = list(AuditEvent.objects.values_list("action", "outcome", "actor"))
    assert got == [
        ("sign-in", "failure", "writer"),
        ("sign-in", "success", "writer"),
        ("sign-out", "success", "writer"),
    ]
    assert AuditEvent.objects.get(action="sign-out").actor_id == user.pk
