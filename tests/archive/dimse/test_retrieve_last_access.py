"""C-GET records the last access of the studies it retrieves (for lifecycle rules), and a refusal records none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from archive.dimse.listener import DicomListener
from archive.ingest import lastaccess
from archive.models import Study
from tests.archive.dimse.conftest import JANE, JOHN
from tests.archive.dimse.test_get import c_get

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_memory() -> Iterator[None]:
    lastaccess.forget()
    yield
    lastaccess.forget()


def accessed(uid: str) -> Any:
    return Study.objects.values_list("last_accessed_at", flat=True).get(study_instance_uid=uid)


def test_a_c_get_sets_the_last_access_of_the_study_it_retrieves_only(
    listener: DicomListener,
    qr_archive: dict[str, Any],
) -> None:
    assert accessed(JANE.study_uid) is None
    received, responses = c_get(
        listener.port, "WS1", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}
    )
    assert len(received) == 3 and int(responses[-1][0].Status) == 0x0000
    assert accessed(JANE.study_uid) is not None
    assert accessed(JOHN.study_uid) is None


def test_a_refused_c_get_sets_no_last_access(
    listener: DicomListener,
    qr_archive: dict[str, Any],
) -> None:
    received, responses = c_get(
        listener.port, "WSQ", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": JANE.study_uid}
    )
    assert received == [] and [int(r.Status) for r, _ in responses] == [0x0124]
    assert accessed(JANE.study_uid) is None
