"""SSO accounts are bound to the provider's (issuer, subject), never re-matched by e-mail;
and signing out of the portal also signs out at the provider.

These drive :class:`portal.sso.oidc.Backend` with verified ID-token claims directly
(the token checks themselves and the whole browser flow are covered against a
real provider in ``tests/portal/sso/test_oidc_browser.py``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousOperation
from django.test import Client, RequestFactory

from audit.models import AuditEvent
from portal.models import OIDCIdentity
from portal.sso import oidc
from tests.mfa_support import force_verified_login

ISSUER = "https://idp.example.org"


@pytest.fixture
def sso(settings: Any, db: Any) -> Any:
    """SSO configured with explicit endpoints (no discovery, no network)."""
    settings.OIDC_OP_ISSUER = ""
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{ISSUER}/auth"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{ISSUER}/token"
    settings.OIDC_OP_USER_ENDPOINT = ""
    settings.OIDC_OP_JWKS_ENDPOINT = f"{ISSUER}/jwks"
    settings.OIDC_OP_LOGOUT_ENDPOINT = f"{ISSUER}/session/end"
    settings.OIDC_RP_CLIENT_ID = "cloud-pacs"
    settings.OIDC_CREATE_USER = True
    settings.OIDC_LINK_BY_EMAIL = False
    settings.OIDC_SITES_CLAIM = ""
    return settings


def sign_in(sub: str, email: str = "", verified: Any = True, iss: str = ISSUER) -> Any:
    """What the backend does with an ID token whose signature, nonce and expiry checked out."""
    backend = oidc.Backend()
    backend.request = RequestFactory().get("/oidc/callback/")
    payload: dict[str, Any] = {"iss": iss, "aud": "cloud-pacs", "sub": sub, "preferred_username": sub}
    if email:
        payload.update(email=email, email_verified=verified)
    return backend.get_or_create_user("access-token", "id-token", payload)


@pytest.fixture
def local(db: Any) -> User:
    return User.objects.create_user("tess", email="tess@example.org", password="a long local passphrase 1")


def test_a_first_sign_in_creates_an_account_bound_to_issuer_and_subject(sso: Any) -> None:
    user = sign_in("abc-123", "new@example.org")
    identity = OIDCIdentity.objects.get()
    assert (identity.user, identity.issuer, identity.subject, identity.linked_by) == (
        user,
        ISSUER,
        "abc-123",
        "created",
    )
    assert user.email == "new@example.org" and not user.has_usable_password()
    assert AuditEvent.objects.get(action="sso-user-created").detail == {"issuer": ISSUER, "sub": "abc-123"}


def test_later_sign_ins_follow_the_subject_even_when_the_email_changes_to_another_accounts(
    sso: Any, local: User
) -> None:
    sso.OIDC_LINK_BY_EMAIL = True
    first = sign_in("abc-123", "rita@example.org")
    again = sign_in("abc-123", "tess@example.org")
    assert again == first != local
    local.refresh_from_db()
    assert not local.oidc_identities.exists()
    first.refresh_from_db()
    assert first.email == "rita@example.org"  # not taken over: another account has the new address


def test_a_new_verified_address_is_copied_when_no_other_account_has_it(sso: Any) -> None:
    user = sign_in("abc-123", "old@example.org")
    sign_in("abc-123", "renamed@example.org")
    user.refresh_from_db()
    assert user.email == "renamed@example.org"
    assert OIDCIdentity.objects.get().email_at_link == "old@example.org"


def test_by_default_an_account_with_the_same_email_is_not_linked(sso: Any, local: User) -> None:
    user = sign_in("abc-123", "tess@example.org")
    assert user != local and user.oidc_identities.get().subject == "abc-123"
    assert not local.oidc_identities.exists()


def test_without_linking_or_creation_an_unknown_identity_is_refused_and_audited(sso: Any, local: User) -> None:
    sso.OIDC_CREATE_USER = False
    assert sign_in("abc-123", "tess@example.org") is None
    assert not OIDCIdentity.objects.exists() and User.objects.count() == 1
    event = AuditEvent.objects.get(action="sso-link")
    assert event.outcome == "failure" and event.detail["reason"] == "no account"


def test_linking_by_email_binds_the_existing_account_once(sso: Any, local: User) -> None:
    sso.OIDC_LINK_BY_EMAIL = True
    sso.OIDC_CREATE_USER = False
    assert sign_in("abc-123", "TESS@example.org") == local
    identity = local.oidc_identities.get()
    assert (identity.subject, identity.linked_by, identity.email_at_link) == ("abc-123", "email", "TESS@example.org")
    assert AuditEvent.objects.get(action="sso-link").detail == {"issuer": ISSUER, "sub": "abc-123", "by": "email"}
    # A second identity at the same provider claiming the same address gets nothing.
    assert sign_in("other-subject", "tess@example.org") is None


@pytest.mark.parametrize("verified", [False, None, "false"])
def test_an_unverified_email_never_links(sso: Any, local: User, verified: Any) -> None:
    sso.OIDC_LINK_BY_EMAIL = True
    user = sign_in("abc-123", "tess@example.org", verified=verified)
    assert user != local and user.email == ""
    assert not local.oidc_identities.exists()


def test_two_accounts_with_the_address_make_linking_refuse(sso: Any, local: User) -> None:
    sso.OIDC_LINK_BY_EMAIL = True
    User.objects.create_user("tess2", email="tess@example.org")
    with pytest.raises(SuspiciousOperation):
        sign_in("abc-123", "tess@example.org")
    assert not OIDCIdentity.objects.exists()
    assert AuditEvent.objects.get(action="sso-link").detail["reason"] == "ambiguous"


def test_the_same_subject_at_another_issuer_is_another_identity(sso: Any) -> None:
    first = sign_in("abc-123", iss=ISSUER)
    backend = oidc.Backend()
    assert list(backend.filter_users_by_claims({"iss": ISSUER, "sub": "abc-123"})) == [first]
    assert not backend.filter_users_by_claims({"iss": "https://evil.example.org", "sub": "abc-123"}).exists()


def session_with_id_token(client: Client, user: User) -> None:
    client.force_login(user, backend="portal.sso.oidc.Backend")
    session = client.session
    session[oidc.ID_TOKEN_SESSION_KEY] = "header.payload.signature"
    session.save()


def test_signing_out_of_an_sso_session_goes_on_to_the_providers_end_session_endpoint(sso: Any) -> None:
    client = Client()
    session_with_id_token(client, sign_in("abc-123"))
    response = client.post("/accounts/logout/")
    assert response.status_code == 200
    html = response.content.decode()
    url = html.split('id="continue-provider-sign-out" href="')[1].split('"')[0].replace("&amp;", "&")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ISSUER}/session/end"
    assert parse_qs(parts.query) == {
        "id_token_hint": ["header.payload.signature"],
        "client_id": ["cloud-pacs"],
        "post_logout_redirect_uri": ["http://testserver/accounts/login/"],
    }
    assert '<meta http-equiv="refresh" content="0; url=' in html
    assert "<script" not in html
    assert client.get("/").status_code == 302  # signed out here first
    assert AuditEvent.objects.filter(action="sign-out").exists()


def test_signing_out_everywhere_also_ends_the_provider_session(sso: Any) -> None:
    client = Client()
    session_with_id_token(client, sign_in("abc-123"))
    response = client.post("/accounts/logout/everywhere/")
    assert response.status_code == 200 and b"/session/end?id_token_hint=" in response.content


@pytest.mark.parametrize("case", ["password session", "provider without end-session endpoint"])
def test_otherwise_signing_out_just_signs_out_here(sso: Any, local: User, case: str) -> None:
    client = Client()
    if case == "password session":
        client.force_login(local)  # no ID token in the session
    else:
        sso.OIDC_OP_LOGOUT_ENDPOINT = ""
        session_with_id_token(client, local)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"


def test_an_administrator_can_unlink_an_identity_but_not_forge_one(sso: Any, admin_user: User) -> None:
    admin_client = Client()
    force_verified_login(admin_client, admin_user)
    identity = OIDCIdentity.objects.create(
        user=sign_in("abc-123"), issuer="https://other.example.org", subject="x", linked_by="created"
    )
    assert admin_client.get("/admin/portal/oidcidentity/add/").status_code == 403
    page = admin_client.get(f"/admin/portal/oidcidentity/{identity.pk}/change/")
    assert page.status_code == 200 and b'name="subject"' not in page.content
    response = admin_client.post(f"/admin/portal/oidcidentity/{identity.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not OIDCIdentity.objects.filter(pk=identity.pk).exists()
    assert AuditEvent.objects.filter(action="admin-delete", detail__model="portal.oidcidentity").exists()
