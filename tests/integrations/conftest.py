"""Fixtures of the EHR launch tests: two registered EHRs, their credentials, and a test "EHR" that calls us."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from integrations import clock
from integrations.ehr import tokens
from integrations.ehr.credentials import ASSERTION_TYPE, new_secret
from integrations.models import AuthMethod, EhrIntegration

LAUNCH_PATH = "/api/ehr/launch"


@pytest.fixture(autouse=True)
def no_token_in_any_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test here: no log record of any logger, at any level, holds a launch token it issued."""
    issued: list[str] = []
    real = tokens.new_token

    def remembering() -> tuple[str, str]:
        token, digest = real()
        issued.append(token)
        return token, digest

    monkeypatch.setattr(tokens, "new_token", remembering)
    caplog.set_level(logging.DEBUG)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.records
    text = "\n".join(r.getMessage() + str(r.args) + str(r.exc_text or "") for r in records)
    leaked = [t for t in issued if t in text or t.split(".")[0] in text]
    assert not leaked, "a launch token reached a log record"


@dataclass
class Ehr:
    """One registered EHR and what it authenticates with (a secret, or a private key)."""

    integration: EhrIntegration
    secret: str = ""
    private_key: Any = None
    algorithm: str = "RS256"
    kid: str = ""
    used_jtis: list[str] = field(default_factory=list)

    @property
    def client_id(self) -> str:
        return self.integration.client_id

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()

    def assertion(self, audience: str, **claims: Any) -> str:
        now = int(clock.now().timestamp())
        body = {"iss": self.client_id, "sub": self.client_id, "aud": audience, "iat": now, "exp": now + 60}
        body["jti"] = uuid.uuid4().hex
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": self.kid} if self.kid else None
        return jwt.encode(body, self.private_key, algorithm=self.algorithm, headers=headers)


def launch_body(study_uids: list[str] = (), accessions: list[str] = (), **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "clinician": {"id": "Practitioner/42", "name": "Dr Ada Lovelace", "email": "ada@ehr.example", "role": "GP"},
        "patient": {"id": "PAT-A1", "issuer": ""},
        "studies": [{"study_instance_uid": u} for u in study_uids] + [{"accession_number": a} for a in accessions],
    }
    body.update(overrides)
    return body


def pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def ehr(general_site: Any) -> Ehr:
    """An EHR of site A authenticating with a client secret (HTTP Basic)."""
    secret, digest = new_secret()
    integration = EhrIntegration.objects.create(
        name="Test EHR", client_id="test-ehr", secret_sha256=digest, return_origins="https://ehr.example"
    )
    integration.sites.add(general_site)
    return Ehr(integration, secret=secret)


@pytest.fixture
def jwt_ehr(general_site: Any) -> Ehr:
    """An EHR of site A authenticating with RS256 client assertions, its public key pasted as PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    integration = EhrIntegration.objects.create(
        name="Signed EHR",
        client_id="signed-ehr",
        auth_method=AuthMethod.PRIVATE_KEY_JWT,
        public_key_pem=pem(key),
    )
    integration.sites.add(general_site)
    return Ehr(integration, private_key=key)


@pytest.fixture
def es256_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def other_ehr(other_site: Any) -> Ehr:
    """An EHR of site B only."""
    secret, digest = new_secret()
    integration = EhrIntegration.objects.create(name="Other EHR", client_id="other-ehr", secret_sha256=digest)
    integration.sites.add(other_site)
    return Ehr(integration, secret=secret)


class Clock:
    """Moves :func:`integrations.clock.now` (token and assertion lifetimes) without touching the rest."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta()
        real = clock.now
        monkeypatch.setattr(clock, "now", lambda: real() + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def moving_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    yield Clock(monkeypatch)


def assertion_body(ehr: Ehr, audience: str, body: dict[str, Any], **claims: Any) -> dict[str, Any]:
    return {**body, "client_assertion_type": ASSERTION_TYPE, "client_assertion": ehr.assertion(audience, **claims)}


def token_of(launch_url: str) -> str:
    return launch_url.split("#", 1)[1]


def audit_reasons(action: str, outcome: str = "failure") -> list[str]:
    from audit.models import AuditEvent

    return [
        str(e.detail.get("reason", ""))
        for e in AuditEvent.objects.filter(action=action, outcome=outcome).order_by("pk")
    ]


def dumps(body: Any) -> str:
    return json.dumps(body)


@pytest.fixture
def page(chromium: Any, live_server: Any) -> Iterator[Any]:
    """A Chromium page (1000 x 700) of its own context; ``page.problems`` collects script errors and CSP reports."""
    context = chromium.new_context(viewport={"width": 1000, "height": 700})
    context.set_default_timeout(20000)
    page = context.new_page()
    page.problems = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("console", lambda m: "Content Security Policy" in m.text and page.problems.append(m.text))
    yield page
    context.close()
