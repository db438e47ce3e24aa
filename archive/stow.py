"""STOW-RS (PS3.18 §10.5): ``POST /dicom-web/studies[/{study}]``.

The body is read as a stream: each multipart part is written straight to a
staging file (hashing as it goes) and handed to the one ingest path as soon as
its closing delimiter arrives. The response lists every instance stored and
every part refused, with a Failure Reason, and never drops one silently.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from archive.access import policy, visible_studies
from archive.auth import dicomweb_view
from archive.ingest import FAILURE_REASON, Outcome, Sender, StoreResult, store_instance
from archive.models import Study
from archive.multipart import MultipartError, iter_parts, parse_content_type, valid_boundary
from archive.negotiation import accepts_json
from archive.responses import dicomweb_root, error
from archive.storage import StagingWriter, get_storage
from archive.uid import is_valid_uid
from audit.trail import record

log = logging.getLogger(__name__)

DICOM_TYPES = {"application/dicom", "application/octet-stream"}


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def stow_response(
    request: HttpRequest, results: list[StoreResult], study: str | None, warnings: list[str]
) -> HttpResponse:
    """The DICOM JSON response of PS3.18 Table 10.5.3-3 with the right status."""
    root = dicomweb_root(request)
    stored = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    body: dict[str, Any] = {}
    if study:
        body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{study}"]}
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _ui(r.sop_class_uid),
                    "00081155": _ui(r.sop_instance_uid),
                    "00081197": {"vr": "US", "Value": [FAILURE_REASON[r.outcome]]},
                }
                for r in failed
            ],
        }
    if stored:
        items = []
        for r in stored:
            item: dict[str, Any] = {
                "00081150": _ui(r.sop_class_uid),
                "00081155": _ui(r.sop_instance_uid),
                "00081190": {
                    "vr": "UR",
                    "Value": [
                        f"{root}/studies/{r.study_instance_uid}/series/{r.series_instance_uid}"
                        f"/instances/{r.sop_instance_uid}"
                    ],
                },
            }
            items.append(item)
        body["00081199"] = {"vr": "SQ", "Value": items}
    if warnings:
        body["00081196"] = {"vr": "US", "Value": [0xB000]}  # Warning Reason: coercion / partial body
    if not results:
        status = 400
    elif not failed and not warnings:
        status = 200
    elif stored:
        status = 202
    else:
        status = 409  # nothing stored: every part was refused
    response = HttpResponse(json.dumps(body), status=status, content_type="application/dicom+json")
    for warning in warnings:
        response["Warning"] = f'299 - "{warning}"'
    return response


class _PartSink:
    """Streams one part either into a staging file (DICOM) or nowhere (others)."""

    def __init__(self, headers: dict[str, str]) -> None:
        media, _ = parse_content_type(headers.get("content-type", "application/dicom"))
        self.media = media
        self.writer = StagingWriter(get_storage("hot"), settings.PACS_STOW_MAX_BYTES) if media in DICOM_TYPES else None

    def write(self, data: bytes | memoryview) -> None:
        if self.writer is not None:
            try:
                self.writer.write(data)
            except ValueError:
                self.writer.abort()
                raise

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


@dicomweb_view
def stow(request: HttpRequest, study: str | None = None) -> HttpResponse:
    if request.method != "POST":
        return error(405, "Use POST to store instances", allow="POST")
    if not policy().can_store(request.user):
        return error(403, "You may not store instances")
    if study is not None and not is_valid_uid(study):
        return error(400, "The Study Instance UID in the URL is not a valid UID")
    if not accepts_json(request.META.get("HTTP_ACCEPT")):
        return error(406, "STOW-RS responses are available as application/dicom+json")
    media, params = parse_content_type(request.META.get("CONTENT_TYPE", ""))
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > settings.PACS_STOW_MAX_BYTES:
        return error(413, "The request body is larger than this server accepts")
    sender = _sender(request)
    if study is not None and not sender.may_add_to(study):  # type: ignore[misc]
        return error(404, "No such study")
    results: list[StoreResult] = []
    warnings: list[str] = []
    if media == "application/dicom":
        sink = _PartSink({"content-type": "application/dicom"})
        assert sink.writer is not None
        while chunk := request.read(256 * 1024):
            sink.write(chunk)
        results.append(store_instance(sink.writer.finish(), study, sender))
    elif media == "multipart/related":
        part_type = params.get("type", "application/dicom").lower()
        boundary = params.get("boundary", "")
        if part_type not in DICOM_TYPES:
            return error(415, 'Only multipart/related; type="application/dicom" is accepted')
        if not valid_boundary(boundary):
            return error(400, "The multipart boundary is missing or invalid")
        try:
            for part in iter_parts(request, boundary, _PartSink):
                sink = part.sink
                if sink.writer is None:
                    results.append(StoreResult(Outcome.INVALID, detail=f"part of type {sink.media} is not DICOM"))
                    continue
                results.append(store_instance(sink.writer.finish(), study, sender))
        except MultipartError as exc:
            if not results:
                return error(400, str(exc))
            warnings.append(str(exc))
        except ValueError as exc:  # a part over the size limit
            return error(413, str(exc))
    else:
        return error(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    for r in results:
        if not r.ok:
            log.info("STOW refused %s: %s %s", r.sop_instance_uid or "a part", r.outcome.value, r.detail)
    _audit(request, results)
    return stow_response(request, results, study, warnings)


def _sender(request: HttpRequest) -> Sender:
    """The storing user's site, and a check that existing studies are theirs to extend."""
    user = request.user
    visible = visible_studies(user)
    known: dict[str, bool] = {}

    def may_add_to(study_uid: str) -> bool:
        if study_uid not in known:
            exists = Study.objects.filter(study_instance_uid=study_uid).exists()
            known[study_uid] = not exists or visible.filter(study_instance_uid=study_uid).exists()
        return known[study_uid]

    return Sender(site=policy().sender_site(user), may_add_to=may_add_to)


def _audit(request: HttpRequest, results: list[StoreResult]) -> None:
    by_study: dict[str, list[StoreResult]] = {}
    for r in results:
        by_study.setdefault(r.study_instance_uid, []).append(r)
    for study_uid, items in by_study.items():
        stored = sum(1 for r in items if r.ok)
        record(
            "store",
            request,
            outcome="success" if stored == len(items) else ("partial" if stored else "failure"),
            study_instance_uid=study_uid,
            detail={"stored": stored, "failed": len(items) - stored, "via": "STOW-RS"},
        )
