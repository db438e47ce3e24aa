"""Single sign-on end to end: real Chromium, the portal on live_server, and a real
OpenID provider (the certified ``oidc-provider`` npm package) on loopback.

Needs ``npm --prefix tests/oidc ci`` beforehand (the test command runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from archive.models import Site
from audit.models import AuditEvent
from portal import oidc
from portal.models import SiteMembership
from portal.roles import Role
from tests.mfa_support import user_with_role

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROVIDER_DIR = Path(__file__).parent / "oidc"
CLIENT_ID = "cloud-pacs"
CLIENT_SECRET = "loopback-test-secret-7f3a"
ACCOUNTS = {
    "rad.sso": {
        "password": "idp-pass-1",
        "email": "rad.sso@example.org",
        "name": "Rita Radiologist",
        "groups": ["radiologist", "ward-7"],
        "sites": ["north"],
        "amr": ["pwd", "otp"],
    },
    "rad.pwdonly": {
        "password": "idp-pass-2",
        "email": "rad.pwdonly@example.org",
        "name": "Paul Password",
        "groups": ["radiologist"],
        "amr": ["pwd"],
    },
    "tech.sso": {
        "password": "idp-pass-3",
        "email": "tech.sso@example.org",
        "name": "Tess Tech",
        "groups": ["/technologist"],
        "sites": ["south", "nowhere"],
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def provider_url(live_server: Any) -> Iterator[str]:
    """Start tests/oidc/provider.js with a client registered for the live server's callback."""
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("The test OpenID provider is not installed: run `npm --prefix tests/oidc ci` (make test does)")
    port = free_port()
    env = {
        **os.environ,
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_REDIRECT_URIS": f"{live_server.url}/oidc/callback/",
        "OIDC_ACCOUNTS": json.dumps(ACCOUNTS),
    }
    process = subprocess.Popen(
        [node, "provider.js"], cwd=PROVIDER_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline and not line.startswith("listening"):
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                pytest.fail(f"The test OpenID provider exited: {process.stderr.read() if process.stderr else ''}")
        assert line.startswith("listening"), line
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def sso(settings: Any, provider_url: str) -> str:
    """The portal configured for the provider by issuer discovery, as an operator would."""
    settings.OIDC_OP_ISSUER = provider_url
    for name in ("AUTHORIZATION", "TOKEN", "USER", "JWKS"):
        setattr(settings, f"OIDC_OP_{name}_ENDPOINT", "")
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_RP_SCOPES = "openid email profile pacs"
    settings.OIDC_ROLES_CLAIM = "groups"
    settings.OIDC_SITES_CLAIM = "sites"
    settings.OIDC_CREATE_USER = True
    settings.OIDC_VERIFY_SSL = True
    oidc.discover.cache_clear()
    for code in ("north", "south"):
        Site.objects.get_or_create(code=code, defaults={"name": code.title()})
    return provider_url


@pytest.fixture
def page(chromium: Any, live_server: Any) -> Iterator[Any]:
    context = chromium.new_context(base_url=live_server.url)
    context.set_default_timeout(20000)
    page = context.new_page()
    yield page
    context.close()


def sign_in_with_sso(page: Any, login: str, provider_url: str) -> None:
    page.goto("/accounts/login/")
    page.click("#sso-sign-in")
    page.wait_for_url(f"{provider_url}/interaction/**")
    page.fill("#idp-login", login)
    page.fill("#idp-password", ACCOUNTS[login]["password"])
    page.click("#idp-submit")
    page.wait_for_url(f"{provider_url}/interaction/**")
    assert "pacs" in page.inner_text("#idp-scopes")
    page.click("#idp-allow")
    page.wait_for_url(lambda url: not url.startswith(provider_url))
    page.wait_for_load_state()


def test_it_signs_a_new_radiologist_in_through_the_provider_with_its_mfa(page: Any, sso: str, live_server: Any) -> None:
    sign_in_with_sso(page, "rad.sso", sso)
    assert page.url == f"{live_server.url}/"
    assert "Welcome, Rita Radiologist" in page.inner_text("h1")
    user = User.objects.get(email="rad.sso@example.org")
    assert user.username == "rad.sso" and not user.has_usable_password()
    assert set(user.groups.values_list("name", flat=True)) == {Role.RADIOLOGIST.value}
    assert list(SiteMembership.objects.filter(user=user).values_list("site__code", flat=True)) == ["north"]
    verified = AuditEvent.objects.get(action="mfa_verify")
    assert verified.actor == "rad.sso" and verified.detail == {"method": "idp", "amr": ["otp", "pwd"]}
    assert AuditEvent.objects.filter(action="sign-in", actor="rad.sso", outcome="success").exists()


def test_it_asks_for_our_totp_when_the_provider_did_only_a_password(page: Any, sso: str) -> None:
    sign_in_with_sso(page, "rad.pwdonly", sso)
    assert "/mfa/enrol/" in page.url
    assert page.locator("img.qr").count() == 1


def test_it_updates_an_existing_user_matched_by_email(page: Any, sso: str) -> None:
    existing = user_with_role("tess", Role.RADIOLOGIST.value)
    existing.email = "TECH.SSO@example.org"
    existing.save()
    existing.groups.add(Group.objects.create(name="night shift"))

    sign_in_with_sso(page, "tech.sso", sso)

    assert "Welcome, Tess Tech" in page.inner_text("h1")
    existing.refresh_from_db()
    assert set(existing.groups.values_list("name", flat=True)) == {"technologist", "night shift"}
    assert list(SiteMembership.objects.filter(user=existing).values_list("site__code", flat=True)) == ["south"]
    assert User.objects.count() == 1


def test_it_refuses_unknown_users_when_creation_is_off(page: Any, sso: str, settings: Any, live_server: Any) -> None:
    settings.OIDC_CREATE_USER = False
    sign_in_with_sso(page, "tech.sso", sso)
    assert page.url == f"{live_server.url}/accounts/login/?sso=failed"
    assert "did not complete" in page.inner_text("[role=alert]")
    assert not User.objects.exists()
