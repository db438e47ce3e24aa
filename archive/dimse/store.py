"""The C-STORE SCP: one received data set made a Part 10 file and taken through the one ingest path.

What "byte-for-byte" means over DIMSE: a C-STORE carries a data set, not a
Part 10 file. The data set bytes are kept exactly as they arrived (never
decoded and re-encoded); the 128-byte preamble, ``DICM`` and the File Meta
Information are built here from the association: Media Storage SOP Class and
Instance UID from the request, Transfer Syntax UID from the presentation
context, Sending AE Title from the peer and Source/Receiving AE Title from
this node. That file then takes the one ingest path
(:func:`archive.ingest.store.store_instance`), so integrity, idempotence and
conflict rules are the same as for STOW-RS.

Each C-STORE is audited on its own, and a stored instance's record is written
in the transaction that indexes it: a success status is never sent for an
instance the trail does not show, even if the server stops mid-association.
"""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import dataclass, field
from typing import Any, cast

from django.db import DatabaseError, close_old_connections
from django.http import HttpRequest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event

from archive.dimse.statuses import DOES_NOT_MATCH, NOT_AUTHORIZED, OUT_OF_RESOURCES, STATUS, SUCCESS, status_dataset
from archive.ingest.store import Outcome, Sender, StoreResult, record_stores, store_instance
from archive.models import DicomDevice, Site, Study
from archive.storage.registry import get_storage
from archive.storage.staging import StagingWriter
from audit.trail import record

log = logging.getLogger(__name__)


@dataclass
class Session:
    """What one accepted association knows: its peer, its site, and what it stored."""

    calling_ae: str
    called_ae: str
    host: str
    sender: Sender
    device: DicomDevice | None = None  # None: an unknown caller, accepted for C-ECHO only
    results: list[StoreResult] = field(default_factory=list)

    def request(self) -> HttpRequest:
        """A bare request that carries the peer's address into the audit trail."""
        request = HttpRequest()
        request.META["REMOTE_ADDR"] = self.host
        return request

    def detail(self, model: str, **more: Any) -> dict[str, Any]:
        """The audit detail every query or retrieve of this association starts from."""
        return {"via": "DIMSE", **more, "calling_ae": self.calling_ae, "called_ae": self.called_ae, "model": model}

    def refusal(self, may: bool, what: str) -> str | None:
        """Why this association's device may not do ``what`` (e.g. "query (C-FIND)"), or None when it may."""
        if self.device is None:
            return "unknown device"
        return None if may else f"this device may not {what}"

    def audit(self, action: str, detail: dict[str, Any], outcome: str, **more: Any) -> None:
        """A record of a refused or cancelled operation; the refusal stands even if it cannot be written."""
        try:
            record(action, self.request(), actor=f"AE:{self.calling_ae}", outcome=outcome, detail=detail | more)
        except DatabaseError as exc:
            close_old_connections()
            log.error("audit record of a %s from %s not written: %s", action, self.calling_ae, exc)


def site_sender(site: Site) -> Sender:
    """New studies go to ``site``; existing studies may grow only if they are ``site``'s."""
    known: dict[str, bool] = {}

    def may_add_to(study_uid: str) -> bool:
        if study_uid not in known:
            owner = list(Study.objects.filter(study_instance_uid=study_uid).values_list("site_id", "trashed_at")[:1])
            # no row: a new study; a study in the trash takes nothing until it is restored
            known[study_uid] = not owner or (owner[0][0] == site.pk and owner[0][1] is None)
        return known[study_uid]

    return Sender(site=site, may_add_to=may_add_to)


