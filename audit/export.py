"""Exporting the audit trail to a SIEM: JSON lines, RFC 5424 syslog, FHIR R4 AuditEvent.

* :func:`to_json` — one JSON object per record, every stored field including
  the chain hashes, so an export can be re-verified elsewhere.
* :func:`to_syslog` — an RFC 5424 line: facility 13 (log audit), severity
  informational for successes and warning otherwise, MSGID = the action, the
  fields as structured data (SD-ID ``pacs@32473``; 32473 is the private
  enterprise number RFC 5612 reserves for examples) and the JSON as message.
* :func:`to_fhir` — a FHIR R4 ``AuditEvent`` typed with the DICOM audit codes
  of PS3.15 Annex A.5 / IHE ATNA (``DCM`` 110103 DICOM Instances Accessed,
  110104 DICOM Instances Transferred, 110105 DICOM Study Deleted, 110106
  Export, 110112 Query, 110114 User Authentication ...), with the patient
  and the study (110180 Study Instance UID) as entities.

:class:`SyslogSender` ships lines over UDP or TCP (octet-counted framing,
RFC 6587) to ``settings.PACS_AUDIT_SYSLOG`` (``udp://host:514``); ``manage.py
audit_forward --follow`` (:mod:`audit.forward`) streams new records there.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

from audit.models import AuditEvent
from audit.trail import hashed_fields

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACTION_CODES = "http://hl7.org/fhir/audit-event-action"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
NETWORK_TYPE_IP = "2"
APP_NAME = "cloud-pacs"
SD_ID = "pacs@32473"
FACILITY_LOG_AUDIT = 13


@dataclass(frozen=True)
class EventCode:
    """The DICOM event type (and subtype) of an action, and the FHIR action code C/R/U/D/E."""

    code: str
    display: str
    action: str
    subtype: tuple[str, str] | None = None


USER_AUTHENTICATION = ("110114", "User Authentication")
SECURITY_ALERT = ("110113", "Security Alert")

#: Our action names -> DICOM audit event types. Actions not listed are "Application Activity".
EVENT_CODES: dict[str, EventCode] = {
    "retrieve": EventCode("110103", "DICOM Instances Accessed", "R"),
    "view": EventCode("110103", "DICOM Instances Accessed", "R"),
    "metadata": EventCode("110103", "DICOM Instances Accessed", "R"),
    "access": EventCode("110103", "DICOM Instances Accessed", "R"),
    "store": EventCode("110104", "DICOM Instances Transferred", "C"),
    "delete": EventCode("110105", "DICOM Study Deleted", "D"),
    "export": EventCode("110106", "Export", "R"),
    "query": EventCode("110112", "Query", "E"),
    "search": EventCode("110112", "Query", "E"),
    "sign-in": EventCode(*USER_AUTHENTICATION, "E", ("110122", "Login")),
    "sign-out": EventCode(*USER_AUTHENTICATION, "E", ("110123", "Logout")),
    "sign-out-everywhere": EventCode(*USER_AUTHENTICATION, "E", ("110123", "Logout")),
    "sign-in-lockout": EventCode(*SECURITY_ALERT, "E", ("110126", "Node Authentication")),
    "mfa": EventCode(*USER_AUTHENTICATION, "E", ("110122", "Login")),
    "password-change": EventCode(*SECURITY_ALERT, "U", ("110137", "User security Attributes Changed")),
    "password-reset": EventCode(*SECURITY_ALERT, "U", ("110137", "User security Attributes Changed")),
    "password-reset-request": EventCode(*SECURITY_ALERT, "E", ("110137", "User security Attributes Changed")),
    "token-issue": EventCode(*SECURITY_ALERT, "C", ("110137", "User security Attributes Changed")),
    "token-revoke": EventCode(*SECURITY_ALERT, "U", ("110137", "User security Attributes Changed")),
    "admin-add": EventCode(*SECURITY_ALERT, "C", ("110129", "Security Configuration")),
    "admin-change": EventCode(*SECURITY_ALERT, "U", ("110129", "Security Configuration")),
    "admin-delete": EventCode(*SECURITY_ALERT, "D", ("110129", "Security Configuration")),
    "audit-verify": EventCode("110101", "Audit Log Used", "R"),
    "audit-export": EventCode("110101", "Audit Log Used", "R"),
    "audit-forward": EventCode("110101", "Audit Log Used", "R"),
    "sso-link": EventCode(*SECURITY_ALERT, "U", ("110137", "User security Attributes Changed")),
    "sso-user-created": EventCode(*SECURITY_ALERT, "C", ("110137", "User security Attributes Changed")),
}
APPLICATION_ACTIVITY = EventCode("110100", "Application Activity", "E")


def event_code(action: str) -> EventCode:
    """The code of an action; ``mfa-verify`` and the like fall back to their first word."""
    return EVENT_CODES.get(action) or EVENT_CODES.get(action.split("-", 1)[0]) or APPLICATION_ACTIVITY


def is_success(event: AuditEvent) -> bool:
    return event.outcome == "success"


def as_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        **hashed_fields(event),
        "timestamp": event.timestamp.astimezone(UTC).isoformat(),
        "hash": event.hash,
    }


def to_json(event: AuditEvent) -> str:
    return json.dumps(as_dict(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sd_value(value: Any) -> str:
    """PARAM-VALUE escaping of RFC 5424 §6.3.3: backslash, double quote and ']'."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or the NILVALUE."""
    token = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return token or "-"


