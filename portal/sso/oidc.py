"""Single sign-on through OpenID Connect (mozilla-django-oidc), configured by environment.

SSO is on when ``OIDC_RP_CLIENT_ID`` is set together with either
``OIDC_OP_ISSUER`` (endpoints found by discovery, fetched once on first use) or
the explicit endpoints (authorization, token, JWKS; userinfo optional). Off, the
sign-in page shows no SSO button, the backend authenticates nobody and the
``/oidc/`` views answer 404.

The authorization-code flow uses PKCE (S256) and a nonce. Beyond what
mozilla-django-oidc checks (signature, nonce, expiry) the ID token's ``iss``
must be the configured issuer and its ``aud`` must hold our client id.

Accounts are bound to the provider's identity, (``iss``, ``sub``), in
:class:`portal.models.OIDCIdentity`; once bound, sign-ins are matched by that
pair only, so an e-mail change at the provider never moves a sign-in to another
account. An identity seen for the first time is linked to the one existing
account with the same address only when ``OIDC_LINK_BY_EMAIL`` is true and the
provider says ``email_verified: true``; otherwise a new account is created
(``OIDC_CREATE_USERS``) or the sign-in is refused. Every outcome is audited.
On every sign-in the roles claim (``OIDC_ROLES_CLAIM``, default ``groups``)
replaces the user's role groups (names from :class:`portal.accounts.roles.Role`, or
mapped by ``OIDC_ROLES_MAP``); groups that are not roles are left alone. The
sites claim (``OIDC_SITES_CLAIM``, site codes) replaces the user's site
memberships (:class:`portal.models.SiteMembership`); unknown codes are ignored.

Second factor: an ID token whose ``amr`` holds ``mfa``, ``otp`` or ``hwk``
counts as a verified second factor for users whose role requires MFA
(``PACS_MFA_TRUST_IDP_AMR``, default on); otherwise they pass our TOTP challenge
after the provider sends them back.

Signing out of the portal also ends the provider's session (RP-initiated
logout) when its discovery document names an ``end_session_endpoint`` (or
``OIDC_OP_LOGOUT_ENDPOINT`` is set): :func:`provider_logout_url`, which is also
mozilla-django-oidc's ``OIDC_OP_LOGOUT_URL_METHOD``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from archive.models import Site
from audit import trail
from portal.accounts.groups import sync_staff_flag
from portal.accounts.roles import Role
from portal.mfa import factors as mfa
from portal.models import OIDCIdentity, SiteMembership

logger = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[\w.@+-]{1,150}\Z")


@dataclass(frozen=True)
class Provider:
    """Where the OpenID provider's endpoints are."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_endpoint: str
    end_session_endpoint: str = ""


def enabled() -> bool:
    """Is SSO configured at all?"""
    explicit = all(
        getattr(settings, name, "")
        for name in ("OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT", "OIDC_OP_JWKS_ENDPOINT")
    )
    return bool(getattr(settings, "OIDC_RP_CLIENT_ID", "")) and (bool(settings.OIDC_OP_ISSUER) or explicit)


@functools.lru_cache(maxsize=8)
def discover(issuer: str) -> dict[str, Any]:
    """The provider's discovery document (``/.well-known/openid-configuration``)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    if document.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise ImproperlyConfigured(f"OIDC discovery at {url} names another issuer: {document.get('issuer')!r}")
    return document


def provider() -> Provider:
    """Endpoints from explicit settings, filled in from discovery when an issuer is set."""
    issuer = settings.OIDC_OP_ISSUER
    document = discover(issuer) if issuer else {}

    def pick(setting: str, key: str) -> str:
        return str(getattr(settings, setting, "") or document.get(key, ""))

    return Provider(
        issuer=str(document.get("issuer", issuer)),
        authorization_endpoint=pick("OIDC_OP_AUTHORIZATION_ENDPOINT", "authorization_endpoint"),
        token_endpoint=pick("OIDC_OP_TOKEN_ENDPOINT", "token_endpoint"),
        userinfo_endpoint=pick("OIDC_OP_USER_ENDPOINT", "userinfo_endpoint"),
        jwks_endpoint=pick("OIDC_OP_JWKS_ENDPOINT", "jwks_uri"),
        end_session_endpoint=pick("OIDC_OP_LOGOUT_ENDPOINT", "end_session_endpoint"),
    )


#: Where the ID token is kept for the sign-out (mozilla-django-oidc's OIDC_STORE_ID_TOKEN).
ID_TOKEN_SESSION_KEY = "oidc_id_token"


def provider_logout_url(request: HttpRequest) -> str:
    """Where to send the browser after our sign-out: the provider's end-session endpoint
    (OpenID Connect RP-Initiated Logout 1.0) for a session that came through SSO, with the
    ID token as hint and our sign-in page to come back to; else our sign-in page.

    Call it before the session is flushed. Never raises: an unreachable provider
    leaves the local sign-out done and the user on our sign-in page.
    """
    here = str(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get(ID_TOKEN_SESSION_KEY) if hasattr(request, "session") else None
    if not id_token or not enabled():
        return here
    try:
        endpoint = provider().end_session_endpoint
    except (requests.RequestException, ValueError, ImproperlyConfigured) as exc:
        logger.warning("OIDC provider unreachable for sign-out: %s", exc)
        return here
    if not endpoint:
        return here
    query = urlencode(
        {
            "id_token_hint": id_token,
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "post_logout_redirect_uri": request.build_absolute_uri(reverse("login")),
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def _claim_values(value: Any) -> list[str]:
    """A claim as a list of strings: JSON arrays as they are, strings split on commas/spaces."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in re.split(r"[,\s]+", value) if part]
    if isinstance(value, Iterable):
        return [str(item) for item in value if isinstance(item, str | int)]
    return []