class StoreSCP:
    """Answers C-STORE requests for a node whose AE title is ``ae_title``; objects over ``max_bytes`` are refused."""

    def __init__(self, ae_title: str, max_bytes: int) -> None:
        self.ae_title = ae_title
        self.max_bytes = max_bytes

    def on_c_store(self, session: Session | None, event: Event) -> int | Dataset:
        """The C-STORE-RSP status of one request on ``session``'s association (None: not accepted)."""
        if session is None:
            return status_dataset(NOT_AUTHORIZED, "association not authorized")
        request = cast(C_STORE, event.request)
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        if session.device is None or not session.device.may_store:
            refused = StoreResult(
                Outcome.FORBIDDEN,
                sop_class_uid=sop_class,
                sop_instance_uid=sop_instance,
                detail="this device may not store (C-STORE)" if session.device else "unknown device",
            )
            session.results.append(refused)
            audit_refusal(session, refused)
            log.info("C-STORE from %s refused: %s", session.calling_ae, refused.detail)
            return status_dataset(NOT_AUTHORIZED, refused.detail)
        transfer_syntax = UID(event.context.transfer_syntax)
        data = request.DataSet.getbuffer()  # type: ignore[union-attr]
        try:
            result, status = self._store(session, data, sop_class, sop_instance, transfer_syntax)
        finally:
            data.release()
        session.results.append(result)
        if status != SUCCESS:
            log.info("C-STORE from %s refused: %s", session.calling_ae, result.outcome.value)
            return status_dataset(status, result.detail or result.outcome.value)
        return SUCCESS

    def _store(
        self, session: Session, data: memoryview, sop_class: str, sop_instance: str, transfer_syntax: UID
    ) -> tuple[StoreResult, int]:
        """Stage the received data set as a Part 10 file and ingest it; the result and its C-STORE status."""
        refused = StoreResult(Outcome.INVALID, sop_class_uid=sop_class, sop_instance_uid=sop_instance)
        found = dataset_uids(data, transfer_syntax)
        if found is not None and found != (sop_class, sop_instance):
            refused.detail = "SOP Class/Instance UID differ from the C-STORE request"
            audit_refusal(session, refused)
            return refused, DOES_NOT_MATCH
        writer = StagingWriter(get_storage("hot"), self.max_bytes)
        try:
            writer.write(b"\x00" * 128 + b"DICM")
            writer.write(self._file_meta(session, sop_class, sop_instance, transfer_syntax))
            writer.write(data)
        except (ValueError, OSError) as exc:  # over the size limit, or the disk failed
            writer.abort()
            refused.detail = str(exc)
            audit_refusal(session, refused)
            return refused, OUT_OF_RESOURCES

        try:
            result = store_instance(
                writer.finish(), sender=session.sender, audit=lambda results: audit(session, results, sop_instance)
            )
        except DatabaseError as exc:  # e.g. the index is locked or unreachable: the sender may retry later
            close_old_connections()
            log.warning("C-STORE from %s not indexed: %s", session.calling_ae, exc)
            refused.detail = "the index is not available"
            audit_refusal(session, refused)
            return refused, OUT_OF_RESOURCES
        except Exception:  # noqa: BLE001 - a fault of ours: logged, audited and answered, never pynetdicom's bare 0xC211
            log.exception("C-STORE from %s failed", session.calling_ae)
            refused.detail = "the archive could not store this instance"
            audit_refusal(session, refused)
            return refused, OUT_OF_RESOURCES
        if result.ok:
            return result, SUCCESS
        return result, STATUS[result.outcome]

    def _file_meta(self, session: Session, sop_class: str, sop_instance: str, transfer_syntax: UID) -> bytes:
        meta = FileMetaDataset()
        meta.FileMetaInformationGroupLength = 0  # computed when encoded
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = UID(sop_class)
        meta.MediaStorageSOPInstanceUID = UID(sop_instance)
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
        meta.SourceApplicationEntityTitle = self.ae_title
        meta.SendingApplicationEntityTitle = session.calling_ae
        meta.ReceivingApplicationEntityTitle = self.ae_title
        return encode_file_meta(meta)


def dataset_uids(data: memoryview, transfer_syntax: UID) -> tuple[str, str] | None:
    """(0008,0016) and (0008,0018) of an encoded data set, or None when they cannot be read.

    Reads only the first elements (a deflated data set is inflated only as far
    as needed); anything unreadable is left to the full parse at ingest.
    """
    head = bytes(data[: 64 * 1024])
    if transfer_syntax.is_deflated:
        head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, 64 * 1024)
    try:
        ds = read_dataset(
            io.BytesIO(head),
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            stop_when=lambda tag, vr, length: tag > 0x00080018,
        )
        return str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    except (AttributeError, ValueError, EOFError, OSError, KeyError, TypeError, zlib.error):
        return None


def audit(session: Session, results: list[StoreResult], sop_instance: str, **detail: str) -> None:
    """The "store" record of one C-STORE (called inside its index transaction when it stored)."""
    record_stores(
        session.request(),
        results,
        via="DIMSE",
        actor=f"AE:{session.calling_ae}",
        calling_ae=session.calling_ae,
        called_ae=session.called_ae,
        sop_instance_uid=sop_instance,
        **detail,
    )


def audit_refusal(session: Session, refused: StoreResult) -> None:
    """The record of a C-STORE refused before ingest; the refusal stands even if the trail cannot be written."""
    try:
        audit(session, [refused], refused.sop_instance_uid, reason=refused.detail or refused.outcome.value)
    except DatabaseError as exc:
        close_old_connections()
        log.error("audit record of a refused C-STORE from %s not written: %s", session.calling_ae, exc)
