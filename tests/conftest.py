"""Shared fixtures: isolated storage, users (owner, colleague, outsider), clients."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from archive import storage
from archive.models import ApiToken
from archive.synthetic import StudySpec, make_series

# Playwright's sync API runs an event loop in the test thread; DB access from
# tests around it is still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def isolated_storage(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """Every test stores objects under its own temporary directory."""
    settings.PACS_STORAGE_DIR = tmp_path / "objects"
    settings.PACS_FSYNC = False
    storage.get_storage.cache_clear()
    yield tmp_path / "objects"
    storage.get_storage.cache_clear()


@pytest.fixture
def uploader(db: Any) -> User:
    """A machine account allowed to store instances (a modality or gateway)."""
    user = User.objects.create_user("modality", password=uuid.uuid4().hex)
    user.user_permissions.add(Permission.objects.get(codename="add_instance"))
    return user


@pytest.fixture
def admin_user(db: Any) -> User:
    return User.objects.create_superuser("admin", "admin@example.org", uuid.uuid4().hex)


@pytest.fixture
def reader(db: Any) -> User:
    """A signed-in user without write permissions."""
    return User.objects.create_user("reader", password=uuid.uuid4().hex)


def bearer_client(user: User) -> Client:
    _, raw = ApiToken.issue(user, "test")
    return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.fixture
def upload_client(uploader: User) -> Client:
    return bearer_client(uploader)


@pytest.fixture
def admin_client_token(admin_user: User) -> Client:
    return bearer_client(admin_user)


@pytest.fixture
def reader_client(reader: User) -> Client:
    return bearer_client(reader)


def multipart(parts: list[bytes], boundary: str = "XyZ123boundary", ctype: str = "application/dicom") -> tuple[bytes, str]:
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + p + b"\r\n" for p in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="{ctype}"; boundary={boundary}'


def stow(client: Client, parts: list[bytes], study: str | None = None, **kw: Any) -> Any:
    body, ctype = multipart(parts)
    url = "/dicom-web/studies" + (f"/{study}" if study else "")
    return client.post(url, body, content_type=ctype, HTTP_ACCEPT="application/dicom+json", **kw)


@pytest.fixture
def ct_study(upload_client: Client) -> dict[str, Any]:
    """A stored three-slice CT study; returns its spec and the parts' bytes."""
    spec = StudySpec(patient_name="DOE^JANE", patient_id="PAT-1", accession="ACC-1")
    parts = make_series(spec, "CT", count=3)
    response = stow(upload_client, parts)
    assert response.status_code == 200, response.content
    return {"spec": spec, "parts": parts}


CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    executable = "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("Chromium is not installed: run `make test`, which installs Debian's chromium package")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