def roles_from_claims(claims: dict[str, Any]) -> set[Role]:
    """Our roles named by the roles claim; provider names are mapped by ``OIDC_ROLES_MAP``
    or else matched to role values without regard to case or a leading ``/``."""
    mapping = {key.strip().lower(): value.strip().lower() for key, value in settings.OIDC_ROLES_MAP.items()}
    by_value = {role.value: role for role in Role}
    roles: set[Role] = set()
    for raw in _claim_values(claims.get(settings.OIDC_ROLES_CLAIM)):
        name = raw.strip().lstrip("/").lower()
        target = mapping.get(name, name)
        if target in by_value:
            roles.add(by_value[target])
    return roles


def sites_from_claims(claims: dict[str, Any]) -> list[str]:
    claim = settings.OIDC_SITES_CLAIM
    return _claim_values(claims.get(claim)) if claim else []


def apply_roles(user: Any, roles: set[Role]) -> None:
    """Make the user's role groups exactly ``roles``; other groups stay."""
    role_names = {role.value for role in Role}
    wanted = {role.value for role in roles}
    current = set(user.groups.filter(name__in=role_names).values_list("name", flat=True))
    for name in current - wanted:
        user.groups.remove(Group.objects.get(name=name))
    for name in wanted - current:
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)


def apply_sites(user: Any, site_codes: list[str]) -> None:
    """Make the user's site memberships exactly the sites named (by ``Site.code``) in the claim.

    Codes the archive does not know are ignored: the IdP cannot create sites.
    Without a sites claim configured, memberships are managed in the admin only.
    """
    if not settings.OIDC_SITES_CLAIM:
        return
    wanted = set(
        Site.objects.filter(code__in=[code.strip().lower() for code in site_codes]).values_list("pk", flat=True)
    )
    current = set(SiteMembership.objects.filter(user=user).values_list("site_id", flat=True))
    SiteMembership.objects.filter(user=user, site_id__in=current - wanted).delete()
    SiteMembership.objects.bulk_create([SiteMembership(user=user, site_id=pk) for pk in wanted - current])


def verified_email(claims: dict[str, Any]) -> str:
    """The e-mail address, if the provider vouches for it (``email_verified: true``); else ""."""
    email = str(claims.get("email") or "").strip()
    verified = claims.get("email_verified")
    if isinstance(verified, str):  # some providers send the JSON boolean as a string
        verified = verified.lower() == "true"
    return email[:254] if email and verified is True and "@" in email else ""


