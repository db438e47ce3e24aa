"""The C-GET SCP: Patient Root and Study Root Query/Retrieve (PS3.4 C.4.3), sending on the same association.

An identifier is read as a C-FIND identifier is (:func:`archive.dimse.find.parse_identifier`:
levels, unique keys, QIDO-RS matching) and selects the instances of the
matching patients, studies, series or instances among the studies of the
calling device's site (:func:`archive.access.site_studies`): another site's
study matches nothing. Each selected instance is one C-STORE sub-operation on
the requesting association, on a storage context the peer accepted with the
SCP role (SCP/SCU role selection). The data set sent is the stored one, read
from its Part 10 object, in the stored transfer syntax when the peer accepted
it; only when it accepted none of that syntax's contexts is the object
transcoded to Explicit VR Little Endian
(:func:`archive.dicom.transcode.to_explicit_little_endian`).

Statuses (PS3.4 C.4.3.1.4): each sub-operation 0xFF00 Pending with the
remaining, completed, failed and warning counts; done 0x0000, or 0xB000 with
(0008,0058) Failed SOP Instance UID List when some sub-operations failed,
0xA702 when all did (pynetdicom's service class counts the C-STORE
responses); a C-CANCEL 0xFE00 with the list so far; a device that may not
retrieve, or an unknown caller, 0x0124 (Refused: Not authorized); an
identifier without a valid level or unique keys 0xA900; a malformed value
0xC000; the index unavailable 0xA700. Every C-GET, answered or refused, leaves
one ``retrieve`` record (the action WADO-RS records) with ``via: DIMSE``, the
peer's AE title and address, the level and the number of instances, written
before the first sub-operation; a C-CANCEL adds a ``cancelled`` record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pydicom
from django.db import DatabaseError, close_old_connections
from django.db.models import QuerySet
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from archive.access import site_studies
from archive.dicom.transcode import TranscodeError, to_explicit_little_endian
from archive.dimse.find import CANCELLED, UNABLE_TO_PROCESS, Refused, parse_identifier, text_of
from archive.dimse.statuses import NOT_AUTHORIZED, OUT_OF_RESOURCES, status_dataset
from archive.dimse.store import Session
from archive.models import Instance, Site
from archive.query.matching import BadQuery, Level, Query, matching_queryset
from audit.trail import record

log = logging.getLogger(__name__)

PENDING = 0xFF00  # Pending: sub-operations are continuing
#: The C-GET information models served, each with the C-FIND model whose identifiers it shares, and its name.
MODELS: dict[str, tuple[str, str]] = {
    str(PatientRootQueryRetrieveInformationModelGet): (str(PatientRootQueryRetrieveInformationModelFind), "patient"),
    str(StudyRootQueryRetrieveInformationModelGet): (str(StudyRootQueryRetrieveInformationModelFind), "study"),
}
#: At most this many sub-operations per C-GET: the counts are US (PS3.7 9.3.3), and a bigger one is refused.
MAX_SUBOPERATIONS = 65535
#: The path from an instance to each level's row, to select the instances of the matches.
INSTANCE_PATH = {
    Level.PATIENT: "series__study__patient__in",
    Level.STUDY: "series__study__in",
    Level.SERIES: "series__in",
    Level.INSTANCE: "pk__in",
}


def selected_instances(site: Site, query: Query) -> QuerySet[Instance]:
    """The instances of the query's matches among the studies of ``site``, in study, series and instance order."""
    matches = matching_queryset(site_studies(site), query).values("pk")
    return (
        Instance.objects.select_related("series__study")
        .filter(**{INSTANCE_PATH[query.level]: matches})
        .filter(series__study__in=site_studies(site).values("pk"))
        .order_by("series__study_id", "series_id", "instance_number", "pk")
    )


def accepted_syntaxes(event: Event, sop_class: str) -> set[str]:
    """The transfer syntaxes of the contexts on which the node may send ``sop_class`` C-STOREs to the peer."""
    return {
        str(ts)
        for cx in event.assoc.accepted_contexts
        if str(cx.abstract_syntax) == sop_class and cx.as_scu
        for ts in cx.transfer_syntax
    }


def undeliverable(instance: Instance) -> Dataset:
    """A data set pynetdicom cannot send (no File Meta): its C-STORE sub-operation fails and lists its UID."""
    ds = Dataset()
    ds.SOPClassUID = instance.sop_class_uid
    ds.SOPInstanceUID = instance.sop_instance_uid
    return ds


