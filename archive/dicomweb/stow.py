"""STOW-RS (PS3.18 §10.5): ``POST /dicom-web/studies[/{study}]``.

The body is read as a stream: each multipart part is written straight to a
staging file (its digest and fsync then run in the background, see
:class:`archive.storage.staging.StagingWriter`) and handed to the one ingest path as
soon as its closing delimiter arrives. The response lists every instance stored and
every part refused, with a Failure Reason, and never drops one silently: a
fault after some instances were stored (a body past the size limit, a disk
or index error) still answers with those instances, since they are already
acknowledged, and tells the parts it never read in a Warning header. The
audit record of the stored instances is written in the same transaction as
their index rows (see :func:`archive.ingest.store.store_instances`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponse

from archive.access import policy, visible_studies
from archive.dicomweb.auth import dicomweb_view
from archive.dicomweb.http import add_warnings, dicomweb_root, error, retry_later
from archive.dicomweb.multipart import (
    READ_SIZE,
    MultipartError,
    Readable,
    iter_parts,
    parse_content_type,
    valid_boundary,
)
from archive.dicomweb.negotiation import accepts_json
from archive.ingest.store import (
    FAILURE_REASON,
    INDEX_UNAVAILABLE,
    AuditHook,
    Outcome,
    Sender,
    StoreResult,
    record_stores,
    store_instance,
    store_instances,
)
from archive.models import Study
from archive.storage.base import StagedObject
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter

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
    # Attributes are added in tag order (PS3.18 F.2.2), in the body and in each item.
    body: dict[str, Any] = {}
    # Retrieve URL is Type 2 (PS3.18 Table 10.5.3-3): the study's, when the request concerned one study.
    studies = {study} if study else {r.study_instance_uid for r in stored}
    only = next(iter(studies)) if len(studies) == 1 else None
    body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{only}"]} if only else {"vr": "UR"}
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
    if not results:
        status = 400
    elif not failed and not warnings:
        status = 200
    elif stored:
        status = 202
    else:
        status = 409  # nothing stored: every part was refused
    # A body cut short is told in the Warning header: Warning Reason (0008,1196) belongs to one
    # stored instance, and none of its codes means "the body was cut".
    response = HttpResponse(json.dumps(body), status=status, content_type="application/dicom+json")
    add_warnings(response, request, warnings)
    return response


#: Why a request, or the rest of one, was not stored: the archive could not write to its storage.
NOT_WRITTEN = (
    "The archive could not write this request's objects to storage. Send it again later: "
    "instances it already stored are recognised as duplicates."
)


#: Why a group of parts was not stored: the index refused to be written (down, or locked too long).
INDEX_DOWN = (
    "The archive's index is not available right now. Send the request again later: "
    "instances it already stored are recognised as duplicates."
)


def unwritten(results: list[StoreResult]) -> str:
    """Why some of ``results`` could not be stored for now (the index, or storage), or "" when none failed so."""
    details = {r.detail for r in results if r.outcome is Outcome.UNAVAILABLE}
    if not details:
        return ""
    return INDEX_DOWN if INDEX_UNAVAILABLE in details else NOT_WRITTEN


def _not_written() -> HttpResponse:
    """The request body could not be staged (disk full, I/O error, client gone): tell the sender to retry."""
    log.exception("STOW body could not be staged")
    return retry_later(NOT_WRITTEN)


def request_body(request: HttpRequest, max_bytes: int) -> Readable | HttpResponse:
    """The request body as a stream, or the error answer to a body that cannot be taken.

    With a Content-Length, Django's stream (which never reads past it). A
    chunked upload (``Transfer-Encoding: chunked``, no length: how a client
    streams what it has not measured) is read from the server's own input,
    which gunicorn ends at the last chunk (``wsgi.input_terminated``), and
    stops being read past ``max_bytes``; behind a server that cannot end it,
    411 asks for a length.
    """
    meta = request.META
    declared = meta.get("CONTENT_LENGTH")
    if declared:
        if not (declared.isascii() and declared.isdigit()):
            return error(400, "The Content-Length is not a number")
        if int(declared) > max_bytes:
            return error(413, "The request body is larger than this server accepts")
        return request
    if "chunked" not in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return request  # no body
    if not meta.get("wsgi.input_terminated"):
        return error(411, "Send the body with a Content-Length")
    return _Bounded(meta["wsgi.input"], max_bytes)


class _Bounded:
    """A stream of unknown length that refuses to yield more than ``limit`` bytes (ValueError, answered 413)."""

    def __init__(self, stream: Readable, limit: int) -> None:
        self.stream, self.left = stream, limit

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(self.left + 1 if size < 0 else min(size, self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise ValueError("the request body is larger than this server accepts")
        return data


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
            except (ValueError, OSError):  # over the size limit, or the disk refused the bytes
                self.writer.abort()
                raise

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


@dicomweb_view(methods=("POST",))  # which also answers a malformed Study Instance UID with 400
def stow(request: HttpRequest, study: str | None = None) -> HttpResponse:
    if not policy().can_store(request.user):
        return error(403, "You may not store instances")
    if not accepts_json(request.META.get("HTTP_ACCEPT")):
        return error(406, "STOW-RS responses are available as application/dicom+json")
    media, params = parse_content_type(request.META.get("CONTENT_TYPE", ""))
    body = request_body(request, settings.PACS_STOW_MAX_BYTES)
    if isinstance(body, HttpResponse):
        return body
    sender = _sender(request)
    if study is not None and sender.may_add_to is not None and not sender.may_add_to(study):
        return error(404, "No such study")
    results: list[StoreResult] = []
    warnings: list[str] = []

    def audit(items: list[StoreResult]) -> None:
        record_stores(request, items, via="STOW-RS")

    if media == "application/dicom":
        try:
            sink = _PartSink({"content-type": "application/dicom"})
        except OSError:
            return _not_written()
        assert sink.writer is not None
        try:
            while chunk := body.read(READ_SIZE):
                sink.write(chunk)
            staged = sink.writer.finish()
        except ValueError as exc:  # over the size limit
            sink.abort()
            return error(413, str(exc))
        except OSError:  # the disk refused the bytes, or the client went away
            sink.abort()
            return _not_written()
        result = store_instance(staged, study, sender, audit)
        if result.outcome is Outcome.UNAVAILABLE:  # nothing stored: the bare 503, as for a multipart body
            return retry_later(unwritten([result]))
        results.append(result)
    elif media == "multipart/related":
        part_type = params.get("type", "application/dicom").lower()
        boundary = params.get("boundary", "")
        if part_type not in DICOM_TYPES:
            return error(415, 'Only multipart/related; type="application/dicom" is accepted')
        if not valid_boundary(boundary):
            return error(400, "The multipart boundary is missing or invalid")
        batch = _Batch(results, study, sender, audit)
        try:
            refusal = _receive(batch, body, boundary, warnings)
        finally:
            batch.discard()  # whatever was staged and not stored (nothing, once the last batch is stored)
        if batch.refused:  # parts refused before ingest (not DICOM): audited on their own
            try:
                audit(batch.refused)
            except DatabaseError as exc:  # the index went down; what was stored is acknowledged all the same
                if not any(r.ok for r in results):
                    raise
                log.error("audit record of %d parts that are not DICOM not written: %s", len(batch.refused), exc)
        if refusal is not None:
            return refusal
    else:
        return error(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    for r in results:
        if not r.ok:
            log.info("STOW refused a part: %s %s", r.outcome.value, r.detail)
    return stow_response(request, results, study, warnings)


def _receive(batch: _Batch, body: Readable, boundary: str, warnings: list[str]) -> HttpResponse | None:
    """Stage and store every part of a multipart body; the answer to the whole request when nothing was stored.

    A body that ends early, grows past the size limit or cannot be staged
    (the disk, the client gone) stops the reading: every part read whole is
    still stored, and the parts not read, which cannot be named, are told in
    a Warning. An answer is then the bare 400, 413 or 503 only when no
    instance of the request was stored; otherwise the response lists what was
    (PS3.18 §10.5.3: 202), since earlier batches are already acknowledged.
    """
    refusal: HttpResponse | None = None
    try:
        for part in iter_parts(body, boundary, _PartSink):
            sink = part.sink
            if sink.writer is None:
                batch.refuse(StoreResult(Outcome.INVALID, detail=f"part of type {sink.media} is not DICOM"))
                continue
            batch.add(sink.writer.finish())
    except MultipartError as exc:
        if not batch.parts:
            return error(400, str(exc))
        warnings.append(str(exc))
    except ValueError as exc:  # the body grew past the size limit
        refusal = error(413, str(exc))
        warnings.append(f"{exc}: the parts after those listed were not read")
    except OSError:
        refusal = _not_written()
        warnings.append("the archive could not stage the rest of the body: the parts after those listed were not read")
    batch.flush()
    if batch.unwritten and refusal is None:
        refusal = retry_later(batch.unwritten)
    if refusal is not None and not any(r.ok for r in batch.results):
        return refusal
    return None


class _Batch:
    """Collects staged parts and stores them together (see :func:`store_instances`).

    Parts are indexed in groups of :data:`BATCH` so one request never holds
    the index's write lock for long; refused non-DICOM parts keep their place
    in the response order. The instances of a group that the disk or the index
    refuses fail (0xA700, named by their UIDs: the ingest path returns their
    results) and the next groups are still tried; ``refused`` collects the
    results that no ingest call audited (parts that are not DICOM).
    """

    def __init__(self, results: list[StoreResult], study: str | None, sender: Sender, audit: AuditHook) -> None:
        self.results, self.study, self.sender, self.audit = results, study, sender, audit
        self.staged: list[StagedObject] = []
        self.slots: list[int] = []
        self.refused: list[StoreResult] = []
        self.parts = 0
        self.unwritten = ""  # why a group could not be stored, if one could not

    def add(self, staged: StagedObject) -> None:
        self.parts += 1
        self.slots.append(len(self.results))
        self.results.append(StoreResult(Outcome.INVALID))  # replaced by flush()
        self.staged.append(staged)
        if len(self.staged) >= BATCH:
            self.flush()

    def refuse(self, result: StoreResult) -> None:
        self.parts += 1
        self.results.append(result)
        self.refused.append(result)

    def flush(self) -> None:
        staged, slots = self.staged, self.slots
        self.staged, self.slots = [], []  # store_instances consumes them, whatever happens
        if not staged:
            return
        stored = store_instances(staged, self.study, self.sender, self.audit)
        self.unwritten = unwritten(stored) or self.unwritten
        for slot, result in zip(slots, stored, strict=True):
            self.results[slot] = result

    def discard(self) -> None:
        for staged in self.staged:
            staged.discard()
        self.staged, self.slots = [], []


#: Parts of one request indexed in one transaction at most.
BATCH = 50


def _sender(request: HttpRequest) -> Sender:
    """The storing user's site, and a check that existing studies are theirs to extend.

    A user who sees every study needs no check; otherwise one statement per
    study tells whether it exists and, if so, whether the user sees it. The
    sender's site is looked up only when a new study is created.
    """
    user = request.user
    visible = visible_studies(user)
    if not visible.query.has_filters() and not visible.query.is_empty():
        return Sender(site_of=lambda: policy().sender_site(user))
    known: dict[str, bool] = {}
    seen = Exists(visible.filter(pk=OuterRef("pk")))

    def may_add_to(study_uid: str) -> bool:
        if study_uid not in known:
            found = (
                Study.objects.filter(study_instance_uid=study_uid).annotate(seen=seen).values_list("seen", flat=True)
            )
            known[study_uid] = all(found)  # no row: a new study
        return known[study_uid]

    return Sender(may_add_to=may_add_to, site_of=lambda: policy().sender_site(user))
