"""Shared fixtures: isolated storage, users (owner, colleague, outsider), clients."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.models import ApiToken
from archive.storage import registry

# Playwright's sync API runs an event loop in the test thread; DB access from
# tests around it is still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def role_groups(request: pytest.FixtureRequest, django_db_blocker: Any) -> None:
    """The role groups the roles migration made, there for every database test.

    A transactional test (live server, threads) ends by emptying every table;
    Django puts back permissions but not the groups that a data migration
    created, so whichever test ran next in that process would find no roles.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None and not {"db", "transactional_db"} & set(request.fixturenames):
        return
    from django.contrib.auth.models import Group, Permission

    from portal.accounts.groups import ensure_roles
    from portal.accounts.roles import Role

    with django_db_blocker.unblock():
        if not Group.objects.filter(name=Role.ADMINISTRATOR.value).exists():
            ensure_roles(Group, Permission)


@pytest.fixture(autouse=True)
def isolated_storage(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """Every test stores objects under its own temporary directory."""
    settings.PACS_STORAGE_DIR = tmp_path / "objects"
    settings.PACS_FSYNC = False
    registry.get_storage.cache_clear()
    yield tmp_path / "objects"
    registry.get_storage.cache_clear()


@pytest.fixture
def general_site(db: Any) -> Any:
    """Site A: owns every study whose Institution Name is StudySpec's default, "General Hospital"."""
    from archive.models import Site

    site, _ = Site.objects.get_or_create(
        code="general", defaults={"name": "General Hospital", "institution_names": "General Hospital"}
    )
    return site


def join_site(user: User, site: Any) -> None:
    from portal.models import SiteMembership

    SiteMembership.objects.get_or_create(user=user, site=site)


@pytest.fixture
def uploader(general_site: Any) -> User:
    """A machine account of site A allowed to store instances (a modality or gateway)."""
    user = User.objects.create_user("modality", password=uuid.uuid4().hex)
    user.user_permissions.add(Permission.objects.get(codename="add_instance"))
    join_site(user, general_site)
    return user


@pytest.fixture
def admin_user(db: Any) -> User:
    return User.objects.create_superuser("admin", "admin@example.org", uuid.uuid4().hex)


@pytest.fixture
def reader(general_site: Any) -> User:
    """A signed-in member of site A without a role or write permissions: reads site A's studies."""
    user = User.objects.create_user("reader", password=uuid.uuid4().hex)
    join_site(user, general_site)
    return user


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


def multipart(
    parts: list[bytes], boundary: str = "XyZ123boundary", ctype: str = "application/dicom"
) -> tuple[bytes, str]:
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


# --- Isolation fixtures: an owner and a colleague at site A, an outsider at site B ---


@pytest.fixture
def other_site(db: Any) -> Any:
    """Site B: "St Elsewhere"."""
    from archive.models import Site

    return Site.objects.create(code="elsewhere", name="St Elsewhere", institution_names="St Elsewhere")


def role_user(username: str, role: Any, site: Any = None) -> User:
    from portal.accounts.groups import add_role

    user = User.objects.create_user(username, email=f"{username}@example.org", password=uuid.uuid4().hex)
    add_role(user, role)
    if site is not None:
        join_site(user, site)
    return user


@pytest.fixture
def owner(general_site: Any) -> User:
    """A technologist at site A: stores site A's studies and reads them."""
    from portal.accounts.roles import Role

    return role_user("owner", Role.TECHNOLOGIST, general_site)


@pytest.fixture
def colleague(general_site: Any) -> User:
    """A radiologist at site A: reads what the owner stored."""
    from portal.accounts.roles import Role

    return role_user("colleague", Role.RADIOLOGIST, general_site)


@pytest.fixture
def outsider(other_site: Any) -> User:
    """A technologist at site B (may store, no MFA needed): must see nothing of site A."""
    from portal.accounts.roles import Role

    return role_user("outsider", Role.TECHNOLOGIST, other_site)


@pytest.fixture
def owner_client(owner: User) -> Client:
    return bearer_client(owner)


@pytest.fixture
def colleague_client(colleague: User) -> Client:
    return bearer_client(colleague)


@pytest.fixture
def outsider_client(outsider: User) -> Client:
    return bearer_client(outsider)


@pytest.fixture
def site_a_study(owner_client: Client) -> dict[str, Any]:
    """A two-series study stored by the owner at site A: its spec, parts and UIDs."""
    import pydicom

    spec = StudySpec(patient_name="ISOLATION^ALICE", patient_id="PAT-A1", accession="ACC-A1")
    parts = make_series(spec, "CT", count=2) + make_series(spec, "CT", count=1)
    response = stow(owner_client, parts)
    assert response.status_code == 200, response.content
    first = pydicom.dcmread(io.BytesIO(parts[0]))
    return {
        "spec": spec,
        "parts": parts,
        "study": spec.study_uid,
        "series": str(first.SeriesInstanceUID),
        "instance": str(first.SOPInstanceUID),
    }
