"""Fixtures of the SMART tests: the test EHR (a real oidc-provider) and its registration here."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from integrations.models import EhrIntegration
from tests.integrations.smart.ehr import APP_CALLBACK, EhrServer, start_ehr

#: The audience the EHR's tokens for this archive carry (its resource indicator for us).
AUDIENCE = "https://pacs.test/"
PACS_SECRET = "pacs-at-the-ehr-" + "s" * 32
CLIENTS = [
    {"client_id": "imaging-app", "client_secret": "a" * 40, "redirect_uris": [APP_CALLBACK], "resource": "pacs"},
    {
        "client_id": "imaging-app-jwt",
        "client_secret": "b" * 40,
        "redirect_uris": [APP_CALLBACK],
        "resource": "pacs",
        "format": "jwt",
    },
    {
        "client_id": "imaging-app-brief",
        "client_secret": "c" * 40,
        "redirect_uris": [APP_CALLBACK],
        "resource": "pacs",
        "ttl": 2,
    },
    {
        "client_id": "pacs",
        "client_secret": PACS_SECRET,
        "redirect_uris": [APP_CALLBACK, "http://testserver/smart/callback"],
        "resource": "ehr",
    },
]
SYSTEM = "urn:oid:1.2.3.4.5"
#: The EHR's patients: FHIR id → identifiers (ours are the Patient IDs of the test studies).
PATIENTS = {
    "pa": {"identifier": [{"system": SYSTEM, "value": "PAT-A1"}, {"system": "urn:other", "value": "X"}]},
    "pb": {"identifier": [{"system": SYSTEM, "value": "PAT-B2"}]},
    "pz": {"identifier": [{"system": "urn:other", "value": "PAT-A1"}]},
}


@pytest.fixture(scope="module")
def ehr_server() -> Iterator[EhrServer]:
    server = start_ehr(AUDIENCE, CLIENTS, PATIENTS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_token_in_any_log(
    ehr_server: EhrServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Every test here: no log record of any logger, at any level, holds an access token or code the EHR issued."""
    issued: list[str] = []
    real = EhrServer.authorize

    def remembering(self: EhrServer, *args: Any, **kwargs: Any) -> dict[str, Any]:
        answer = real(self, *args, **kwargs)
        issued.append(answer["access_token"])
        return answer

    monkeypatch.setattr(EhrServer, "authorize", remembering)
    caplog.set_level(logging.DEBUG)
    yield
    text = "\n".join(r.getMessage() + str(r.args) + str(r.exc_text or "") for r in caplog.records)
    assert not [t for t in issued if t in text], "an access token reached a log record"


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def smart_ehr(ehr_server: EhrServer, general_site: Any) -> EhrIntegration:
    integration = EhrIntegration.objects.create(
        name="SMART EHR",
        client_id="smart-ehr",
        smart_fhir_base=ehr_server.fhir,
        smart_client_id="pacs",
        smart_client_secret=PACS_SECRET,
        smart_patient_system=SYSTEM,
        smart_audience=AUDIENCE,
    )
    integration.sites.add(general_site)
    return integration
