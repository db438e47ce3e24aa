"""The test "EHR" of the SMART tests: the test OpenID provider (tests/portal/sso/oidc/provider.js) on loopback.

:class:`EhrServer` starts it on a free port and plays the parts of the EHR's
other actors: :meth:`EhrServer.launch` registers a launch for a patient (what
the EHR does when a clinician opens an app from a chart), and
:meth:`EhrServer.authorize` runs a whole authorization-code + PKCE flow as a
SMART app would (sign-in and consent forms posted like a browser does) and
returns the token response.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import subprocess
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from tests.portal.sso.provider import start_provider

LOGIN, PASSWORD = "dr.ada", "ehr password 1"
#: The third-party imaging app's callback: never contacted, the code is read from the redirect.
APP_CALLBACK = "http://127.0.0.1:9/app/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class EhrServer:
    url: str
    process: subprocess.Popen[str]
    secrets: dict[str, str]

    @property
    def fhir(self) -> str:
        return f"{self.url}/fhir"

    def launch(self, patient: str) -> str:
        answer = requests.post(f"{self.url}/test-control/launch", json={"patient": patient}, timeout=10)
        answer.raise_for_status()
        return str(answer.json()["launch"])

    def sign_in_and_consent(self, browser: requests.Session, url: str, stop_at: str) -> str:
        """Follow redirects like a browser, posting the EHR's sign-in and consent forms, until ``stop_at``."""
        for _ in range(20):
            if url.startswith(stop_at):
                return url
            response = browser.get(url, allow_redirects=False, timeout=10)
            if response.status_code in (302, 303):
                url = urljoin(url, response.headers["Location"])
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            action = response.text.split('action="', 1)[1].split('"', 1)[0]
            form = {"login": LOGIN, "password": PASSWORD} if action.endswith("/login") else {}
            posted = browser.post(urljoin(url, action), data=form, allow_redirects=False, timeout=10)
            assert posted.status_code in (302, 303), posted.text[:500]
            url = urljoin(url, posted.headers["Location"])
        raise AssertionError("the authorization flow did not end")

    def authorize(self, client_id: str, scope: str, patient: str = "", resource: str = "") -> dict[str, Any]:
        """A SMART app's EHR launch: authorize (with ``launch``), sign in, consent, redeem the code."""
        verifier, challenge = pkce()
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": APP_CALLBACK,
            "scope": scope,
            "state": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "aud": self.fhir,
        }
        if patient:
            params["launch"] = self.launch(patient)
        if resource:
            params["resource"] = resource
        browser = requests.Session()
        start = requests.Request("GET", f"{self.url}/auth", params=params).prepare().url
        assert start is not None
        back = self.sign_in_and_consent(browser, start, APP_CALLBACK)
        query = parse_qs(urlsplit(back).query)
        assert "code" in query, query
        token = requests.post(
            f"{self.url}/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": APP_CALLBACK,
                "code_verifier": verifier,
                **({"resource": resource} if resource else {}),
            },
            auth=(client_id, self.secrets[client_id]),
            timeout=10,
        )
        assert token.status_code == 200, token.text
        return dict(token.json())

    def revoke(self, client_id: str, token: str) -> None:
        answer = requests.post(
            f"{self.url}/token/revocation", data={"token": token}, auth=(client_id, self.secrets[client_id]), timeout=10
        )
        assert answer.status_code == 200, answer.text

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_ehr(pacs_audience: str, clients: list[dict[str, Any]], patients: dict[str, Any]) -> EhrServer:
    provider = start_provider(clients, {LOGIN: {"password": PASSWORD}}, pacs=pacs_audience, patients=patients)
    return EhrServer(provider.url, provider.process, {c["client_id"]: c["client_secret"] for c in clients})
