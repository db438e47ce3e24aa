"""DIMSE status codes (PS3.4 B.2.3, PS3.7 C) the node answers with."""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from archive.ingest.store import Outcome

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
DOES_NOT_MATCH = 0xA900  # Error: Data Set does not match SOP Class (or the request's UIDs)
NOT_AUTHORIZED = 0x0124  # Refused: Not authorized
CONFLICT = 0xC111  # Error: Cannot understand, coded like STOW-RS's 0111 "Duplicate SOP Instance"
#: C-STORE status of each refusal from the ingest path.
STATUS = {
    Outcome.INVALID: 0xC000,  # Error: Cannot understand
    Outcome.CONFLICT: CONFLICT,
    Outcome.FORBIDDEN: NOT_AUTHORIZED,
    Outcome.MISMATCH: DOES_NOT_MATCH,
    Outcome.UNAVAILABLE: OUT_OF_RESOURCES,
}


def status_dataset(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status
