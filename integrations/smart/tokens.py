"""SMART Imaging Access: EHR-issued access tokens accepted by DICOMweb and FHIR (``PACS_BEARER_VALIDATORS``).

:class:`SmartTokenValidator` is the archive's pluggable bearer validator for
access tokens issued by a registered EHR's authorization server (an
:class:`~integrations.models.EhrIntegration` with ``smart_audience`` set):

* **Checked** by token introspection (RFC 7662, this archive authenticating as
  the integration's SMART client) or, for ``smart_token_check = jwks``, by the
  JWT's signature against the EHR's JWKS (keys cached), with ``iss`` (the
  EHR's issuer), ``aud`` (the integration's audience) and ``exp`` required.
  A check's answer is kept for ``PACS_SMART_TOKEN_CACHE_SECONDS`` (60 s; never
  past the token's expiry), keyed by the token's SHA-256: a revoked token
  works at most that long after its revocation.
* **Scopes**: one of ``patient/ImagingStudy.read``, ``patient/*.read`` (or the
  SMART v2 ``.rs`` forms), or the ``user/`` forms, as the Argonaut draft
  lists them; otherwise 403. The token must carry a ``patient`` (a token of a
  user with no patient context is refused, 403).
* **Reach**: the token stands for a service account of that EHR and patient
  (``smart.<client id>.<digest>``, no password, no role, no site) holding
  grants, expiring with the token, for that patient's studies at the EHR's
  sites — so the one access policy shows the token exactly those studies,
  in QIDO searches too. A query naming another patient is 403. What a token
  reaches is remembered as its check is (so a study that arrives, or an
  integration disabled, counts from the next check at the latest): a request
  with a remembered token costs one query (its account).

**Which EHR sees a token** is chosen before anything is sent: a JWT by its
(unverified) ``iss``, matched to exactly one integration's issuer; an opaque
token only when exactly one enabled integration checks by introspection. A
token is never offered to one EHR after another (EHR B never receives EHR
A's tokens). One client address may have at most
``PACS_SMART_CHECKS_PER_MINUTE`` (30) not-yet-known tokens checked a minute;
past that, 401 without asking any EHR.

Unknown tokens (no integration recognises them) are 401, like an expired,
revoked or wrong-audience one. Every refusal is audited (``smart.token``),
never with the token.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest

from archive.bearer import Bearer, BearerValidator
from archive.models import Patient
from audit.trail import client_ip, record
from integrations.models import EhrIntegration
from integrations.smart import discovery, patients
from portal.models import AccessGrant

TIMEOUT_SECONDS = 5
#: Scopes that allow reading imaging (SMART v1 and v2 spellings), per the Argonaut imaging draft.
IMAGING_SCOPES = {
    f"{who}/{what}.{how}" for who in ("patient", "user") for what in ("ImagingStudy", "*") for how in ("read", "rs")
}
_jwk_clients: dict[str, jwt.PyJWKClient] = {}


class Refused(Exception):
    def __init__(self, status: int, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason


@dataclass(frozen=True)
class Checked:
    """What a valid token says, as cached."""

    integration: int
    patient: str
    scopes: tuple[str, ...]
    exp: int
    client_id: str


def _integrations() -> list[EhrIntegration]:
    return list(EhrIntegration.objects.filter(enabled=True).exclude(smart_audience="").exclude(smart_fhir_base="")[:20])


def _audience_ok(aud: Any, wanted: str) -> bool:
    values = aud if isinstance(aud, list) else [aud]
    return wanted in [v for v in values if isinstance(v, str)]


def _introspect(integration: EhrIntegration, token: str) -> dict[str, Any] | None:
    config = discovery.configuration(integration)
    if not config.introspection_endpoint:
        return None
    try:
        response = requests.post(
            config.introspection_endpoint,
            data={"token": token, "token_type_hint": "access_token"},
            auth=(integration.smart_client_id, integration.smart_client_secret),
            headers={"Accept": "application/json"},
            timeout=TIMEOUT_SECONDS,
        )
        answer = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(answer, dict) or answer.get("active") is not True:
        return None
    if config.issuer and answer.get("iss", config.issuer) != config.issuer:
        return None
    return answer


def _verify_jwt(integration: EhrIntegration, token: str) -> dict[str, Any] | None:
    config = discovery.configuration(integration)
    if not config.jwks_uri or not config.issuer:
        return None
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    if unverified.get("iss") != config.issuer:
        return None  # another authorization server's token
    client = _jwk_clients.setdefault(config.jwks_uri, jwt.PyJWKClient(config.jwks_uri, lifespan=300))
    try:
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256", "ES256"],
            issuer=config.issuer,
            options={"require": ["exp", "iss", "aud"], "verify_aud": False},
        )
    except (jwt.PyJWTError, jwt.PyJWKClientError):
        raise Refused(401, "Invalid or expired token", "signature, issuer or expiry") from None
    return dict(claims)


def _unverified_issuer(token: str) -> str | None:
    """The ``iss`` a JWT claims (unverified: it only chooses where to check it), or None if not a JWT with one."""
    if token.count(".") != 2:
        return None
    try:
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return iss if isinstance(iss, str) and iss else None


def _integration_for(token: str) -> EhrIntegration | None:
    """The ONE integration that may see this token, chosen before anything is sent anywhere; None if none.

    A JWT naming an issuer goes to the one integration of that issuer only.
    Any other token (opaque) goes to the integration that checks by
    introspection, only when exactly one enabled integration does. A token is
    never tried on one EHR after another: EHR B must not receive EHR A's tokens.
    """
    integrations = _integrations()
    iss = _unverified_issuer(token)
    if iss is not None:
        matching = []
        for integration in integrations:
            try:
                if discovery.configuration(integration).issuer == iss:
                    matching.append(integration)
            except discovery.DiscoveryProblem:
                continue
        return matching[0] if len(matching) == 1 else None
    introspecting = [i for i in integrations if i.smart_token_check != "jwks"]
    return introspecting[0] if len(introspecting) == 1 else None


def _check(token: str) -> Checked | None:
    """Which integration's valid token this is, and what it says; None if none recognises it."""
    looks_like_jwt = token.count(".") == 2
    chosen = _integration_for(token)
    for integration in [chosen] if chosen is not None else []:
        try:
            if integration.smart_token_check == "jwks":
                claims = _verify_jwt(integration, token) if looks_like_jwt else None
            else:
                claims = _introspect(integration, token)
        except discovery.DiscoveryProblem:
            continue
        if claims is None:
            continue
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            raise Refused(401, "Invalid or expired token", "expired")
        if not _audience_ok(claims.get("aud"), integration.smart_audience):
            raise Refused(401, "The token is not meant for this server (audience)", "wrong audience")
        scope, patient = claims.get("scope"), claims.get("patient")
        return Checked(
            integration.pk,
            patient if isinstance(patient, str) else "",
            tuple(scope.split()) if isinstance(scope, str) else (),
            exp,
            str(claims.get("client_id", ""))[:200],
        )
    return None


