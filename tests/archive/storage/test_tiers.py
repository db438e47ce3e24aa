"""Tiers: from the environment, built in, or added in admin; an unknown or unreachable tier is refused clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client

from archive.models import LifecycleRule, Tier
from archive.storage import registry
from archive.storage.filesystem import FileSystemStorage
from archive.storage.zstd import ZstdFileSystemStorage
from tests.mfa_support import force_verified_login


@pytest.fixture
def admin_browser(admin_user: User) -> Client:
    client = Client()
    force_verified_login(client, admin_user)
    return client


def test_the_embedded_default_has_a_hot_folder_and_a_zstd_cold_folder_beside_it(isolated_storage: Path) -> None:
    hot, cold = registry.get_storage("hot"), registry.get_storage("cold")
    assert isinstance(hot, FileSystemStorage) and not isinstance(hot, ZstdFileSystemStorage)
    assert isinstance(cold, ZstdFileSystemStorage)
    assert hot.root == isolated_storage / "hot" and cold.root == isolated_storage / "cold"


@pytest.mark.django_db
def test_a_tier_nobody_configured_is_refused_by_name() -> None:
    with pytest.raises(registry.UnknownTier, match="'glacier'"):
        registry.get_storage("glacier")


@pytest.mark.django_db
def test_a_tier_added_in_the_catalog_is_used_by_name(tmp_path: Path) -> None:
    (tmp_path / "nas").mkdir()
    tier = Tier(name="nas", backend="zstd", root=str(tmp_path / "nas"))
    tier.full_clean()
    tier.save()
    storage = registry.get_storage("nas")
    assert isinstance(storage, ZstdFileSystemStorage) and storage.root == tmp_path / "nas"


@pytest.mark.django_db
def test_a_tier_whose_folder_does_not_exist_is_refused_when_saved(tmp_path: Path) -> None:
    tier = Tier(name="nas", backend="filesystem", root=str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="cannot be reached.*does not exist"):
        tier.full_clean()


@pytest.mark.django_db
def test_an_s3_tier_whose_endpoint_does_not_answer_is_refused_when_saved(tmp_path: Path) -> None:
    tier = Tier(name="warm", backend="s3", bucket="b", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    with pytest.raises(ValidationError, match="cannot be reached"):
        tier.full_clean()


@pytest.mark.django_db
def test_a_rule_to_a_tier_that_does_not_exist_is_refused_when_saved() -> None:
    rule = LifecycleRule(name="old CT", after_days=90, modality="CT", target_tier="glacier")
    with pytest.raises(ValidationError, match="no storage tier named 'glacier'"):
        rule.full_clean()


@pytest.mark.django_db
def test_a_rule_to_an_unreachable_tier_is_refused_when_saved(tmp_path: Path, settings: Any) -> None:
    settings.PACS_TIERS = {"usb": {"backend": "filesystem", "root": str(tmp_path / "unplugged")}}
    registry.forget()
    rule = LifecycleRule(name="old CT", after_days=90, target_tier="usb")
    with pytest.raises(ValidationError, match="cannot be reached"):
        rule.full_clean()


@pytest.mark.django_db
def test_the_environment_tiers_are_listed_in_admin_and_their_location_is_not_edited_there(
    admin_browser: Client, tmp_path: Path, settings: Any
) -> None:
    settings.PACS_TIERS = {"warm": {"backend": "s3", "bucket": "pacs-warm", "storage_class": "STANDARD_IA"}}
    page = admin_browser.get("/admin/archive/tier/")
    assert page.status_code == 200
    assert {t.name: t.backend for t in Tier.objects.all()} == {"hot": "filesystem", "cold": "zstd", "warm": "s3"}
    warm = Tier.objects.get(name="warm")
    assert warm.from_environment and warm.storage_class == "STANDARD_IA"
    change = admin_browser.get(f"/admin/archive/tier/{warm.pk}/change/").content.decode()
    assert 'name="bucket"' not in change and 'name="cost_per_gb_month"' in change


@pytest.mark.django_db
def test_admin_refuses_a_tier_it_cannot_reach_and_a_rule_to_a_tier_that_does_not_exist(
    admin_browser: Client, tmp_path: Path
) -> None:
    base = {"backend": "filesystem", "retrieval": "immediate", "description": ""}
    costs = {"cost_per_gb_month": "0.02", "cost_per_gb_retrieved": "0", "cost_per_1000_requests": "0"}
    page = admin_browser.post(
        "/admin/archive/tier/add/", {"name": "nas", "root": str(tmp_path / "missing"), **base, **costs}
    )
    assert page.status_code == 200 and b"The tier cannot be reached" in page.content
    assert not Tier.objects.filter(name="nas").exists()
    rule = {"name": "old CT", "enabled": "on", "priority": "100", "basis": "receipt", "after_days": "90"}
    rule["target_tier"] = "glacier"
    page = admin_browser.post("/admin/archive/lifecyclerule/add/", rule)
    assert page.status_code == 200 and b"Select a valid choice" in page.content
    assert not LifecycleRule.objects.exists()
    page = admin_browser.post("/admin/archive/lifecyclerule/add/", rule | {"target_tier": "cold"})
    assert page.status_code == 302 and LifecycleRule.objects.get().target_tier == "cold"
