"""Stored bytes per tier: the mover records what an object takes on its new tier; migration 0013 backfills it."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.apps import apps

from archive.costs.usage import cost_report
from archive.ingest.mover import move_instances
from archive.models import Instance, MoveState, TierMove
from archive.storage.registry import get_storage

pytestmark = pytest.mark.django_db

backfill = importlib.import_module("archive.migrations.0011_budgets").stored_sizes_from_ledger


def test_a_move_to_cold_records_the_compressed_size_and_back_to_hot_the_full_size(
    ct_study: dict[str, Any], settings: Any
) -> None:
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    instances = Instance.objects.all()
    part10 = sum(i.size for i in instances)
    move_instances(Instance.objects.all(), "cold")
    cold = get_storage("cold")
    for instance in Instance.objects.all():
        assert instance.tier == "cold"
        assert instance.stored_size == cold.stored_size(instance.storage_key) < instance.size
    tiers = {u.label: u for u in cost_report().tiers}
    assert tiers["cold"].bytes == part10
    assert tiers["cold"].stored == sum(Instance.objects.values_list("stored_size", flat=True))
    assert "hot" not in tiers  # no Tier rows here, and nothing left on hot

    move_instances(Instance.objects.all(), "hot")
    assert all(i.stored_size == i.size for i in Instance.objects.all())


def test_the_migration_fills_stored_sizes_from_the_ledger(ct_study: dict[str, Any], settings: Any) -> None:
    settings.PACS_TIER_MOVE_GRACE_SECONDS = 0
    move_instances(Instance.objects.all(), "cold")
    measured = dict(Instance.objects.values_list("id", "stored_size"))
    first = min(measured)
    Instance.objects.update(stored_size=None)  # as before migration 0013
    TierMove.objects.filter(instance_id=first).update(state=MoveState.FAILED)  # a failed move says nothing
    backfill(apps, None)
    after = dict(Instance.objects.values_list("id", "stored_size"))
    assert after == {**measured, first: None}
    # An instance whose stored size is unknown counts its Part 10 size.
    size = Instance.objects.get(pk=first).size
    cold = {u.label: u for u in cost_report().tiers}["cold"]
    assert cold.stored == sum(v for k, v in measured.items() if k != first) + size
