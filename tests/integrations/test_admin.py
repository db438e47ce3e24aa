"""EHR integrations in the admin: the secret is generated, shown once on its own page, and kept only hashed."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from audit.models import AuditEvent
from integrations.models import AuthMethod, EhrIntegration
from tests.integrations.conftest import pem
from tests.mfa_support import force_verified_login

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(admin_user: User) -> Client:
    client = Client()
    force_verified_login(client, admin_user)
    return client


def add(admin_browser: Client, site: Any, **fields: Any) -> Any:
    data = {
        "name": "Chart EHR",
        "client_id": "chart-ehr",
        "auth_method": AuthMethod.CLIENT_SECRET_BASIC,
        "jwks_url": "",
        "public_key_pem": "",
        "sites": [site.pk],
        "return_origins": "https://ehr.example",
        "token_lifetime_seconds": "120",
        "enabled": "on",
        **fields,
    }
    return admin_browser.post("/admin/integrations/ehrintegration/add/", data)


def test_adding_an_integration_shows_its_secret_once_and_keeps_only_its_hash(
    admin_browser: Client, general_site: Any
) -> None:
    response = add(admin_browser, general_site)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = re.search(r'id="client-secret">([^<]+)<', response.content.decode()).group(1)  # type: ignore[union-attr]
    integration = EhrIntegration.objects.get(client_id="chart-ehr")
    assert integration.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    page = admin_browser.get(f"/admin/integrations/ehrintegration/{integration.pk}/change/")
    assert page.status_code == 200 and secret not in page.content.decode()
    assert AuditEvent.objects.filter(action="ehr.integration.add").count() == 1
    renewed = admin_browser.post(
        "/admin/integrations/ehrintegration/",
        {"action": "issue_secret", "_selected_action": [integration.pk]},
    )
    second = re.search(r'id="client-secret">([^<]+)<', renewed.content.decode()).group(1)  # type: ignore[union-attr]
    integration.refresh_from_db()
    assert second != secret and integration.secret_sha256 == hashlib.sha256(second.encode()).hexdigest()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"auth_method": AuthMethod.PRIVATE_KEY_JWT}, "needs a JWKS URL or a public key"),
        ({"auth_method": AuthMethod.PRIVATE_KEY_JWT, "public_key_pem": "not a key"}, "Not a PEM public key."),
        ({"return_origins": "javascript:alert(1)"}, "Not an origin"),
        ({"token_lifetime_seconds": "3600"}, "less than or equal to 600"),
        ({"client_id": "bad id"}, "Letters, digits"),
    ],
)
def test_a_wrong_integration_is_refused_by_the_form(
    admin_browser: Client, general_site: Any, fields: dict[str, Any], error: str
) -> None:
    response = add(admin_browser, general_site, **fields)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not EhrIntegration.objects.exists()


def test_a_signed_assertion_integration_takes_a_pasted_public_key(admin_browser: Client, general_site: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = pem(ec.generate_private_key(ec.SECP256R1()))
    response = add(admin_browser, general_site, auth_method=AuthMethod.PRIVATE_KEY_JWT, public_key_pem=key)
    assert response.status_code == 302
    integration = EhrIntegration.objects.get()
    assert (integration.secret_sha256, integration.public_key_pem.strip()) == ("", key.strip())


def test_smart_settings_are_saved_and_our_client_secret_at_the_ehr_is_never_shown_back(
    admin_browser: Client, general_site: Any
) -> None:
    smart = {
        "smart_fhir_base": "https://ehr.example/fhir",
        "smart_client_id": "pacs",
        "smart_client_secret": "our secret at the EHR",
        "smart_patient_system": "urn:oid:1.2.3",
        "smart_audience": "https://pacs.example/",
        "smart_token_check": "jwks",
    }
    assert add(admin_browser, general_site, **smart).status_code == 200
    integration = EhrIntegration.objects.get()
    assert (integration.smart_client_secret, integration.smart_token_check) == ("our secret at the EHR", "jwks")
    url = f"/admin/integrations/ehrintegration/{integration.pk}/change/"
    assert b"our secret at the EHR" not in admin_browser.get(url).content
    unchanged = {**smart, "smart_client_secret": "", "smart_token_check": "introspection"}
    data = {
        "name": "Chart EHR",
        "client_id": "chart-ehr",
        "auth_method": AuthMethod.CLIENT_SECRET_BASIC,
        "sites": [general_site.pk],
        "return_origins": "https://ehr.example",
        "token_lifetime_seconds": "120",
        "enabled": "on",
        **unchanged,
    }
    assert admin_browser.post(url, data).status_code == 302
    integration.refresh_from_db()
    kept = (integration.smart_client_secret, integration.smart_token_check)
    assert kept == ("our secret at the EHR", "introspection")


def test_accepting_smart_tokens_needs_the_fhir_base_and_client(admin_browser: Client, general_site: Any) -> None:
    response = add(admin_browser, general_site, smart_audience="https://pacs.example/")
    assert response.status_code == 200 and b"needs the FHIR base and client id" in response.content
    assert not EhrIntegration.objects.exists()
