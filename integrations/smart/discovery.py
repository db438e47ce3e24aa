"""An EHR's SMART configuration (``<FHIR base>/.well-known/smart-configuration``), fetched and kept for a while.

Every SMART step needs the EHR's endpoints: the authorization and token
endpoints (App Launch), the introspection endpoint or the JWKS and the
issuer (checking access tokens). :func:`configuration` fetches them from the
EHR's FHIR base registered on the :class:`~integrations.models.EhrIntegration`
and keeps them in the cache for ``PACS_SMART_DISCOVERY_SECONDS`` (5 minutes).
A configuration that is not JSON, lacks an endpoint, or offers PKCE without
S256 is a :class:`DiscoveryProblem`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache

from integrations.models import EhrIntegration

TIMEOUT_SECONDS = 5
SECURITY_SERVICES = "http://terminology.hl7.org/CodeSystem/restful-security-service"
MAX_BYTES = 64 * 1024


class DiscoveryProblem(Exception):
    """The EHR's SMART configuration could not be read or is not usable."""


@dataclass(frozen=True)
class SmartConfiguration:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    introspection_endpoint: str = ""
    jwks_uri: str = ""


def well_known(fhir_base: str) -> str:
    return fhir_base.rstrip("/") + "/.well-known/smart-configuration"


def _fetch(fhir_base: str) -> dict[str, Any]:
    try:
        with requests.get(
            well_known(fhir_base), headers={"Accept": "application/json"}, timeout=TIMEOUT_SECONDS, stream=True
        ) as response:
            body = response.raw.read(MAX_BYTES + 1, decode_content=True)
    except (requests.RequestException, OSError) as exc:
        raise DiscoveryProblem(f"the EHR's SMART configuration could not be fetched ({type(exc).__name__})") from None
    if response.status_code != 200 or len(body) > MAX_BYTES:
        raise DiscoveryProblem(f"the EHR's SMART configuration answered {response.status_code}")
    try:
        found = json.loads(body)
    except ValueError:
        raise DiscoveryProblem("the EHR's SMART configuration is not JSON") from None
    if not isinstance(found, dict):
        raise DiscoveryProblem("the EHR's SMART configuration is not a JSON object")
    return found


def configuration(integration: EhrIntegration) -> SmartConfiguration:
    """The integration's SMART configuration (cached)."""
    if not integration.smart_fhir_base:
        raise DiscoveryProblem("the integration has no FHIR base (iss)")
    key = "smart-configuration:" + hashlib.sha256(integration.smart_fhir_base.encode()).hexdigest()
    found = cache.get(key)
    if found is None:
        found = _fetch(integration.smart_fhir_base)
        cache.set(key, found, getattr(settings, "PACS_SMART_DISCOVERY_SECONDS", 300))
    text = {k: v for k, v in found.items() if isinstance(v, str)}
    if not (text.get("authorization_endpoint") and text.get("token_endpoint")):
        raise DiscoveryProblem("the EHR's SMART configuration names no authorization or token endpoint")
    methods = found.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        raise DiscoveryProblem("the EHR's authorization server does not offer PKCE with S256")
    return SmartConfiguration(
        issuer=text.get("issuer", ""),
        authorization_endpoint=text["authorization_endpoint"],
        token_endpoint=text["token_endpoint"],
        introspection_endpoint=text.get("introspection_endpoint", ""),
        jwks_uri=text.get("jwks_uri", ""),
    )


def imaging_integration() -> EhrIntegration | None:
    """The EHR whose authorization server this archive's discovery names: the first enabled one accepting tokens."""
    return (
        EhrIntegration.objects.filter(enabled=True)
        .exclude(smart_audience="")
        .exclude(smart_fhir_base="")
        .order_by("name")
        .first()
    )


def published() -> dict[str, Any] | None:
    """This archive's own ``.well-known/smart-configuration``: the EHR's authorization server, as the draft asks."""
    integration = imaging_integration()
    if integration is None:
        return None
    try:
        config = configuration(integration)
    except DiscoveryProblem:
        return None
    answer: dict[str, Any] = {
        "issuer": config.issuer,
        "authorization_endpoint": config.authorization_endpoint,
        "token_endpoint": config.token_endpoint,
        "jwks_uri": config.jwks_uri,
        "introspection_endpoint": config.introspection_endpoint,
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": sorted(["launch", "launch/patient", "patient/ImagingStudy.read", "patient/*.read"]),
        "capabilities": ["launch-ehr", "context-ehr-patient", "permission-patient"],
        "response_types_supported": ["code"],
    }
    return {k: v for k, v in answer.items() if v}


def fhir_security(request: Any) -> dict[str, Any] | None:
    """The CapabilityStatement's ``rest.security`` for SMART (``PACS_FHIR_SECURITY``), or None without one."""
    found = published()
    if found is None:
        return None
    uris = [{"url": "authorize", "valueUri": found["authorization_endpoint"]}]
    uris.append({"url": "token", "valueUri": found["token_endpoint"]})
    if "introspection_endpoint" in found:
        uris.append({"url": "introspect", "valueUri": found["introspection_endpoint"]})
    return {
        "extension": [
            {"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", "extension": uris}
        ],
        "service": [{"coding": [{"system": SECURITY_SERVICES, "code": "SMART-on-FHIR"}]}],
    }
