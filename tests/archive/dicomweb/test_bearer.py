"""Bearer tokens on DICOMweb: usable tokens pass, revoked, expired and orphaned ones stop at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from archive.models import ApiToken

SEARCH = "/dicom-web/studies"


@pytest.fixture
def issued(reader: User) -> tuple[ApiToken, Client]:
    token, raw = ApiToken.issue(reader, "test")
    return token, Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


def test_it_accepts_a_usable_token_and_records_its_use(issued: tuple[ApiToken, Client]) -> None:
    token, client = issued
    assert client.get(SEARCH).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None and timezone.now() - token.last_used_at < timedelta(seconds=10)


def test_it_touches_last_use_at_most_once_a_minute(issued: tuple[ApiToken, Client]) -> None:
    token, client = issued
    recent = timezone.now() - timedelta(seconds=30)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=recent)
    assert client.get(SEARCH).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == recent


@pytest.mark.parametrize(
    "change",
    [
        {"revoked": True},
        {"expires_at": timezone.now() - timedelta(seconds=1)},
    ],
    ids=["revoked", "expired"],
)
def test_it_refuses_a_token_from_the_next_request_after_it_stops_being_usable(
    issued: tuple[ApiToken, Client], change: dict[str, Any]
) -> None:
    token, client = issued
    assert client.get(SEARCH).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(**change)
    response = client.get(SEARCH)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_accepts_a_token_that_expires_later(issued: tuple[ApiToken, Client]) -> None:
    token, client = issued
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() + timedelta(minutes=5))
    assert client.get(SEARCH).status_code == 200


def test_it_refuses_the_token_of_a_deactivated_user(issued: tuple[ApiToken, Client], reader: User) -> None:
    _, client = issued
    User.objects.filter(pk=reader.pk).update(is_active=False)
    assert client.get(SEARCH).status_code == 401


@pytest.mark.parametrize("header", ["Bearer pacs_unknown", "Bearer ", "Basic dXNlcjpwdw=="])
def test_it_refuses_unknown_tokens_and_other_schemes(db: Any, header: str) -> None:
    assert Client(HTTP_AUTHORIZATION=header).get(SEARCH).status_code == 401


def test_the_user_behind_a_token_is_the_full_user(issued: tuple[ApiToken, Client], reader: User) -> None:
    """Views and the audit trail see the token's user with its real name and flags."""
    from audit.models import AuditEvent

    _, client = issued
    assert client.get(SEARCH).status_code == 200
    event = AuditEvent.objects.filter(action="search").latest("id")
    assert event.actor == reader.username and event.actor_id == reader.pk