#: How long a token no EHR recognised is remembered as such (so a stream of bad tokens is not a stream of calls).
UNKNOWN_SECONDS = 10


#: How many tokens not yet known one client address may have checked per minute (``PACS_SMART_CHECKS_PER_MINUTE``).
CHECKS_PER_MINUTE = 30


def _count_unknown_check(request: HttpRequest) -> None:
    """Count a check of a not-yet-known token for the client's address; refuse past the per-minute limit.

    So a stream of random tokens cannot make this server hammer the EHRs.
    """
    limit = getattr(settings, "PACS_SMART_CHECKS_PER_MINUTE", CHECKS_PER_MINUTE)
    key = f"smart-checks:{client_ip(request)}:{int(time.time() // 60)}"
    cache.add(key, 0, 120)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, 120)
        count = 1
    if count > limit:
        raise Refused(401, "Too many unknown tokens from this address; try again in a minute", "rate limited")


def _checked(request: HttpRequest, token: str) -> Checked | None:
    key = "smart-token:" + hashlib.sha256(token.encode()).hexdigest()
    found = cache.get(key)
    if found == "unknown":
        return None
    if isinstance(found, Checked) and found.exp > time.time():
        return found
    _count_unknown_check(request)
    checked = _check(token)
    if checked is None:
        cache.set(key, "unknown", UNKNOWN_SECONDS)
    else:
        keep = min(getattr(settings, "PACS_SMART_TOKEN_CACHE_SECONDS", 60), int(checked.exp - time.time()))
        if keep > 0:
            cache.set(key, checked, keep)
    return checked


