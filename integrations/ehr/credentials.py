"""How an EHR proves who it is: its client secret, or a signed assertion (RFC 7523 ``private_key_jwt``).

Client secrets are made here (256 random bits from :mod:`secrets`), shown to
the administrator once and kept only as their SHA-256: a slow password hash
adds nothing to a 256-bit random secret, and a fast one keeps every launch call
cheap. They are compared in constant time.

A client assertion is a JWT the EHR signs with its private key (RS256 or
ES256; ``none`` and HMAC algorithms are never accepted, so a public key can
never be used as an HMAC secret). It must say ``iss`` = ``sub`` = the client
id, ``aud`` = the URL of our launch endpoint, carry ``exp``, ``iat`` and a
``jti``, live at most :data:`MAX_ASSERTION_SECONDS`, and be used once: its
``jti`` is kept in the database until it expires, and a second use is refused.
The key comes from the integration's pasted PEM or its JWKS URL (cached).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from django.db import IntegrityError, transaction

from integrations import clock
from integrations.keys import KeyProblem, load_public_key
from integrations.models import AuthMethod, EhrIntegration, UsedAssertion

#: The algorithms a client assertion may be signed with (RFC 7518 names).
ALGORITHMS = ("RS256", "ES256")
#: Longest lifetime (exp - iat) an assertion may claim; its jti is remembered that long.
MAX_ASSERTION_SECONDS = 300
#: Clock skew tolerated between the EHR and us.
LEEWAY_SECONDS = 30
#: The largest assertion read at all.
MAX_ASSERTION_BYTES = 8192
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Refused(Exception):
    """Authentication refused; ``reason`` is safe to show the caller and to audit, ``client_id`` as claimed."""

    def __init__(self, reason: str, client_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.client_id = client_id


def new_secret() -> tuple[str, str]:
    """A fresh client secret and its SHA-256 (hex): show the first once, keep the second."""
    raw = secrets.token_urlsafe(32)
    return raw, sha256(raw)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_secret(client_id: str, secret: str) -> EhrIntegration:
    """The integration whose client id and secret these are, or :class:`Refused`."""
    integration = EhrIntegration.objects.filter(client_id=client_id).first()
    presented = sha256(secret)
    expected = integration.secret_sha256 if integration is not None else ""
    # Compare even for an unknown client, so timing tells nothing about which client ids exist.
    matches = hmac.compare_digest(presented, expected or "0" * 64)
    if integration is None or not expected or not matches:
        raise Refused("unknown client or wrong secret", client_id)
    if integration.auth_method != AuthMethod.CLIENT_SECRET_BASIC:
        raise Refused("this client authenticates with signed assertions, not a secret", client_id)
    return integration


_jwks_clients: dict[str, jwt.PyJWKClient] = {}
_jwks_refreshed: dict[str, float] = {}
_jwks_lock = threading.Lock()
#: A JWKS is fetched again for an unknown key id at most this often (key rotation), so forged key ids
#: cannot make this server hammer the EHR's JWKS URL.
JWKS_REFRESH_SECONDS = 60


def _jwks_client(url: str) -> jwt.PyJWKClient:
    with _jwks_lock:
        client = _jwks_clients.get(url)
        if client is None:
            client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=300, timeout=5)
            _jwks_clients[url] = client
        return client


def _jwks_key(url: str, kid: Any) -> Any:
    """The key ``kid`` (or the only key, when the assertion names none) of the JWKS at ``url``."""
    client = _jwks_client(url)

    def pick(keys: list[jwt.PyJWK]) -> Any:
        found = [k for k in keys if k.key_id == kid] if kid else (keys if len(keys) == 1 else [])
        return found[0].key if found else None

    key = pick(client.get_signing_keys())
    if key is None:
        with _jwks_lock:
            due = time.monotonic() - _jwks_refreshed.get(url, -JWKS_REFRESH_SECONDS) >= JWKS_REFRESH_SECONDS
            if due:
                _jwks_refreshed[url] = time.monotonic()
        if due:
            key = pick(client.get_signing_keys(refresh=True))
    return key


def _verification_key(integration: EhrIntegration, assertion: str, kid: Any) -> Any:
    if integration.public_key_pem.strip():
        try:
            return load_public_key(integration.public_key_pem)
        except KeyProblem:
            raise Refused("the integration's public key is unusable", integration.client_id) from None
    if not integration.jwks_url:
        raise Refused("the integration has no key to check assertions with", integration.client_id)
    try:
        key = _jwks_key(integration.jwks_url, kid)
    except jwt.PyJWKClientConnectionError:
        raise Refused("the integration's JWKS could not be fetched", integration.client_id) from None
    except jwt.PyJWKClientError:
        raise Refused("the integration's JWKS holds no usable signing key", integration.client_id) from None
    if key is None:
        raise Refused("no key in the integration's JWKS matches the assertion", integration.client_id)
    return key


def check_assertion(assertion: str, audience: str) -> EhrIntegration:
    """The integration that signed ``assertion`` for ``audience``; the assertion is then used up."""
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise Refused("the assertion is too long")
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Refused("the assertion is not a JWT") from None
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        raise Refused("the assertion names no issuer")
    if header.get("alg") not in ALGORITHMS:
        raise Refused("the assertion must be signed with RS256 or ES256", client_id)
    integration = EhrIntegration.objects.filter(client_id=client_id).first()
    if integration is None:
        raise Refused("unknown client", client_id)
    if integration.auth_method != AuthMethod.PRIVATE_KEY_JWT:
        raise Refused("this client authenticates with a secret, not signed assertions", client_id)
    key = _verification_key(integration, assertion, header.get("kid"))
    try:
        claims = jwt.decode(
            assertion,
            key,
            algorithms=list(ALGORITHMS),
            audience=audience,
            issuer=client_id,
            options={
                "require": ["iss", "sub", "aud", "exp", "iat", "jti"],
                "verify_exp": False,  # checked below against our clock
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidAudienceError:
        raise Refused(f"the assertion's aud must be {audience}", client_id) from None
    except jwt.MissingRequiredClaimError as exc:
        raise Refused(f"the assertion lacks the {exc.claim} claim", client_id) from None
    except jwt.InvalidSignatureError:
        raise Refused("the assertion's signature does not verify", client_id) from None
    except jwt.InvalidTokenError:
        raise Refused("the assertion is malformed", client_id) from None
    if claims["sub"] != client_id:
        raise Refused("the assertion's sub must be the client id", client_id)
    expires = _time(claims, "exp", client_id)
    issued = _time(claims, "iat", client_id)
    now = clock.now()
    leeway = timedelta(seconds=LEEWAY_SECONDS)
    if expires <= now - leeway:
        raise Refused("the assertion has expired", client_id)
    if issued > now + leeway:
        raise Refused("the assertion was issued in the future", client_id)
    if expires - issued > timedelta(seconds=MAX_ASSERTION_SECONDS):
        raise Refused(f"the assertion may live at most {MAX_ASSERTION_SECONDS} seconds", client_id)
    jti = claims["jti"]
    if not isinstance(jti, str) or not 1 <= len(jti) <= 255:
        raise Refused("the assertion's jti must be a string of at most 255 characters", client_id)
    _use_once(integration, jti, expires + leeway, now)
    return integration


def _time(claims: dict[str, Any], name: str, client_id: str) -> datetime:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(f"the assertion's {name} must be a number", client_id)
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise Refused(f"the assertion's {name} is out of range", client_id) from None


def _use_once(integration: EhrIntegration, jti: str, keep_until: datetime, now: datetime) -> None:
    """Remember ``jti`` until the assertion expires; a second use is refused."""
    UsedAssertion.objects.filter(expires_at__lt=now).delete()
    try:
        with transaction.atomic():
            UsedAssertion.objects.create(integration=integration, jti=jti, expires_at=keep_until)
    except IntegrityError:
        raise Refused("the assertion was already used (same jti)", integration.client_id) from None