def to_syslog(event: AuditEvent, hostname: str | None = None) -> str:
    severity = 6 if is_success(event) else 4
    pri = FACILITY_LOG_AUDIT * 8 + severity
    host = _header_token(hostname or socket.gethostname(), 255)
    timestamp = event.timestamp.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    params = {
        "id": event.pk,
        "actor": event.actor,
        "outcome": event.outcome,
        "src": event.source_ip,
        "patientID": event.patient_id,
        "studyUID": event.study_instance_uid,
        "hash": event.hash,
    }
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items() if v not in ("", None)) + "]"
    msgid = _header_token(event.action, 32)
    return f"<{pri}>1 {timestamp} {host} {APP_NAME} - {msgid} {sd} {to_json(event)}"


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def to_fhir(event: AuditEvent) -> dict[str, Any]:
    """A FHIR R4 AuditEvent resource for one record."""
    code = event_code(event.action)
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event.pk),
        "type": _coding(DCM, code.code, code.display),
        "action": code.action,
        "recorded": event.timestamp.astimezone(UTC).isoformat(),
        "outcome": "0" if is_success(event) else ("4" if event.outcome in ("denied", "partial") else "8"),
        "agent": [
            {
                "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
                "who": {"identifier": {"value": event.actor or "anonymous"}, "display": event.actor or "anonymous"},
                "requestor": True,
                **({"network": {"address": event.source_ip, "type": NETWORK_TYPE_IP}} if event.source_ip else {}),
            }
        ],
        "source": {
            "observer": {"display": APP_NAME},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
    }
    if code.subtype:
        resource["subtype"] = [_coding(DCM, *code.subtype)]
    if event.outcome != "success":
        resource["outcomeDesc"] = event.outcome
    entities: list[dict[str, Any]] = []
    if event.patient_id:
        entities.append(
            {
                "what": {"identifier": {"value": event.patient_id}},
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    if event.study_instance_uid:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "type": {"coding": [_coding(DCM, "110180", "Study Instance UID")]},
                        "value": event.study_instance_uid,
                    }
                },
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "3", "Report"),
            }
        )
    entities.append(
        {
            "what": {"identifier": {"system": "urn:cloud-pacs:audit", "value": event.hash}},
            "type": _coding(ENTITY_TYPE, "4", "Other"),
            "detail": [{"type": "detail", "valueString": json.dumps(event.detail, sort_keys=True)}],
        }
    )
    resource["entity"] = entities
    return resource


FORMATS = ("jsonl", "syslog", "fhir")


def export_lines(events: Iterable[AuditEvent], fmt: str, hostname: str | None = None) -> Iterator[str]:
    """One line per record in the chosen format (FHIR: one resource per line, NDJSON)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    for event in events:
        if fmt == "jsonl":
            yield to_json(event)
        elif fmt == "syslog":
            yield to_syslog(event, hostname)
        else:
            yield json.dumps(to_fhir(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class SyslogSender:
    """Sends RFC 5424 lines to ``udp://host:port`` or ``tcp://host:port``."""

    def __init__(self, target: str, timeout: float = 5.0) -> None:
        parts = urlsplit(target)
        if parts.scheme not in ("udp", "tcp") or not parts.hostname or not parts.port:
            raise ValueError(f"syslog target must look like udp://host:514 or tcp://host:6514, not {target!r}")
        self.protocol = parts.scheme
        self.address = (parts.hostname, parts.port)
        kind = socket.SOCK_DGRAM if self.protocol == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET, kind)
        self.sock.settimeout(timeout)
        if self.protocol == "tcp":
            self.sock.connect(self.address)

    def send(self, line: str) -> None:
        data = line.encode("utf-8")
        if self.protocol == "udp":
            self.sock.sendto(data, self.address)
        else:
            self.sock.sendall(str(len(data)).encode() + b" " + data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SyslogSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
