"""The legacy PACS as this node sees it: a Query/Retrieve SCP, spoken to with pynetdicom.

:class:`LegacyPeer` keeps one association for C-FIND and C-MOVE (Study Root)
and opens one per C-GET batch (a C-GET association must propose, with the SCP
role, the storage SOP classes it will receive). Any failure to associate, or
an association that breaks, is a :class:`PeerError`: the run stops and the
ledger keeps what was not done for the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

FIND = StudyRootQueryRetrieveInformationModelFind
MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet
#: Proposed, one presentation context each, for every SOP class a C-GET receives: the legacy PACS then sends each
#: instance in the syntax it holds it in, not transcoded, when it is among these.
GET_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
PENDING = (0xFF00, 0xFF01)


class Matches(list[Dataset]):
    """The matches of a C-FIND; ``cut_short`` when the legacy PACS said it did not send them all."""

    cut_short = False


class PeerError(Exception):
    """The legacy PACS could not be reached, refused the association, or the association broke."""


@dataclass
class RetrieveOutcome:
    """The final response of a C-MOVE or C-GET: its status and sub-operation counts, as the legacy PACS says."""

    status: int = 0xFFFF
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    comment: str = ""

    def describe(self) -> str:
        text = f"status 0x{self.status:04X}, {self.completed} completed, {self.failed} failed, {self.warning} warning"
        return f"{text} ({self.comment})" if self.comment else text


class LegacyPeer:
    """A Study Root Query/Retrieve SCP at ``host:port`` called ``ae_title``; we call as ``calling_ae``."""

    def __init__(self, host: str, port: int, ae_title: str, calling_ae: str, timeout: float = 120.0) -> None:
        self.host, self.port, self.ae_title = host, port, ae_title
        _config.LOG_HANDLER_LEVEL = "none"
        # pynetdicom logs every identifier it sends and receives at INFO: patient names and IDs stay out of the logs.
        logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger("pynetdicom").level))
        self.ae = AE(ae_title=calling_ae)
        self.ae.acse_timeout = self.ae.network_timeout = 30
        self.ae.dimse_timeout = timeout
        self.ae.add_requested_context(FIND)
        self.ae.add_requested_context(MOVE)
        self.assoc: Association | None = None

    def _association(self) -> Association:
        if self.assoc is None or not self.assoc.is_established:
            assoc = self.ae.associate(self.host, self.port, ae_title=self.ae_title, max_pdu=0)
            if not assoc.is_established:
                raise PeerError(f"association with {self.ae_title}@{self.host}:{self.port} {_why(assoc)}")
            self.assoc = assoc
        return self.assoc

    def close(self, abort: bool = False) -> None:
        """Release the association (abort it when a run was interrupted mid-request)."""
        if self.assoc is not None and self.assoc.is_established:
            if abort:
                self.assoc.abort()
            else:
                self.assoc.release()
        self.assoc = None

    def find(self, level: str, keys: dict[str, Any]) -> Matches:
        """The matches of one Study Root C-FIND at ``level`` (keys with empty values are return keys).

        An answer that ends 0xFE00 (matching terminated, as some PACS, Orthanc among them, end an answer they cut
        at their limit) is returned with ``cut_short`` set.
        """
        query = _identifier(level, keys)
        assoc = self._association()
        matches = Matches()
        for status, identifier in assoc.send_c_find(query, FIND):
            if not status:
                raise PeerError(f"C-FIND at {level} level: no response from {self.ae_title} (association broke)")
            code = int(status.Status)
            if code in PENDING:
                if identifier is not None:
                    matches.append(identifier)
            elif code == 0xFE00:
                matches.cut_short = True
            elif code != 0x0000:
                raise PeerError(f"C-FIND at {level} level refused by {self.ae_title}: status 0x{code:04X}")
        return matches

    def move(
        self, level: str, keys: dict[str, Any], destination: str, heartbeat: Callable[[], None]
    ) -> RetrieveOutcome:
        """One Study Root C-MOVE of the matches of ``keys`` to ``destination``."""
        return _final(self._association().send_c_move(_identifier(level, keys), destination, MOVE), heartbeat)

    def get(
        self,
        level: str,
        keys: dict[str, Any],
        sop_classes: list[str],
        on_store: Callable[[Event], Any],
        heartbeat: Callable[[], None],
    ) -> RetrieveOutcome:
        """One Study Root C-GET on an association of its own, each C-STORE sub-operation answered by ``on_store``."""
        ae = AE(ae_title=self.ae.ae_title)
        ae.acse_timeout = ae.network_timeout = 30
        ae.dimse_timeout = self.ae.dimse_timeout
        ae.add_requested_context(GET)
        classes = list(dict.fromkeys(sop_classes))[: 127 // len(GET_SYNTAXES)]
        for sop_class in classes:
            for syntax in GET_SYNTAXES:
                ae.add_requested_context(UID(sop_class), [syntax])
        roles: list[Any] = [build_role(UID(c), scp_role=True) for c in classes]
        assoc = ae.associate(
            self.host,
            self.port,
            ae_title=self.ae_title,
            max_pdu=0,
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        if not assoc.is_established:
            raise PeerError(f"C-GET association with {self.ae_title}@{self.host}:{self.port} {_why(assoc)}")
        try:
            return _final(assoc.send_c_get(_identifier(level, keys), GET), heartbeat)
        finally:
            if assoc.is_established:
                assoc.release()


def _why(assoc: Association) -> str:
    if assoc.is_rejected:
        return "rejected"
    if assoc.is_aborted:
        return "aborted"
    return "could not be established (no answer)"


def _identifier(level: str, keys: dict[str, Any]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _final(responses: Iterator[tuple[Dataset, Dataset | None]], heartbeat: Callable[[], None]) -> RetrieveOutcome:
    outcome = RetrieveOutcome()
    for status, identifier in responses:
        if not status:
            raise PeerError("the retrieve got no final response (the association broke or timed out)")
        code = int(status.Status)
        outcome.status = code
        outcome.completed = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
        outcome.failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
        outcome.warning = int(status.get("NumberOfWarningSuboperations", 0) or 0)
        outcome.comment = str(status.get("ErrorComment", "") or "")
        if code in PENDING:
            heartbeat()
            continue
        if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            value = identifier.FailedSOPInstanceUIDList
            outcome.failed_uids = [str(v) for v in ([value] if isinstance(value, str) else list(value)) if v]
    return outcome
