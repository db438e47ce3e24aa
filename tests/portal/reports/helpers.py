"""Helpers of the report tests: URLs, posting the editor, reading the DICOM copies back over WADO-RS."""

from __future__ import annotations

import io
from typing import Any

import pydicom
from django.test import Client
from django.urls import reverse

from archive.dicomweb.multipart import iter_parts, parse_content_type
from portal.reports.models import SECTION_NAMES, Report


def url(name: str, uid: str) -> str:
    return reverse(name, args=[uid])


def text(**sections: str) -> dict[str, str]:
    return {name: sections.get(name, "") for name in SECTION_NAMES}


def open_page(client: Client, uid: str) -> Any:
    response = client.get(url("report", uid))
    assert response.status_code == 200
    return response


def save(client: Client, uid: str, version: int, json: bool = True, **sections: str) -> Any:
    headers = {"Accept": "application/json"} if json else {}
    return client.post(url("report-save", uid), {"version": version, **text(**sections)}, headers=headers)


def sign(client: Client, uid: str, level: str, **sections: str) -> Any:
    report = Report.objects.get(study_instance_uid=uid)
    posted = text(**sections) if sections else report.sections()
    return client.post(url("report-sign", uid), {"version": report.version, "level": level, **posted})


def amend(client: Client, uid: str, addendum: str) -> Any:
    report = Report.objects.get(study_instance_uid=uid)
    return client.post(url("report-amend", uid), {"version": report.version, "addendum": addendum})


class _Sink:
    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.buf.extend(data)


def wado_instance(client: Client, study: str, series: str, sop: str) -> pydicom.Dataset:
    """One instance retrieved over WADO-RS (multipart/related; type="application/dicom") and parsed."""
    response = client.get(
        f"/dicom-web/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    assert response.status_code == 200, response.status_code
    media, params = parse_content_type(response["Content-Type"])
    assert media == "multipart/related"
    body = b"".join(response.streaming_content) if response.streaming else response.content
    parts = [bytes(p.sink.buf) for p in iter_parts(io.BytesIO(body), params["boundary"], lambda h: _Sink())]
    assert len(parts) == 1
    return pydicom.dcmread(io.BytesIO(parts[0]))
