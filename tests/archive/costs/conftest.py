"""Index rows written directly (no files): a known archive to measure, on a clock the tests control."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from archive.models import Instance, Patient, Series, Site, Study, Tier

GB = 1024**3
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVIL_SITE = '<script>alert("site")</script><img src=x onerror=alert(1)>'

_uids = itertools.count(1)


def uid() -> str:
    return f"2.25.{next(_uids)}"


def make_study(
    site: Site | None,
    days_ago: float,
    modality: str = "CT",
    instances: int = 2,
    size: int = GB // 4,
    tier: str = "hot",
    stored_size: int | None = None,
    now: datetime = NOW,
) -> Study:
    """One study of one series of ``instances`` objects of ``size`` bytes, received ``days_ago`` before ``now``."""
    patient, _ = Patient.objects.get_or_create(patient_id="COST-1", issuer_of_patient_id="")
    study = Study.objects.create(
        study_instance_uid=uid(), patient=patient, site=site, created_at=now - timedelta(days=days_ago)
    )
    series = Series.objects.create(series_instance_uid=uid(), study=study, modality=modality)
    Instance.objects.bulk_create(
        Instance(
            sop_instance_uid=uid(),
            series=series,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            size=size,
            sha256="0" * 64,
            storage_key=f"k/{i}",
            tier=tier,
            stored_size=stored_size,
            metadata="{}",
        )
        for i in range(instances)
    )
    return study


def price_tiers(hot: str = "0.02", cold: str = "0.004", **more: Any) -> None:
    Tier.sync_environment()
    Tier.objects.filter(name="hot").update(
        cost_per_gb_month=Decimal(hot), cost_per_1000_requests=Decimal("0.005"), **more
    )
    Tier.objects.filter(name="cold").update(
        cost_per_gb_month=Decimal(cold), cost_per_gb_retrieved=Decimal("0.01"), cost_per_1000_requests=Decimal("0.05")
    )


@pytest.fixture
def sites(db: Any) -> tuple[Site, Site]:
    a = Site.objects.create(code="a", name="General")
    b = Site.objects.create(code="b", name=EVIL_SITE, cost_tag="research")
    return a, b


@pytest.fixture
def known_archive(sites: tuple[Site, Site]) -> tuple[Site, Site]:
    """Site A: 3 CT studies 10 days old on hot, 1 MR 100 days old on cold (half its size); site B: 2 CT, 5 days.

    Every instance is GB/4 bytes: hot holds 10 objects (2.5 GB), cold 4 (1 GB, 0.5 GB stored).
    """
    a, b = sites
    price_tiers()
    for _ in range(3):
        make_study(a, 10)
    make_study(a, 100, modality="MR", instances=4, tier="cold", stored_size=GB // 8)
    for _ in range(2):
        make_study(b, 5)
    return a, b
