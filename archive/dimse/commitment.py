"""Storage Commitment Push Model SCP (PS3.4 Annex J): "do you really have these?", answered truthfully.

A device sends an N-ACTION (Action Type ID 1, Request Storage Commitment) with
a (0008,1195) Transaction UID and a (0008,1199) Referenced SOP Sequence. Only
a device that *may store* may ask: commitment is about what it sent, and a
query-only workstation has nothing to commit (0x0124 otherwise). The request
is written to the index (:class:`~archive.models.StorageCommitment`), with its
``storage_commitment`` audit record, in one transaction before the N-ACTION is
answered 0x0000, so an acknowledged request cannot be lost.

Then each reference is checked once (:func:`check`): committed only when the
instance is in the index, belongs to the requesting device's site, has the
requested SOP Class, and its stored object, read back through storage,
re-hashes to the SHA-256 taken at ingest. Otherwise it is failed with its
(0008,1197) Failure Reason (PS3.3 C.14.1.1): 0x0112 no such object instance
(also for another site's instance: its existence is not revealed), 0x0119
class/instance conflict, 0x0122 referenced SOP Class not supported (not a
storage SOP class, and not in the index), 0x0110 processing failure (the
object cannot be read or no longer matches its hash), 0x0131 duplicate
transaction UID (every reference of a request whose Transaction UID was
already used).

A device may have at most :data:`MAX_PENDING_PER_DEVICE` requests not yet
reported; more are refused with 0x0213 (Resource limitation, the DIMSE-N
status for it: the 0xA7xx "Out of Resources" codes are C-service ones). One
request per Transaction UID is taken as new (a unique constraint of the
index); later ones are kept as ``reused``. The checks run on a pool of
:data:`CHECK_WORKERS` threads per listener, however many requests come.

The N-EVENT-REPORT (Event Type ID 1: all committed, 2: failures exist) goes
back on the requesting association when the device keeps it open and the
node has the SCP role of its Storage Commitment context, sent by that
association's own thread between the requests it serves
(:func:`serve_reports`), with a Message ID of its own; otherwise on a new
association to the device (its ``host`` when that is one address, else the
address the request came from; its ``port``) proposing the SCP role by
SCP/SCU Role Selection (PS3.4 J.3.3.1.3, PS3.7 D.3.3.4), which the device
must accept. A failed delivery is retried from the row with growing delays
(:attr:`Deliverer.retry_delays`) until :attr:`Deliverer.max_age`, then the
request is ``expired``. Every report attempt leaves a
``storage_commitment_report`` record.

Why a thread of the listener and not a django-tasks task: the row is the
queue either way (a task can be lost with a crashed worker, a row cannot);
the listener already speaks DICOM, must run for the N-ACTION to arrive at
all, and needs no second process to be up for a report to go out. Any number
of listeners may run: a row is claimed by one conditional UPDATE (a lease on
``next_attempt_at``), so only one process delivers it at a time, and a crashed
one's claim expires. Outgoing associations are plain TCP (no TLS yet).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum
from io import BytesIO
from typing import Any, cast

from django.db import DatabaseError, IntegrityError, close_old_connections, connections, transaction
from django.http import HttpRequest
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, build_role
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE, N_ACTION, N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from archive.dicom.uid import is_valid_uid
from archive.dimse.statuses import NOT_AUTHORIZED, SUCCESS, status_dataset
from archive.dimse.store import Session
from archive.models import DicomDevice, Instance, Site, StorageCommitment, parse_network
from archive.storage.registry import get_storage
from audit.trail import record

log = logging.getLogger(__name__)

#: The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.1).
WELL_KNOWN_INSTANCE = UID("1.2.840.10008.1.20.1.1")
REQUEST_STORAGE_COMMITMENT = 1  # (0000,1008) Action Type ID
ALL_COMMITTED = 1  # (0000,1002) Event Type ID: Storage Commitment Request Successful
FAILURES_EXIST = 2  # (0000,1002) Event Type ID: Storage Commitment Request Complete - Failures Exist
#: N-ACTION statuses (PS3.7 10.1.4.1.10, PS3.4 J.3.2.1.3).
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
NO_SUCH_ACTION = 0x0123
RESOURCE_LIMITATION = 0x0213
#: At most this many references in one request (the report must fit in one association's patience).
MAX_REFERENCES = 10000
#: At most this many requests of one device not yet delivered; more are refused with 0x0213.
MAX_PENDING_PER_DEVICE = 20
#: Checks (index look-ups and re-hashing) run on this many threads of a listener, whatever the number of requests.
CHECK_WORKERS = 2
STORAGE_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)


class FailureReason(IntEnum):
    """(0008,1197) Failure Reason of a Failed SOP Sequence item (PS3.3 C.14.1.1)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    DUPLICATE_TRANSACTION_UID = 0x0131


