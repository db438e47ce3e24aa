"""SMART App Launch (EHR launch) into the viewer: the two steps of the authorization-code flow with PKCE.

1. :func:`begin` — the EHR opens ``/smart/launch?iss=…&launch=…``. The ``iss``
   must be the FHIR base of an enabled :class:`~integrations.models.EhrIntegration`;
   its ``.well-known/smart-configuration`` gives the endpoints and must offer
   S256. We keep a fresh ``state`` and PKCE verifier (S256 only) in the
   browser's session and send the browser to the EHR's authorization endpoint
   with the ``launch`` and ``aud`` (= ``iss``) parameters.
2. :func:`finish` — the EHR sends the browser back to ``/smart/callback`` with
   ``code`` and ``state``. The state must be one we issued to this browser in
   the last 10 minutes (each is used once). We redeem the code at the token
   endpoint (with the verifier, authenticating as the integration's client),
   take the ``patient`` of the token response, learn our patient from the
   EHR's FHIR Patient (:mod:`.patients`), and return what to grant: that
   patient's studies at the integration's sites. The clinician is the
   token's subject (from introspection), bound to an account as the
   server-to-server launch binds its clinicians (:class:`EhrIdentity`, id
   ``smart:<sub>``), a referring clinician with no password.

The access token is used for these calls only and kept nowhere; the code is
never logged (it is in no log call here; ``pacs.lib.accesslog`` scrubs the
callback's query from gunicorn's access log).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse

from archive.models import Study
from audit.trail import record
from integrations import clock
from integrations.models import EhrIdentity, EhrIntegration
from integrations.smart import discovery, patients
from portal.accounts.groups import add_role
from portal.accounts.roles import Role
from portal.models import AccessGrant

#: Session key of the flows this browser has begun: {state: {integration, verifier, began}}.
SESSION_FLOWS = "pacs_smart_flows"
FLOW_SECONDS = 600
MAX_FLOWS = 5
TIMEOUT_SECONDS = 5
DEFAULT_SCOPE = "launch patient/Patient.read"


class Problem(enum.Enum):
    UNKNOWN_ISS = "unknown-iss"
    MISSING = "missing"
    DISCOVERY = "discovery"
    STATE = "state"
    DENIED = "denied"
    TOKEN = "token"
    NO_PATIENT = "no-patient"
    PATIENT = "patient"


class LaunchProblem(Exception):
    def __init__(self, problem: Problem, detail: str = "", integration: EhrIntegration | None = None) -> None:
        super().__init__(problem.value)
        self.problem, self.detail, self.integration = problem, detail, integration


@dataclass
class Opened:
    user: Any
    scope: str
    studies: list[Study] = field(default_factory=list)


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _refused(problem: LaunchProblem, request: HttpRequest) -> None:
    record(
        "smart.launch",
        request,
        outcome="failure",
        actor=f"ehr:{problem.integration.client_id}" if problem.integration else "smart",
        detail={"reason": problem.problem.value, "detail": problem.detail[:200]},
    )


def callback_url(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("smart-callback"))


def begin(request: HttpRequest, iss: str, launch: str) -> str:
    """Where to send the browser: the EHR's authorization endpoint (see the module docstring)."""
    integration = None
    try:
        if not iss or not launch or len(launch) > 1000 or len(iss) > 500:
            raise LaunchProblem(Problem.MISSING, "iss and launch are both needed")
        integration = (
            EhrIntegration.objects.filter(enabled=True, smart_fhir_base__in=[iss.rstrip("/"), iss.rstrip("/") + "/"])
            .exclude(smart_client_id="")
            .first()
        )
        if integration is None:
            raise LaunchProblem(Problem.UNKNOWN_ISS, "no enabled EHR integration has this FHIR base")
        try:
            config = discovery.configuration(integration)
        except discovery.DiscoveryProblem as exc:
            raise LaunchProblem(Problem.DISCOVERY, str(exc), integration) from None
    except LaunchProblem as problem:
        _refused(problem, request)
        raise
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    flows = {
        k: v
        for k, v in dict(request.session.get(SESSION_FLOWS, {})).items()
        if isinstance(v, dict) and v.get("began", 0) > time.time() - FLOW_SECONDS
    }
    flows = dict(sorted(flows.items(), key=lambda kv: kv[1]["began"])[-(MAX_FLOWS - 1) :])
    flows[state] = {"integration": integration.pk, "verifier": verifier, "began": time.time()}
    request.session[SESSION_FLOWS] = flows
    actor = f"ehr:{integration.client_id}"
    record("smart.launch.begin", request, actor=actor, detail={"iss": integration.smart_fhir_base})
    query = {
        "response_type": "code",
        "client_id": integration.smart_client_id,
        "redirect_uri": callback_url(request),
        "scope": integration.smart_scope or DEFAULT_SCOPE,
        "state": state,
        "aud": integration.smart_fhir_base,
        "launch": launch,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
    }
    return f"{config.authorization_endpoint}?{urlencode(query)}"


