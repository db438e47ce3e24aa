"""Single sign-on end to end: real Chromium, the portal on live_server, and a real
OpenID provider (the certified ``oidc-provider`` npm package) on loopback.

Needs ``npm --prefix tests/portal/sso/oidc ci`` beforehand (the test command runs it).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from archive.models import Site
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.models import OIDCIdentity, SiteMembership
from portal.sso import oidc
from tests.mfa_support import user_with_role
from tests.portal.sso.provider import start_provider

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

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


@pytest.fixture(scope="session")
def provider_url(live_server: Any) -> Iterator[str]:
    """Start the test OpenID provider with a client registered for the live server's callback."""
    client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [f"{live_server.url}/oidc/callback/"],
        "post_logout_redirect_uris": [f"{live_server.url}/accounts/login/"],
        "token_endpoint_auth_method": "client_secret_post",
    }
    try:
        provider = start_provider([client], ACCOUNTS)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield provider.url
    finally:
        provider.stop()


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
    settings.OIDC_LINK_BY_EMAIL = False
    settings.OIDC_OP_LOGOUT_ENDPOINT = ""
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
    assert page.inner_text("#wl-user") == "Rita Radiologist"  # a radiologist's home is the worklist
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


def test_it_links_an_existing_user_by_verified_email_when_configured(page: Any, sso: str, settings: Any) -> None:
    settings.OIDC_LINK_BY_EMAIL = True
    existing = user_with_role("tess", Role.RADIOLOGIST.value)
    existing.email = "TECH.SSO@example.org"
    existing.save()
    existing.groups.add(Group.objects.create(name="night shift"))

    sign_in_with_sso(page, "tech.sso", sso)

    assert page.inner_text("h1") == "QC list"  # the provider made her a technologist: she lands on her work
    page.goto(page.url.split("?")[0] + "?home")
    assert "Welcome, Tess Tech" in page.inner_text("h1")
    existing.refresh_from_db()
    assert set(existing.groups.values_list("name", flat=True)) == {"technologist", "night shift"}
    assert list(SiteMembership.objects.filter(user=existing).values_list("site__code", flat=True)) == ["south"]
    assert User.objects.count() == 1
    identity = OIDCIdentity.objects.get(user=existing)
    assert (identity.issuer, identity.subject, identity.linked_by) == (sso, "tech.sso", "email")


def test_by_default_it_does_not_link_an_account_by_email(page: Any, sso: str) -> None:
    existing = user_with_role("tess", Role.RADIOLOGIST.value)
    existing.email = "tech.sso@example.org"
    existing.save()

    sign_in_with_sso(page, "tech.sso", sso)

    created = OIDCIdentity.objects.get(subject="tech.sso").user
    assert created != existing and created.username == "tech.sso"
    assert not OIDCIdentity.objects.filter(user=existing).exists()
    assert set(existing.groups.values_list("name", flat=True)) == {Role.RADIOLOGIST.value}


def change_account_at_provider(provider_url: str, login: str, claims: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{provider_url}/test-control/accounts/{login}", data=json.dumps(claims).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def test_an_email_change_at_the_provider_does_not_move_the_sign_in(
    chromium: Any, live_server: Any, sso: str, settings: Any
) -> None:
    settings.OIDC_LINK_BY_EMAIL = True
    other = user_with_role("tess", Role.TECHNOLOGIST.value)
    other.email = "tess@example.org"
    other.save()
    for round_trip in range(2):
        context = chromium.new_context(base_url=live_server.url)  # a fresh provider session each time
        context.set_default_timeout(20000)
        try:
            sign_in_with_sso(context.new_page(), "rad.sso", sso)
        finally:
            context.close()
        if round_trip == 0:
            first = OIDCIdentity.objects.get(subject="rad.sso").user
            change_account_at_provider(sso, "rad.sso", {"email": "tess@example.org"})
    try:
        signed_in = AuditEvent.objects.filter(action="sign-in", outcome="success").order_by("id")
        assert [event.actor_id for event in signed_in] == [first.pk, first.pk]
        assert not OIDCIdentity.objects.filter(user=other).exists()
        other.refresh_from_db()
        assert set(other.groups.values_list("name", flat=True)) == {Role.TECHNOLOGIST.value}
        first.refresh_from_db()
        assert first.email == "rad.sso@example.org"  # the new address belongs to another account here
    finally:
        change_account_at_provider(sso, "rad.sso", {"email": ACCOUNTS["rad.sso"]["email"]})


def test_signing_out_also_ends_the_session_at_the_provider(page: Any, sso: str, live_server: Any) -> None:
    sign_in_with_sso(page, "rad.sso", sso)
    page.click("#sign-out")
    page.wait_for_url(f"{sso}/session/end**")
    page.click("#idp-logout-yes")
    page.wait_for_url(f"{live_server.url}/accounts/login/**")
    assert page.locator("#sso-sign-in").count() == 1
    assert page.context.request.get(f"{live_server.url}/").url == f"{live_server.url}/accounts/login/?next=/"
    assert AuditEvent.objects.filter(action="sign-out", actor="rad.sso").exists()

    page.click("#sso-sign-in")  # the provider asks for the password again: its session is gone
    page.wait_for_url(f"{sso}/interaction/**")
    assert page.locator("#idp-login").count() == 1


def test_without_provider_logout_the_provider_session_would_sign_the_next_user_straight_in(
    page: Any, sso: str, live_server: Any, settings: Any
) -> None:
    """The control for the test above: losing only the portal session leaves the provider's,
    and the next click on "Sign in with SSO" comes back signed in without a password."""
    sign_in_with_sso(page, "rad.sso", sso)
    page.context.clear_cookies(name=settings.SESSION_COOKIE_NAME)
    page.goto("/accounts/login/")
    page.click("#sso-sign-in")
    page.wait_for_url(f"{live_server.url}/")
    assert page.inner_text("#wl-user") == "Rita Radiologist"  # a radiologist's home is the worklist