class Malformed(Exception):
    """An N-ACTION the node cannot take, with its failure status."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status


@dataclass(frozen=True)
class Request:
    """A well-formed Request Storage Commitment: its Transaction UID and (class, instance) references."""

    transaction_uid: str
    references: list[tuple[str, str]]


def parse_request(event: Event) -> Request:
    """The request of an N-ACTION event, or :class:`Malformed` with the status that says what is wrong."""
    request = cast(N_ACTION, event.request)
    if str(request.RequestedSOPInstanceUID) != WELL_KNOWN_INSTANCE:
        raise Malformed(NO_SUCH_SOP_INSTANCE, f"Requested SOP Instance must be {WELL_KNOWN_INSTANCE}")
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        raise Malformed(NO_SUCH_ACTION, "Action Type ID must be 1")
    try:
        info = event.action_information
        transaction_uid = info.get("TransactionUID")
        sequence = info.get("ReferencedSOPSequence")
        items = list(sequence) if sequence is not None else []
        references = [(item.get("ReferencedSOPClassUID"), item.get("ReferencedSOPInstanceUID")) for item in items]
    except (AttributeError, ValueError, KeyError, TypeError, EOFError, NotImplementedError) as exc:
        raise Malformed(INVALID_ARGUMENT_VALUE, "Action Information cannot be decoded") from exc
    if not is_valid_uid(str(transaction_uid) if transaction_uid is not None else None):
        raise Malformed(INVALID_ARGUMENT_VALUE, "(0008,1195) Transaction UID missing or invalid")
    if not references:
        raise Malformed(INVALID_ARGUMENT_VALUE, "(0008,1199) Referenced SOP Sequence missing or empty")
    if len(references) > MAX_REFERENCES:
        raise Malformed(RESOURCE_LIMITATION, f"more than {MAX_REFERENCES} references: split the request")
    checked = []
    for number, (sop_class, sop_instance) in enumerate(references, 1):
        if not (is_valid_uid(_text(sop_class)) and is_valid_uid(_text(sop_instance))):
            raise Malformed(INVALID_ARGUMENT_VALUE, f"(0008,1199) item {number}: no valid SOP Class/Instance UID")
        checked.append((_text(sop_class), _text(sop_instance)))
    return Request(str(transaction_uid), checked)


def _text(value: Any) -> str:
    return str(value) if value is not None else ""


def check(references: list[tuple[str, str]], site: Site) -> dict[str, list[list[Any]]]:
    """Which references the node commits to for a device of ``site``, and why each other one fails.

    ``{"committed": [[class, instance], ...], "failed": [[class, instance, reason], ...]}``, in request order.
    """
    rows: dict[str, dict[str, Any]] = {}
    uids = sorted({instance for _, instance in references})
    fields = ("sop_instance_uid", "sop_class_uid", "sha256", "storage_key", "tier", "series__study__site_id")
    # an instance of a study in the trash is not held for the modality: it fails as a missing one does
    for start in range(0, len(uids), 500):
        chunk = Instance.objects.filter(
            sop_instance_uid__in=uids[start : start + 500], series__study__trashed_at__isnull=True
        ).values(*fields)
        rows.update((str(row["sop_instance_uid"]), dict(row)) for row in chunk)
    intact: dict[str, bool] = {}
    committed: list[list[Any]] = []
    failed: list[list[Any]] = []
    for sop_class, sop_instance in references:
        row = rows.get(sop_instance)
        reason: FailureReason | None = None
        if row is None or row["series__study__site_id"] != site.pk:
            supported = sop_class in STORAGE_CLASSES
            reason = (
                FailureReason.NO_SUCH_OBJECT_INSTANCE if supported else FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED
            )
        elif row["sop_class_uid"] != sop_class:
            reason = FailureReason.CLASS_INSTANCE_CONFLICT
        else:
            if sop_instance not in intact:
                intact[sop_instance] = rehashes(row["tier"], row["storage_key"], row["sha256"])
            if not intact[sop_instance]:
                reason = FailureReason.PROCESSING_FAILURE
        if reason is None:
            committed.append([sop_class, sop_instance])
        else:
            failed.append([sop_class, sop_instance, int(reason)])
    return {"committed": committed, "failed": failed}


def rehashes(tier: str, key: str, sha256: str) -> bool:
    """Whether the stored object at ``key`` of ``tier`` still has the SHA-256 taken at ingest."""
    digest = hashlib.sha256()
    try:
        with get_storage(tier).open(key) as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
    except Exception as exc:  # noqa: BLE001 - any backend's read failure is a failure to commit, reported as 0x0110
        log.warning("storage commitment: stored object %s cannot be read: %s", key, exc)
        return False
    if not hmac.compare_digest(digest.hexdigest(), sha256):
        log.error("storage commitment: stored object %s no longer matches its SHA-256", key)
        return False
    return True


def event_information(transaction_uid: str, result: dict[str, list[list[Any]]], ae_title: str) -> tuple[int, Dataset]:
    """The Event Type ID and Event Information of the report (PS3.4 J.3.3, Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.RetrieveAETitle = ae_title
    if result["committed"]:
        ds.ReferencedSOPSequence = [_item(c, i) for c, i in result["committed"]]
    if result["failed"]:
        ds.FailedSOPSequence = [_item(c, i, reason) for c, i, reason in result["failed"]]
    return (FAILURES_EXIST if result["failed"] else ALL_COMMITTED), ds


def _item(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


class CommitmentSCP:
    """Answers N-ACTION requests of the Storage Commitment Push Model and hands them to its :class:`Deliverer`."""

    def __init__(self, ae_title: str) -> None:
        self.deliverer = Deliverer(ae_title)

    def on_n_action(self, session: Session | None, event: Event) -> tuple[int | Dataset, Dataset | None]:
        """The N-ACTION-RSP status; a request taken is checked on the deliverer's pool and reported after it."""
        if session is None:
            return status_dataset(NOT_AUTHORIZED, "association not authorized"), None
        detail = session.detail("storage commitment", service="N-ACTION")
        device = session.device
        reason = session.refusal(device is not None and device.may_store, "ask for storage commitment")
        if device is None or reason is not None:
            reason = reason or "unknown device"
            session.audit("storage_commitment", detail, "denied", status=f"0x{NOT_AUTHORIZED:04X}", reason=reason)
            return status_dataset(NOT_AUTHORIZED, reason), None
        try:
            request = parse_request(event)
        except Malformed as exc:
            session.audit("storage_commitment", detail, "failure", status=f"0x{exc.status:04X}", reason=str(exc))
            return status_dataset(exc.status, str(exc)), None
        detail.update(transaction_uid=request.transaction_uid, instances=len(request.references))
        try:
            commitment = self.take(session, device, request, detail)
        except Malformed as exc:
            session.audit("storage_commitment", detail, "failure", status=f"0x{exc.status:04X}", reason=str(exc))
            return status_dataset(exc.status, str(exc)), None
        except DatabaseError as exc:
            close_old_connections()
            log.warning("storage commitment from %s not taken: %s", session.calling_ae, exc)
            session.audit(
                "storage_commitment", detail, "failure", status=f"0x{PROCESSING_FAILURE:04X}", reason=str(exc)[:200]
            )
            return status_dataset(PROCESSING_FAILURE, "the index is not available"), None
        serve_reports(event.assoc)
        self.deliverer.submit(commitment.pk, event.assoc)
        return SUCCESS, None

    def take(
        self, session: Session, device: DicomDevice, request: Request, detail: dict[str, Any]
    ) -> StorageCommitment:
        """Write the request, claimed by this process for its first delivery, and its audit record in one commit.

        :class:`Malformed` (0x0213) when the device already has :data:`MAX_PENDING_PER_DEVICE` requests
        not yet delivered. A Transaction UID used before is kept as a ``reused`` request whose every
        reference fails with 0x0131; the index allows one request that is not ``reused`` per Transaction
        UID, so two requests racing with the same one cannot both be taken as new.
        """
        with transaction.atomic():
            DicomDevice.objects.select_for_update().filter(pk=device.pk).first()  # one request of a device at a time
            pending = StorageCommitment.objects.filter(device=device, state=StorageCommitment.State.PENDING).count()
            if pending >= MAX_PENDING_PER_DEVICE:
                raise Malformed(
                    RESOURCE_LIMITATION,
                    f"{pending} requests of this device not yet reported: wait for their reports",
                )
            fields: dict[str, Any] = {
                "transaction_uid": request.transaction_uid,
                "device": device,
                "calling_ae": session.calling_ae,
                "peer_address": session.host,
                "references": [list(r) for r in request.references],
                "next_attempt_at": timezone.now() + self.deliverer.lease,
            }
            duplicate = StorageCommitment.objects.filter(transaction_uid=request.transaction_uid).exists()
            commitment = None
            if not duplicate:
                try:
                    with transaction.atomic():
                        commitment = StorageCommitment.objects.create(**fields)
                except IntegrityError:  # another request with this Transaction UID was taken meanwhile
                    duplicate = True
            if commitment is None:  # PS3.4 J.3.3: every reference of a reused Transaction UID fails with 0x0131
                reason = int(FailureReason.DUPLICATE_TRANSACTION_UID)
                result = {"committed": [], "failed": [[c, i, reason] for c, i in request.references]}
                commitment = StorageCommitment.objects.create(**fields, reused=True, result=result)
            record(
                "storage_commitment",
                session.request(),
                actor=f"AE:{session.calling_ae}",
                detail={**detail, "commitment": commitment.pk, "duplicate": duplicate, "status": "0x0000"},
            )
        return commitment


class DeliveryFailed(Exception):
    """The report could not be delivered this time (the reason is the message)."""


class Deliverer:
    """Checks pending commitments and delivers their reports.

    :meth:`submit` hands a request just taken to a pool of :data:`CHECK_WORKERS`
    threads; :meth:`start` runs the retry loop in a thread.
    """

    #: How long a claim on a row lasts: longer than a check and a delivery take.
    lease = timedelta(minutes=10)
    #: Delay after the 1st, 2nd... failed delivery; the last one repeats.
    retry_delays: tuple[float, ...] = (10, 30, 60, 300, 900, 1800, 3600)
    #: A request not delivered this long after it came is given up (``expired``).
    max_age = timedelta(days=1)
    poll_seconds = 5.0
    #: How long the requester has to answer a report on its own association before a new one is tried.
    same_association_seconds = 30.0
    #: How long a new association to the device may take to connect (TCP), as for C-MOVE destinations.
    connect_seconds = 10.0

    def __init__(self, ae_title: str) -> None:
        self.ae_title = ae_title
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.pool = ThreadPoolExecutor(max_workers=CHECK_WORKERS, thread_name_prefix="commitment-check")
        self.stopped = False

    def start(self) -> None:
        self.stopping.clear()
        if self.stopped:  # restarted after stop(): a new pool
            self.stopped = False
            self.pool = ThreadPoolExecutor(max_workers=CHECK_WORKERS, thread_name_prefix="commitment-check")
        self.thread = threading.Thread(target=self.loop, name="commitment-retry", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop the retries and the pool; requests not yet checked keep their claim and are retried after it."""
        self.stopping.set()
        self.stopped = True
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.thread is not None:
            self.thread.join(timeout=30)

    def submit(self, pk: int, assoc: Association) -> None:
        """Check and report a request just taken on ``assoc``, on the pool (queued while both workers are busy)."""
        try:
            self.pool.submit(self.deliver_claimed, pk, assoc)
        except RuntimeError as exc:  # the pool is shut down: the row keeps its claim and is retried after it
            log.warning("storage commitment %s left to the retries: %s", pk, exc)

    def loop(self) -> None:
        while not self.stopping.wait(self.poll_seconds):
            try:
                self.run_due()
            except DatabaseError as exc:  # the index is away for now: the rows wait
                log.warning("storage commitment retry: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the one retry thread must outlive any fault of one run
                log.error("storage commitment retry failed: %s", type(exc).__name__)
            finally:
                connections.close_all()

    def run_due(self, limit: int = 20) -> int:
        """Deliver up to ``limit`` pending reports that are due, each claimed first; how many were tried."""
        close_old_connections()
        due = StorageCommitment.objects.filter(
            state=StorageCommitment.State.PENDING, next_attempt_at__lte=timezone.now()
        ).order_by("next_attempt_at")
        tried = 0
        for pk in list(due.values_list("pk", flat=True)[:limit]):
            if self.claim(pk):
                try:
                    self.deliver(StorageCommitment.objects.select_related("device").get(pk=pk), None)
                except DatabaseError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one row's fault must not stop the others
                    log.error("storage commitment %s: retry failed: %s", pk, type(exc).__name__)
                tried += 1
        return tried

    def claim(self, pk: int) -> bool:
        """Take a due row for this process until the lease ends (one conditional UPDATE: one winner)."""
        now = timezone.now()
        return bool(
            StorageCommitment.objects.filter(
                pk=pk, state=StorageCommitment.State.PENDING, next_attempt_at__lte=now
            ).update(next_attempt_at=now + self.lease)
        )

    def deliver_claimed(self, pk: int, assoc: Association) -> None:
        """First delivery of a request just taken on ``assoc`` (claimed at creation); runs on the pool.

        The claim is renewed first; if it ran out while the request waited for a
        worker, the request is the retry loop's now and is left to it.
        """
        try:
            now = timezone.now()
            renewed = StorageCommitment.objects.filter(
                pk=pk, state=StorageCommitment.State.PENDING, next_attempt_at__gt=now
            ).update(next_attempt_at=now + self.lease)
            if renewed:
                self.deliver(StorageCommitment.objects.select_related("device").get(pk=pk), assoc)
        except DatabaseError as exc:  # left pending: the retry loop takes it up when the claim ends
            log.warning("storage commitment %s: %s", pk, exc)
        except Exception as exc:  # noqa: BLE001 - a worker of the pool must outlive any one request
            log.error("storage commitment %s: first delivery failed: %s", pk, type(exc).__name__)
        finally:
            connections.close_all()

    def deliver(self, commitment: StorageCommitment, assoc: Association | None) -> None:
        """Check (once) and report ``commitment``: on ``assoc`` if it can carry it, else on a new association.

        Any fault other than the index's (a device row the node cannot use, a
        bug) counts as a failed attempt, so the request backs off and expires
        rather than stopping the thread that delivers it.
        """
        via, destination, event_type = "new association", "", 0
        try:
            if commitment.result is None:
                site = commitment.device.site if commitment.device is not None else None
                references = [(c, i) for c, i in commitment.references]
                commitment.result = check(references, site) if site else _none(commitment)
                commitment.save(update_fields=["result"])
            event_type, info = event_information(commitment.transaction_uid, commitment.result, self.ae_title)
            via, destination = "same association", str(assoc.requestor.address) if assoc is not None else ""
            status = self.report_via(assoc, event_type, info) if assoc is not None else None
            if status not in (None, SUCCESS):
                log.info("storage commitment report refused on the requesting association: 0x%04X", status)
            if status != SUCCESS:  # the requester released it, could not take the report there, or refused it there
                via = "new association"
                host, port = self.destination(commitment)
                destination = f"{host}:{port}"
                status = self.send_new(commitment, host, port, event_type, info)
            if status != SUCCESS:
                raise DeliveryFailed(f"N-EVENT-REPORT answered 0x{status:04X}")
        except DeliveryFailed as exc:
            self.failed(commitment, via, destination, event_type, str(exc))
            return
        except DatabaseError:
            raise
        except Exception as exc:  # noqa: BLE001 - see above; the type only is logged (no PHI in logs)
            log.error("storage commitment %s: delivery failed: %s", commitment.pk, type(exc).__name__)
            self.failed(commitment, via, destination, event_type, f"internal error ({type(exc).__name__})")
            return
        commitment.attempts += 1
        changes = {"state": StorageCommitment.State.DELIVERED, "delivered_at": timezone.now(), "last_error": ""}
        self.settle(commitment, changes, "success", via, destination, event_type, status="0x0000")

    def report_via(self, assoc: Association, event_type: int, info: Dataset) -> int | None:
        """Have the requesting association's own thread send the report; the requester's status, or None.

        The report is put on the association's message queue, so that its
        reactor serves it between requests (:func:`serve_reports`): nothing
        else reads that queue meanwhile. None when the association cannot carry
        it (closed, or the node is not the SCP of its Storage Commitment
        context), when it ends before the report is taken, or when no answer
        comes in time.
        """
        contexts = [
            cx for cx in assoc.accepted_contexts if str(cx.abstract_syntax) == StorageCommitmentPushModel and cx.as_scp
        ]
        if not contexts or not assoc.is_established:
            return None
        context = contexts[0]
        syntax = context.transfer_syntax[0]
        data = encode(info, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated) or b""
        report = Report(cast(int, context.context_id), event_type, data, self.same_association_seconds)
        assoc.dimse.msg_queue.put((report.context_id, report))  # type: ignore[arg-type]
        start = time.monotonic()
        give_up = start + 3 * self.same_association_seconds  # taken but never finished: the association is stuck
        while not report.done.wait(0.05):
            late = time.monotonic() > start + self.same_association_seconds
            if (late or not assoc.is_established) and report.cancel():
                return None  # never taken: the reactor ended or stayed busy
            if time.monotonic() > give_up:
                return None
        return report.status

    def send(self, assoc: Association, event_type: int, info: Dataset) -> int:
        """Send the report on an association of our own; the peer's status."""
        try:
            status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        except (RuntimeError, ValueError, OSError) as exc:
            raise DeliveryFailed(f"not sent: {exc}") from exc
        if "Status" not in status:
            raise DeliveryFailed("no N-EVENT-REPORT-RSP (timeout, abort or invalid response)")
        return int(status.Status)

    def send_new(self, commitment: StorageCommitment, host: str, port: int, event_type: int, info: Dataset) -> int:
        """Open an association to the device as SCP of Storage Commitment (role selection) and send the report."""
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.connection_timeout = self.connect_seconds  # an unreachable device must not hold the retry thread for long
        ae.add_requested_context(StorageCommitmentPushModel, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        assoc = ae.associate(host, port, ae_title=commitment.calling_ae, ext_neg=[role])  # type: ignore[list-item]
        if not assoc.is_established:
            raise DeliveryFailed(f"association to {commitment.calling_ae} at {host}:{port} not established")
        try:
            if not any(
                str(cx.abstract_syntax) == StorageCommitmentPushModel and cx.as_scp for cx in assoc.accepted_contexts
            ):
                raise DeliveryFailed("the device did not accept the SCP role of Storage Commitment")
            return self.send(assoc, event_type, info)
        finally:
            if assoc.is_established:
                assoc.release()
            else:
                assoc.abort()

    def destination(self, commitment: StorageCommitment) -> tuple[str, int]:
        """Where a new association goes: the device's one address, else where the request came from; its port."""
        device = commitment.device
        if device is None or not device.enabled:
            raise DeliveryFailed("the device is no longer registered or enabled")
        if device.port is None:
            raise DeliveryFailed("the device has no port to send the report to")
        host = commitment.peer_address
        if device.host:
            network = parse_network(device.host)
            if network.num_addresses == 1:
                host = str(network.network_address)
        return host, device.port

    def failed(self, commitment: StorageCommitment, via: str, destination: str, event_type: int, error: str) -> None:
        """Count a failed attempt and set the next one, or give the request up when it is too old."""
        attempts = commitment.attempts + 1
        delay = self.retry_delays[min(attempts, len(self.retry_delays)) - 1]
        now = timezone.now()
        expired = now + timedelta(seconds=delay) > commitment.created_at + self.max_age
        changes = {
            "last_error": error[:200],
            "next_attempt_at": now + timedelta(seconds=delay),
            "state": StorageCommitment.State.EXPIRED if expired else StorageCommitment.State.PENDING,
        }
        commitment.attempts = attempts
        log.warning("storage commitment report to %s (%s) failed: %s", commitment.calling_ae, via, error)
        self.settle(commitment, changes, "failure", via, destination, event_type, reason=error[:200], expired=expired)

    def settle(
        self,
        commitment: StorageCommitment,
        changes: dict[str, Any],
        outcome: str,
        via: str,
        destination: str,
        event_type: int,
        **more: Any,
    ) -> None:
        """Write an attempt's outcome and its ``storage_commitment_report`` record in one commit.

        If the index cannot take them, the row keeps its claim until the lease
        ends and the report is sent again then (a repeated report is harmless:
        the requester matches it by Transaction UID).
        """
        result = commitment.result or {"committed": [], "failed": []}  # None: the check itself failed
        failed = result["failed"]
        request = HttpRequest()
        request.META["REMOTE_ADDR"] = destination.rpartition(":")[0] if destination else commitment.peer_address
        detail = {
            "via": "DIMSE",
            "service": "N-EVENT-REPORT",
            "delivery": via,
            "destination": destination,
            "calling_ae": commitment.calling_ae,
            "transaction_uid": commitment.transaction_uid,
            "commitment": commitment.pk,
            "event_type": event_type,
            "committed": len(result["committed"]),
            "failed": len(failed),
            "failure_reasons": {f"0x{reason:04X}": n for reason, n in Counter(f[2] for f in failed).items()},
            "attempt": commitment.attempts,
            **more,
        }
        try:
            with transaction.atomic():
                StorageCommitment.objects.filter(pk=commitment.pk).update(attempts=commitment.attempts, **changes)
                record(
                    "storage_commitment_report",
                    request,
                    actor=f"AE:{commitment.calling_ae}",
                    outcome=outcome,
                    detail=detail,
                )
        except DatabaseError as exc:
            close_old_connections()
            log.error("storage commitment report to %s: outcome not written: %s", commitment.calling_ae, exc)


class Report:
    """A report for a requesting association, put on its message queue so that its own reactor sends it.

    Taken by the reactor (:func:`serve_reports`) or cancelled by the deliverer
    that waits for it, never both.
    """

    def __init__(self, context_id: int, event_type: int, data: bytes, timeout: float) -> None:
        self.context_id = context_id
        self.event_type = event_type
        self.data = data
        self.timeout = timeout
        self.message_id = next(_message_ids) % 65535 + 1
        self.status: int | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._state = "queued"

    def take(self) -> bool:
        return self._move("taken")

    def cancel(self) -> bool:
        return self._move("cancelled")

    def _move(self, state: str) -> bool:
        with self._lock:
            if self._state != "queued":
                return False
            self._state = state
            return True


#: Message IDs of reports, distinct for each report a listener sends.
_message_ids = itertools.count()
#: Requests served only after a report's response, not while it is awaited: they send on the association and wait.
_DEFERRED = (C_GET, C_MOVE, Report)


def serve_reports(assoc: Association) -> None:
    """Make ``assoc``'s reactor send the :class:`Report` objects put on its message queue (once per association).

    It wraps the association's ``_serve_request`` (a pynetdicom 3.0 internal,
    as :func:`archive.dimse.retrieve.serve_retrievals` does), so that reports
    are sent by the association's own thread, one at a time, between the
    requests it serves: no other thread reads the association's messages.
    """
    if getattr(assoc, "_serves_reports", False):
        return
    serve = assoc._serve_request

    def _serve_request(msg: Any, context_id: int) -> None:
        if not isinstance(msg, Report):
            serve(msg, context_id)
            return
        if not msg.take():
            return
        deferred: list[tuple[int, Any]] = []
        try:
            msg.status = report_on(assoc, msg, serve, deferred)
        except Exception as exc:  # noqa: BLE001 - a fault of ours: the report counts as not delivered here
            log.error("storage commitment: report on the requesting association failed: %s", type(exc).__name__)
        finally:
            msg.done.set()
        for cid, request in deferred:
            assoc._serve_request(request, cid)

    assoc._serve_request = _serve_request  # type: ignore[method-assign]
    assoc._serves_reports = True  # type: ignore[attr-defined]


def report_on(assoc: Association, report: Report, serve: Any, deferred: list[tuple[int, Any]]) -> int | None:
    """Send ``report`` from the association's own thread; the requester's status, or None if it cannot be had.

    None when the association is closed or being released, or when no
    response comes within the report's timeout. pynetdicom's
    ``send_n_event_report`` would wait out its DIMSE timeout for a requester
    that released meanwhile (a releasing pynetdicom peer ignores the report),
    and would take any request that comes meanwhile for its response; so this
    sends the request itself and, while it waits for the N-EVENT-REPORT-RSP
    whose Message ID Being Responded To is the report's, serves each request
    that comes (C-ECHO, C-STORE, C-FIND, N-ACTION: ``serve``) or, for those
    that send on the association themselves (C-GET, C-MOVE, another report),
    hands it back in ``deferred`` to be served after.
    """
    if not assoc.is_established or _release_requested(assoc):
        return None
    request = N_EVENT_REPORT()
    request.MessageID = report.message_id
    request.AffectedSOPClassUID = StorageCommitmentPushModel
    request.AffectedSOPInstanceUID = WELL_KNOWN_INSTANCE
    request.EventTypeID = report.event_type
    request.EventInformation = BytesIO(report.data)
    assoc.dimse.send_msg(request, report.context_id)
    deadline = time.monotonic() + report.timeout
    while time.monotonic() < deadline:
        context_id, msg = assoc.dimse.get_msg(block=False)
        if msg is None:
            if not assoc.is_established or _release_requested(assoc) or assoc.acse.is_aborted():
                return None
            time.sleep(0.002)
            continue
        if isinstance(msg, _DEFERRED):
            log.debug("storage commitment: a %s is served after the report", type(msg).__name__)
            deferred.append((cast(int, context_id), msg))
        elif msg.is_valid_request:
            serve(msg, cast(int, context_id))
        elif isinstance(msg, N_EVENT_REPORT) and msg.MessageIDBeingRespondedTo == report.message_id:
            status = getattr(msg, "Status", None)
            return int(status) if status is not None else None
        else:
            log.warning("storage commitment: a %s response to no pending request was ignored", type(msg).__name__)
    return None


def _release_requested(assoc: Association) -> bool:
    """Whether an A-RELEASE-RQ waits for the reactor: peeked, not taken (``acse.is_release_requested`` takes it)."""
    primitive = assoc.dul.peek_next_pdu()
    return isinstance(primitive, A_RELEASE) and primitive.result is None


def _none(commitment: StorageCommitment) -> dict[str, list[list[Any]]]:
    """The result when the device (hence its site) is gone: nothing is committed."""
    reason = int(FailureReason.NO_SUCH_OBJECT_INSTANCE)
    return {"committed": [], "failed": [[c, i, reason] for c, i in commitment.references]}