def stored_dataset(instance: Instance, syntaxes: set[str]) -> Dataset:
    """The stored data set of ``instance`` as it is sent: as stored, or Explicit VR Little Endian if it must be.

    An object that cannot be read or transcoded, or that no accepted context
    can carry, becomes :func:`undeliverable`.
    """
    if instance.transfer_syntax_uid not in syntaxes and not syntaxes:
        return undeliverable(instance)
    try:
        with instance.open_stored() as fh:
            if instance.transfer_syntax_uid in syntaxes:
                return pydicom.dcmread(fh)
            with to_explicit_little_endian(fh) as converted:
                ds = pydicom.dcmread(converted)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            return ds
    except (OSError, InvalidDicomError, TranscodeError, ValueError, EOFError) as exc:
        log.warning("C-GET: instance %s not sent: %s", instance.sop_instance_uid, exc)
        return undeliverable(instance)


class GetSCP:
    """Answers C-GET requests in the Patient Root and Study Root models."""

    def on_c_get(self, session: Session | None, event: Event) -> Iterator[int | tuple[int | Dataset, Dataset | None]]:
        """The number of sub-operations, then one (status, data set) per instance to send (pynetdicom's protocol).

        A refusal is one sub-operation answered with the refusal status.
        """
        if session is None:
            yield 1
            yield status_dataset(NOT_AUTHORIZED, "association not authorized"), None
            return
        model = str(event.request.AffectedSOPClassUID)  # type: ignore[union-attr]
        detail = session.detail(MODELS[model][1] if model in MODELS else model, service="C-GET")
        device = session.device
        reason = session.refusal(device is not None and device.may_retrieve, "retrieve (C-GET)")
        if device is None or reason is not None:
            reason = reason or "unknown device"
            self.audit(session, detail, "denied", status=f"0x{NOT_AUTHORIZED:04X}", reason=reason)
            yield 1
            yield status_dataset(NOT_AUTHORIZED, reason), None
            return
        try:
            identifier = event.identifier
            query = parse_identifier(identifier, MODELS[model][0])
            detail["level"] = query.level.query_retrieve_level
            detail["query"] = {str(e.keyword)[:64]: text_of(e)[:64] for e in list(identifier)[:16] if e.VR != "SQ"}
            instances = list(selected_instances(device.site, query)[: MAX_SUBOPERATIONS + 1])
            if len(instances) > MAX_SUBOPERATIONS:
                raise Refused(OUT_OF_RESOURCES, f"more than {MAX_SUBOPERATIONS} instances: narrow the request")
            studies = sorted({i.series.study.study_instance_uid for i in instances}) if len(instances) < 100 else []
            record(
                "retrieve",
                session.request(),
                actor=f"AE:{session.calling_ae}",
                study_instance_uid=studies[0] if len(studies) == 1 else "",
                detail={**detail, "instances": len(instances)},
            )
        except Refused as exc:
            yield from self.refuse(session, detail, exc.status, str(exc))
            return
        except BadQuery as exc:
            yield from self.refuse(session, detail, UNABLE_TO_PROCESS, str(exc))
            return
        except DatabaseError as exc:
            close_old_connections()
            log.warning("C-GET from %s failed: %s", session.calling_ae, exc)
            yield from self.refuse(session, detail, OUT_OF_RESOURCES, "the index is not available")
            return
        except (AttributeError, ValueError, KeyError, TypeError, EOFError) as exc:  # an undecodable identifier
            yield from self.refuse(session, detail, UNABLE_TO_PROCESS, "the identifier cannot be decoded", str(exc))
            return
        yield len(instances)
        syntaxes: dict[str, set[str]] = {}
        for sent, instance in enumerate(instances):
            if event.is_cancelled:
                self.audit(session, detail, "cancelled", instances=len(instances), sent=sent)
                yield CANCELLED, None
                return
            accepted = syntaxes.setdefault(instance.sop_class_uid, accepted_syntaxes(event, instance.sop_class_uid))
            yield PENDING, stored_dataset(instance, accepted)

    def refuse(
        self, session: Session, detail: dict[str, Any], status: int, comment: str, reason: str = ""
    ) -> Iterator[int | tuple[int | Dataset, Dataset | None]]:
        self.audit(session, detail, "failure", status=f"0x{status:04X}", reason=(reason or comment)[:200])
        yield 1
        yield status_dataset(status, comment), None

    def audit(self, session: Session, detail: dict[str, Any], outcome: str, **more: Any) -> None:
        """The ``retrieve`` record of a refused or cancelled C-GET."""
        session.audit("retrieve", detail, outcome, **more)