def _redeem(integration: EhrIntegration, code: str, verifier: str, request: HttpRequest) -> dict[str, Any]:
    config = discovery.configuration(integration)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": callback_url(request),
        "code_verifier": verifier,
    }
    auth = None
    if integration.smart_client_secret:
        auth = (integration.smart_client_id, integration.smart_client_secret)
    else:
        data["client_id"] = integration.smart_client_id
    try:
        response = requests.post(
            config.token_endpoint, data=data, auth=auth, headers={"Accept": "application/json"}, timeout=TIMEOUT_SECONDS
        )
        answer = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        raise LaunchProblem(Problem.TOKEN, "the EHR's token endpoint did not give an access token", integration)
    return answer


def _subject(integration: EhrIntegration, access_token: str) -> str:
    """The clinician the token was issued to (introspection's ``sub``), or ``""``."""
    config = discovery.configuration(integration)
    if not config.introspection_endpoint or not integration.smart_client_secret:
        return ""
    try:
        response = requests.post(
            config.introspection_endpoint,
            data={"token": access_token},
            auth=(integration.smart_client_id, integration.smart_client_secret),
            timeout=TIMEOUT_SECONDS,
        )
        answer = response.json() if response.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        answer = {}
    sub = answer.get("sub") if isinstance(answer, dict) and answer.get("active") is True else ""
    return sub if isinstance(sub, str) else ""


#: ``EhrIdentity.clinician_id`` holds at most this many characters.
CLINICIAN_ID_LENGTH = 64


def clinician_id_of(sub: str) -> str:
    """The clinician id of an EHR user ``sub``: ``smart:<sub>`` if it fits, else ``smart#<SHA-256 of sub>``.

    Never truncated: two long ``sub``s sharing a beginning are two clinicians.
    A short ``sub`` stays readable; the ``#`` form (58 hex digits of the hash)
    cannot be a short one's.
    """
    plain = f"smart:{sub}"
    if len(plain) <= CLINICIAN_ID_LENGTH:
        return plain
    return "smart#" + hashlib.sha256(sub.encode()).hexdigest()[: CLINICIAN_ID_LENGTH - len("smart#")]


def _account(integration: EhrIntegration, sub: str) -> Any:
    clinician_id = clinician_id_of(sub)
    identity = EhrIdentity.objects.select_related("user").filter(integration=integration, clinician_id=clinician_id)
    found = identity.first()
    if found is not None:
        EhrIdentity.objects.filter(pk=found.pk).update(last_launch_at=clock.now())
        return found.user
    username = f"ehr.{integration.client_id}.{secrets.token_hex(6)}"
    user = get_user_model().objects.create_user(username, first_name="SMART clinician")
    add_role(user, Role.REFERRING_CLINICIAN)
    EhrIdentity.objects.create(integration=integration, clinician_id=clinician_id, user=user)
    return user


def finish(request: HttpRequest, state: str, code: str, error: str) -> Opened:
    """Redeem the code and say who signs in with which studies (see the module docstring)."""
    flows = dict(request.session.get(SESSION_FLOWS, {}))
    flow = flows.pop(state, None) if state else None
    request.session[SESSION_FLOWS] = flows
    integration = None
    try:
        if not isinstance(flow, dict) or flow.get("began", 0) <= time.time() - FLOW_SECONDS:
            raise LaunchProblem(Problem.STATE, "no launch of this browser has this state")
        integration = EhrIntegration.objects.filter(pk=flow["integration"], enabled=True).first()
        if integration is None:
            raise LaunchProblem(Problem.UNKNOWN_ISS, "the integration was disabled")
        if error or not code:
            raise LaunchProblem(Problem.DENIED, f"the EHR answered {error[:60] or 'no code'}", integration)
        try:
            token = _redeem(integration, code, str(flow["verifier"]), request)
            fhir_id = token.get("patient")
            if not patients.is_fhir_id(fhir_id):
                raise LaunchProblem(Problem.NO_PATIENT, "the token response has no patient", integration)
            try:
                patient = patients.patient_for(integration, str(fhir_id), token["access_token"])
            except patients.PatientProblem as exc:
                raise LaunchProblem(Problem.PATIENT, str(exc), integration) from None
            sub = _subject(integration, token["access_token"]) or str(token.get("sub", ""))
        except discovery.DiscoveryProblem as exc:
            raise LaunchProblem(Problem.DISCOVERY, str(exc), integration) from None
        if not sub:
            raise LaunchProblem(Problem.TOKEN, "the EHR did not say who the clinician is", integration)
    except LaunchProblem as problem:
        _refused(problem, request)
        raise
    with transaction.atomic():
        user = _account(integration, sub)
        scope = secrets.token_urlsafe(24)
        studies = list(patients.studies_of(integration, patient)) if patient is not None else []
        until = clock.now() + timedelta(seconds=settings.PACS_EHR_ACCESS_SECONDS)
        AccessGrant.objects.bulk_create(
            AccessGrant(
                user=user,
                study=study,
                scope=scope,
                reason=f"SMART launch by {integration.name}",
                expires_at=until,
            )
            for study in studies
        )
        record(
            "smart.launch",
            request,
            user=user,
            patient_id=patient.patient_id if patient is not None else "",
            study_instance_uid=studies[0].study_instance_uid if len(studies) == 1 else "",
            detail={"integration": integration.client_id, "studies": [s.study_instance_uid for s in studies][:50]},
        )
    return Opened(user, scope, studies)