def _account(integration: EhrIntegration, fhir_id: str) -> Any:
    digest = hashlib.sha256(f"{integration.pk}:{fhir_id}".encode()).hexdigest()[:16]
    username = f"smart.{integration.client_id}.{digest}"[:150]
    user, created = get_user_model().objects.get_or_create(username=username, defaults={"first_name": "SMART"})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _grant(user: Any, integration: EhrIntegration, patient: Patient | None, exp: int) -> None:
    """Grants (unscoped, expiring with the token) for the patient's studies at the EHR's sites, and no others."""
    until = datetime.fromtimestamp(exp, UTC)
    with transaction.atomic():
        study_ids = (
            set(patients.studies_of(integration, patient).values_list("pk", flat=True))
            if patient is not None
            else set()
        )
        # The account stands for this one patient: grants of any other study (a match learnt
        # before, under another issuer) are withdrawn.
        AccessGrant.objects.filter(user=user, scope="").exclude(study_id__in=study_ids).delete()
        mine = AccessGrant.objects.filter(user=user, scope="", study_id__in=study_ids)
        held = set(mine.values_list("study_id", flat=True))
        mine.filter(expires_at__lt=until).update(expires_at=until)
        AccessGrant.objects.bulk_create(
            AccessGrant(
                user=user,
                study_id=pk,
                reason=f"SMART access token of {integration.name} for the patient in context",
                expires_at=until,
            )
            for pk in study_ids - held
        )


#: Query parameters that name a patient, by interface (DICOMweb keyword or tag; FHIR search parameters).
DICOMWEB_PATIENT = ("PatientID", "00100020")
FHIR_PATIENT = ("patient.identifier", "subject.identifier", "identifier")


def _names_another_patient(request: HttpRequest, patient_pk: int | None, patient_id: str | None) -> bool:
    path = request.path_info
    if path.startswith("/dicom-web/"):
        names = [v for k in DICOMWEB_PATIENT for v in request.GET.getlist(k)]
        return any(v.strip() != patient_id for v in names)
    if path.startswith("/fhir/"):
        params = request.GET.copy()
        if request.method == "POST" and path.endswith("/_search"):
            params.update(request.POST)
        keys = [k for k in FHIR_PATIENT if not (k == "identifier" and not path.startswith("/fhir/Patient"))]
        names = [v for k in keys for item in params.getlist(k) for v in item.split(",")]
        refs = [v for k in ("patient", "subject") for item in params.getlist(k) for v in item.split(",")]
        if any(v.rsplit("|", 1)[-1].strip() != patient_id for v in names):
            return True
        return any(v.removeprefix("Patient/").strip() != str(patient_pk or "") for v in refs)
    return False


class SmartTokenValidator(BearerValidator):
    """See the module docstring."""

    def authenticate(self, request: HttpRequest, token: str) -> Bearer | None:
        try:
            return self._authenticate(request, token)
        except Refused as refused:
            record(
                "smart.token",
                request,
                user=None,
                outcome="failure",
                actor="smart",
                detail={"reason": refused.reason, "path": request.path_info[:200]},
            )
            return Bearer(None, refused.status, refused.detail)

    def _authenticate(self, request: HttpRequest, token: str) -> Bearer | None:
        if len(token) > 4096:
            return None
        key = "smart-reach:" + hashlib.sha256(token.encode()).hexdigest()
        reach = cache.get(key)
        if not (isinstance(reach, Reach) and reach.exp > time.time()):
            checked = _checked(request, token)
            if checked is None:
                return None
            reach = _reach(checked, token)
            keep = min(getattr(settings, "PACS_SMART_TOKEN_CACHE_SECONDS", 60), int(reach.exp - time.time()))
            if keep > 0:
                cache.set(key, reach, keep)
        if _names_another_patient(request, reach.patient_pk, reach.patient_id):
            raise Refused(403, "The token is for another patient", "another patient")
        user = get_user_model().objects.filter(pk=reach.user_pk, is_active=True).first()
        if user is None:
            raise Refused(401, "Invalid or expired token", "account disabled")
        return Bearer(user)


@dataclass(frozen=True)
class Reach:
    """What a checked token may reach, as cached: its service account and its patient (pk and Patient ID)."""

    user_pk: int
    patient_pk: int | None
    patient_id: str | None
    exp: int


def _reach(checked: Checked, token: str) -> Reach:
    """Check what the token says against the integration; map its patient; grant the patient's studies."""
    integration = EhrIntegration.objects.filter(pk=checked.integration, enabled=True).first()
    if integration is None:
        raise Refused(401, "Invalid or expired token", "integration disabled")
    if not IMAGING_SCOPES & set(checked.scopes):
        raise Refused(403, "The token's scopes do not allow reading imaging (patient/ImagingStudy.read)", "scope")
    if not patients.is_fhir_id(checked.patient):
        raise Refused(403, "This server needs a token with a patient context", "no patient")
    try:
        patient = patients.patient_for(integration, checked.patient, token)
    except patients.PatientProblem as problem:
        raise Refused(403, "The token's patient could not be matched here", str(problem)) from None
    user = _account(integration, checked.patient)
    _grant(user, integration, patient, checked.exp)
    return Reach(
        int(user.pk),
        patient.pk if patient is not None else None,
        patient.patient_id if patient is not None else None,
        checked.exp,
    )
