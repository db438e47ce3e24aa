"""Every DICOMweb read answers the same bytes after the mover put the objects on the zstd cold tier.

The same requests are made with the objects on ``hot`` and again after a move
to ``cold``: WADO-RS instance, series and study retrieval, frames (stored and
decoded), rendered, bulk data, and the frame fast path. C-GET reads through
the same :meth:`Instance.open_stored`; the README says how the DICOMweb and
DIMSE suites are run with every object on a zstd tier.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.mover import Mover, plan_moves
from archive.models import ApiToken, Instance
from tests.archive.dicomweb.test_fastpath import call
from tests.conftest import stow

pytestmark = pytest.mark.django_db

DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
DECODED = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def answers(api: Client, token: str, urls: dict[str, tuple[str, str]]) -> dict[str, tuple[int, bytes]]:
    out = {}
    for name, (url, accept) in urls.items():
        response = api.get(url, HTTP_ACCEPT=accept)
        out[name] = (response.status_code, body(response))
    for name in ("frame", "cine frame"):
        fast = call(urls[name][0], token=token, accept="application/octet-stream")
        out[name + " (fast path)"] = (fast.status, fast.body)
        assert not fast.by_django
    return out


def test_every_read_answers_the_same_bytes_from_cold_as_from_hot(
    admin_client_token: Client, admin_user: Any, settings: Any
) -> None:
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    settings.PACS_TIER_MOVE_CONCURRENCY = 1  # mover threads cannot write through the test's open transaction
    spec = StudySpec()
    parts = make_series(spec, "CT", count=2, size=128) + make_series(spec, "US", count=1, size=64, frames=20)
    assert stow(admin_client_token, parts).status_code == 200
    ct = Instance.objects.filter(series__modality="CT").select_related("series").first()
    us = Instance.objects.filter(series__modality="US").select_related("series").get()
    assert ct is not None
    base = f"/dicom-web/studies/{spec.study_uid}"
    ct_url = f"{base}/series/{ct.series.series_instance_uid}/instances/{ct.sop_instance_uid}"
    us_url = f"{base}/series/{us.series.series_instance_uid}/instances/{us.sop_instance_uid}"
    urls = {
        "study": (base, DICOM),
        "series": (f"{base}/series/{us.series.series_instance_uid}", DICOM),
        "instance": (ct_url, DICOM),
        "frame": (f"{ct_url}/frames/1", OCTETS),
        "cine frame": (f"{us_url}/frames/17", OCTETS),
        "cine frames": (f"{us_url}/frames/3,9,20", OCTETS),
        "decoded frame": (f"{ct_url}/frames/1", DECODED),
        "rendered": (f"{ct_url}/rendered", "image/png"),
        "rendered frame": (f"{us_url}/frames/5/rendered", "image/jpeg"),
        "bulkdata": (f"{ct_url}/bulkdata/7FE00010", OCTETS),
    }
    _, raw = ApiToken.issue(admin_user, "fast path")
    on_hot = answers(admin_client_token, raw, urls)
    assert all(status == 200 for status, _ in on_hot.values()), {k: s for k, (s, _) in on_hot.items()}
    batch, planned = plan_moves(Instance.objects.all(), "cold")
    assert planned == 3
    assert Mover(batch).run().moved == 3
    assert set(Instance.objects.values_list("tier", flat=True)) == {"cold"}
    on_cold = answers(admin_client_token, raw, urls)
    for name in urls:
        assert on_cold[name] == on_hot[name], name
    for part in parts:
        assert part in on_cold["study"][1] or part in on_cold["series"][1]


def test_an_instance_on_a_tier_no_longer_configured_is_answered_as_unreadable_not_a_500(
    admin_client_token: Client,
) -> None:
    spec = StudySpec()
    assert stow(admin_client_token, make_series(spec, "CT", count=1)).status_code == 200
    row = Instance.objects.select_related("series").get()
    Instance.objects.update(tier="retired")  # a tier taken out of PACS_TIERS while objects were on it
    url = (
        f"/dicom-web/studies/{spec.study_uid}/series/{row.series.series_instance_uid}/instances/{row.sop_instance_uid}"
    )
    for path, accept in ((url + "/frames/1", OCTETS), (url + "/rendered", "image/png"), (url, DICOM)):
        response = admin_client_token.get(path, HTTP_ACCEPT=accept)
        assert response.status_code != 500, path
        assert b"DICM" not in body(response)