class Backend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend with our endpoint discovery, token checks and claim mapping.

    When SSO is not configured it authenticates nobody (so it can stay listed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = get_user_model()
        self.enabled = enabled()
        if not self.enabled:
            return
        op = provider()
        self.issuer = op.issuer
        self.OIDC_OP_TOKEN_ENDPOINT = op.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = op.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = op.jwks_endpoint
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.id_token_claims: dict[str, Any] = {}

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (requests.RequestException, SuspiciousOperation) as exc:
            logger.warning("OIDC sign-in failed: %s", exc)
            trail.record("sign-in", request, outcome="failure", detail={"method": "oidc", "reason": str(exc)[:200]})
            return None

    def verify_id_token_claims(self, payload: dict[str, Any]) -> None:
        """The checks mozilla-django-oidc leaves out: issuer and audience."""
        if self.issuer and str(payload.get("iss", "")).rstrip("/") != self.issuer.rstrip("/"):
            raise SuspiciousOperation("ID token issuer does not match the configured issuer")
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("ID token audience does not include this client")
        if len(audiences) > 1 and payload.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SuspiciousOperation("ID token authorized party is not this client")

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        """The account bound to (iss, sub); on first sight, link by verified e-mail, create, or refuse."""
        self.verify_id_token_claims(payload)
        self.id_token_claims = payload
        claims = self.get_userinfo(access_token, id_token, payload)
        if not self.verify_claims(claims):
            raise SuspiciousOperation("Claims verification failed")
        issuer, subject = str(payload["iss"]), str(claims["sub"])
        identity = OIDCIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
        if identity is not None:
            OIDCIdentity.objects.filter(pk=identity.pk).update(last_used_at=timezone.now())
            user = self.update_user(identity.user, claims)
        else:
            user = self.bind_new_identity(issuer, subject, claims)
        if user is not None:
            user.oidc_amr = _claim_values(payload.get("amr"))
            user.oidc_auth_time = payload.get("auth_time")
        return user

    def bind_new_identity(self, issuer: str, subject: str, claims: dict[str, Any]) -> Any:
        """First sign-in of this identity: link it to an account, or create one, or refuse (None)."""
        email = verified_email(claims)
        detail = {"issuer": issuer[:200], "sub": subject[:200]}
        if settings.OIDC_LINK_BY_EMAIL and email:
            candidates = list(
                self.UserModel.objects.filter(email__iexact=email).exclude(oidc_identities__issuer=issuer)[:2]
            )
            if len(candidates) > 1:
                trail.record("sso-link", self.request, outcome="failure", detail={**detail, "reason": "ambiguous"})
                raise SuspiciousOperation("More than one account has this e-mail address")
            if candidates:
                with transaction.atomic():
                    user = candidates[0]
                    OIDCIdentity.objects.create(
                        user=user, issuer=issuer, subject=subject, email_at_link=email, linked_by="email"
                    )
                    trail.record("sso-link", self.request, user=user, detail={**detail, "by": "email"})
                    return self.update_user(user, claims)
        if not settings.OIDC_CREATE_USER:
            trail.record("sso-link", self.request, outcome="failure", detail={**detail, "reason": "no account"})
            return None
        return self.create_user(claims)

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            claims.update(super().get_userinfo(access_token, id_token, payload))
        if claims.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("userinfo subject does not match the ID token")
        return claims

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub")) and bool(str(claims.get("iss", "")))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        """Only the bound account (mozilla-django-oidc calls this for session refresh)."""
        return self.UserModel.objects.filter(
            oidc_identities__issuer=str(claims.get("iss", "")), oidc_identities__subject=str(claims.get("sub", ""))
        )

    def get_username(self, claims: dict[str, Any]) -> str:
        preferred = str(claims.get("preferred_username", ""))
        if USERNAME_RE.match(preferred) and not self.UserModel.objects.filter(username__iexact=preferred).exists():
            return preferred
        return "oidc-" + hashlib.sha256(str(claims["sub"]).encode()).hexdigest()[:24]

    def email_taken(self, email: str, user: Any) -> bool:
        return bool(self.UserModel.objects.filter(email__iexact=email).exclude(pk=user.pk).exists())

    def create_user(self, claims: dict[str, Any]) -> Any:
        email = verified_email(claims)
        issuer, subject = str(self.id_token_claims["iss"]), str(claims["sub"])
        with transaction.atomic():
            user = self.UserModel.objects.create_user(self.get_username(claims), email=email)
            user.set_unusable_password()
            user.save()
            OIDCIdentity.objects.create(
                user=user, issuer=issuer, subject=subject, email_at_link=email, linked_by="created"
            )
            trail.record(
                "sso-user-created", self.request, user=user, detail={"issuer": issuer[:200], "sub": subject[:200]}
            )
            return self.update_user(user, claims)

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        with transaction.atomic():
            changed = False
            for field, claim in (("first_name", "given_name"), ("last_name", "family_name")):
                value = str(claims.get(claim, ""))[:150]
                if value and getattr(user, field) != value:
                    setattr(user, field, value)
                    changed = True
            email = verified_email(claims)
            if email and user.email.lower() != email.lower() and not self.email_taken(email, user):
                user.email = email
                changed = True
            if changed:
                user.save()
            apply_roles(user, roles_from_claims(claims))
            sync_staff_flag(user)
            apply_sites(user, sites_from_claims(claims))
        return user


class AuthenticateView(OIDCAuthenticationRequestView):
    """Start the sign-in at the provider (404 when SSO is off, 503 when it is unreachable)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)
        self.OIDC_RP_CLIENT_ID = getattr(settings, "OIDC_RP_CLIENT_ID", "")

    def get(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            raise Http404("Single sign-on is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider().authorization_endpoint
        except (requests.RequestException, ValueError, ImproperlyConfigured) as exc:
            logger.warning("OIDC provider unreachable: %s", exc)
            return HttpResponse("The sign-in provider cannot be reached.", status=503, content_type="text/plain")
        return super().get(request)

    def get_extra_params(self, request: HttpRequest) -> dict[str, Any]:
        """``fresh=1`` (a final signature needs a recent second factor): the IdP must authenticate the user
        again (``prompt=login``, ``max_age=0``), so the new ID token's ``auth_time`` is now."""
        params = dict(super().get_extra_params(request))
        if request.GET.get("fresh") == "1":
            params.update({"prompt": "login", "max_age": "0"})
        return params


class CallbackView(OIDCAuthenticationCallbackView):
    """Finish the sign-in (audited as "sign-in" by portal.accounts.authevents) and note whether the
    provider did the second factor."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            raise Http404("Single sign-on is not configured")
        return super().get(request)

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        mfa.mark_verified_by_idp(
            self.request, getattr(self.user, "oidc_amr", []), getattr(self.user, "oidc_auth_time", None)
        )
        return response
