"""Issuing and opening EHR launches: the service functions behind the API and the launch page.

:func:`issue` records a launch an authenticated EHR asked for and returns its
one-time token. :func:`open_launch` consumes a token (one conditional UPDATE,
so two browsers racing with one token cannot both win), finds or makes the
clinician's account, and grants it the launch's studies under a fresh session
scope; the caller then starts a session limited to that scope
(:func:`portal.accounts.sessions.limit_session`). :func:`grant_arrived` grants
studies that arrived after the launch was opened (the "images not yet
available" page and the launch's study list call it).

A study is granted only when it belongs to the launch's patient (Patient ID
and issuer, exactly) and to one of the integration's sites. Asking for a
study of another patient or another site refuses the whole launch (403); a
study that does not exist yet is waited for, and granted only if it arrives
under the same conditions. Every issue, use and refusal is audited; no token
and no token hash ever reaches the audit trail or a log.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest

from archive.models import Study
from audit.models import AuditEvent
from audit.trail import record
from integrations import clock
from integrations.ehr import tokens
from integrations.models import EhrIdentity, EhrIntegration, EhrLaunch
from portal.accounts.groups import add_role
from portal.accounts.roles import Role
from portal.models import AccessGrant


@dataclass(frozen=True)
class LaunchRequest:
    """What an EHR asks to open, already validated (see ``serializers``)."""

    clinician_id: str
    clinician_name: str
    clinician_email: str
    clinician_role: str
    patient_id: str
    issuer_of_patient_id: str
    study_instance_uids: tuple[str, ...]
    accession_numbers: tuple[str, ...]
    return_url: str = ""


@dataclass
class Matches:
    """The stored studies a launch names, split by whether the launch may open them."""

    allowed: list[Study] = field(default_factory=list)
    refused: list[Study] = field(default_factory=list)
    missing_uids: list[str] = field(default_factory=list)
    missing_accessions: list[str] = field(default_factory=list)


class Refusal(Exception):
    """A launch request the EHR may not make (HTTP 403); ``reason`` is safe to return and audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def match(
    integration: EhrIntegration, patient_id: str, issuer: str, uids: tuple[str, ...], accessions: tuple[str, ...]
) -> Matches:
    """Find the studies named by UID (anywhere) and by accession number (in the integration's sites)."""
    site_ids = set(integration.sites.values_list("pk", flat=True))
    wanted = Q(study_instance_uid__in=list(uids)) if uids else Q(pk__in=[])
    if accessions:
        wanted |= Q(accession_number__in=list(accessions), site_id__in=sorted(site_ids))
    found = list(Study.objects.filter(wanted, trashed_at__isnull=True).select_related("patient").order_by("pk"))
    result = Matches()
    for study in found:
        same_patient = study.patient.patient_id == patient_id and study.patient.issuer_of_patient_id == issuer
        (result.allowed if same_patient and study.site_id in site_ids else result.refused).append(study)
    by_uid = {s.study_instance_uid for s in found}
    by_accession = {s.accession_number for s in found if s.site_id in site_ids}
    result.missing_uids = [u for u in uids if u not in by_uid]
    result.missing_accessions = [a for a in accessions if a not in by_accession]
    order = {u: i for i, u in enumerate(uids)}
    result.allowed.sort(key=lambda s: (order.get(s.study_instance_uid, len(order)), s.pk))
    return result


@dataclass(frozen=True)
class Issued:
    launch: EhrLaunch
    token: str
    matches: Matches


def _actor(integration: EhrIntegration) -> str:
    return f"ehr:{integration.client_id}"


def issue(integration: EhrIntegration, wanted: LaunchRequest, request: HttpRequest) -> Issued:
    """Record a launch and return its one-time token, or raise :class:`Refusal` (audited either way)."""
    found = match(
        integration,
        wanted.patient_id,
        wanted.issuer_of_patient_id,
        wanted.study_instance_uids,
        wanted.accession_numbers,
    )
    detail: dict[str, Any] = {"integration": integration.client_id, "clinician": wanted.clinician_id}
    if found.refused:
        reason = "a requested study belongs to another patient or to a site this integration may not open"
        record(
            "ehr.launch.issue",
            request,
            outcome="failure",
            actor=_actor(integration),
            patient_id=wanted.patient_id,
            study_instance_uid=found.refused[0].study_instance_uid,
            detail={**detail, "reason": reason, "refused": [s.study_instance_uid for s in found.refused]},
        )
        raise Refusal(reason)
    token, digest = tokens.new_token()
    now = clock.now()
    with transaction.atomic():
        launch = EhrLaunch.objects.create(
            integration=integration,
            token_sha256=digest,
            created_at=now,
            expires_at=now + timedelta(seconds=integration.token_lifetime_seconds),
            clinician_id=wanted.clinician_id,
            clinician_name=wanted.clinician_name,
            clinician_email=wanted.clinician_email,
            clinician_role=wanted.clinician_role,
            patient_id=wanted.patient_id,
            issuer_of_patient_id=wanted.issuer_of_patient_id,
            study_instance_uids=list(wanted.study_instance_uids),
            accession_numbers=list(wanted.accession_numbers),
            return_url=wanted.return_url,
        )
        record(
            "ehr.launch.issue",
            request,
            actor=_actor(integration),
            patient_id=wanted.patient_id,
            study_instance_uid=found.allowed[0].study_instance_uid if found.allowed else "",
            detail={
                **detail,
                "launch": launch.pk,
                "role": wanted.clinician_role,
                "studies": [s.study_instance_uid for s in found.allowed],
                "waiting_for": found.missing_uids + found.missing_accessions,
            },
        )
    return Issued(launch, token, found)


class Problem(enum.Enum):
    """Why a launch link did not open; each has its page (``views.PROBLEMS``)."""

    MISSING = "missing"
    TAMPERED = "tampered"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    WRONG_INTEGRATION = "wrong-integration"
    DISABLED = "disabled"
    ACCOUNT_DISABLED = "account-disabled"
    RETRY = "retry"
    FAILED = "failed"  # the launch page could not complete (no cookies, so no CSRF cookie; network)


class LaunchProblem(Exception):
    def __init__(self, problem: Problem, launch: EhrLaunch | None = None) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.launch = launch


@dataclass(frozen=True)
class Opened:
    launch: EhrLaunch
    user: Any
    studies: list[Study]


def open_launch(token: str, client_id: str, request: HttpRequest) -> Opened:
    """Consume ``token`` presented on ``client_id``'s launch page: all of it happens, or none (audited)."""
    try:
        with transaction.atomic():
            launch = _consume(token, client_id)
            user = _account(launch)
            launch.user = user
            launch.scope = secrets.token_urlsafe(24)
            launch.access_until = clock.now() + timedelta(seconds=settings.PACS_EHR_ACCESS_SECONDS)
            launch.save(update_fields=["user", "scope", "access_until"])
            granted = _grant(launch, request).allowed
            record(
                "ehr.launch.use",
                request,
                user=user,
                patient_id=launch.patient_id,
                study_instance_uid=granted[0].study_instance_uid if granted else "",
                detail={
                    "integration": launch.integration.client_id,
                    "launch": launch.pk,
                    "studies": [s.study_instance_uid for s in granted],
                },
            )
    except IntegrityError:  # two first launches of one clinician at once: nothing was consumed, try again
        problem = LaunchProblem(Problem.RETRY)
        _refused(problem, client_id, request)
        raise problem from None
    except LaunchProblem as problem:
        if problem.problem is Problem.WRONG_INTEGRATION and problem.launch is not None:
            # Presented where it was not issued: treat it as leaked and burn it.
            EhrLaunch.objects.filter(pk=problem.launch.pk, consumed_at__isnull=True).update(consumed_at=clock.now())
        _refused(problem, client_id, request)
        raise
    return Opened(launch, user, granted)


def _refused(problem: LaunchProblem, client_id: str, request: HttpRequest) -> None:
    launch = problem.launch
    record(
        "ehr.launch.use",
        request,
        outcome="failure",
        actor=f"ehr:{client_id}",
        patient_id=launch.patient_id if launch is not None else "",
        detail={"reason": problem.problem.value, **({"launch": launch.pk} if launch is not None else {})},
    )


def _consume(token: str, client_id: str) -> EhrLaunch:
    if not token:
        raise LaunchProblem(Problem.MISSING)
    shape = tokens.shape(token)
    if shape is not tokens.Shape.GOOD:
        raise LaunchProblem(Problem.TAMPERED)
    launch = EhrLaunch.objects.select_related("integration").filter(token_sha256=tokens.digest(token)).first()
    if launch is None:
        raise LaunchProblem(Problem.UNKNOWN)
    if launch.integration.client_id != client_id:
        raise LaunchProblem(Problem.WRONG_INTEGRATION, launch)
    if not launch.integration.enabled:
        raise LaunchProblem(Problem.DISABLED, launch)
    now = clock.now()
    taken = EhrLaunch.objects.filter(pk=launch.pk, consumed_at__isnull=True, expires_at__gt=now).update(consumed_at=now)
    if taken != 1:
        launch.refresh_from_db(fields=["consumed_at"])
        raise LaunchProblem(Problem.USED if launch.consumed_at is not None else Problem.EXPIRED, launch)
    launch.consumed_at = now
    return launch


def _account(launch: EhrLaunch) -> Any:
    """The clinician's account: the one bound to (integration, clinician id), or a new referring clinician."""
    identity = (
        EhrIdentity.objects.select_related("user")
        .filter(integration=launch.integration, clinician_id=launch.clinician_id)
        .first()
    )
    if identity is not None:
        user = identity.user
        if not user.is_active:
            raise LaunchProblem(Problem.ACCOUNT_DISABLED, launch)
        user.email = launch.clinician_email
        user.first_name = launch.clinician_name[:150]
        user.save(update_fields=["email", "first_name"])
        EhrIdentity.objects.filter(pk=identity.pk).update(last_launch_at=clock.now())
        return user
    username = f"ehr.{launch.integration.client_id}.{secrets.token_hex(6)}"
    user = get_user_model().objects.create_user(
        username, email=launch.clinician_email, first_name=launch.clinician_name[:150]
    )  # no password: the account can be entered only through its EHR
    add_role(user, Role.REFERRING_CLINICIAN)
    EhrIdentity.objects.create(integration=launch.integration, clinician_id=launch.clinician_id, user=user)
    return user


def _grant(launch: EhrLaunch, request: HttpRequest) -> Matches:
    """Grant the launch's arrived, allowed studies to its account under its scope; audit any refused."""
    found = match(
        launch.integration,
        launch.patient_id,
        launch.issuer_of_patient_id,
        tuple(launch.study_instance_uids),
        tuple(launch.accession_numbers),
    )
    for study in found.refused:
        if AuditEvent.objects.filter(
            action="ehr.launch.study-refused", study_instance_uid=study.study_instance_uid, detail__launch=launch.pk
        ).exists():
            continue  # the waiting page asks every 10 seconds: one record per study is enough
        record(
            "ehr.launch.study-refused",
            request,
            user=launch.user,
            outcome="failure",
            patient_id=launch.patient_id,
            study_instance_uid=study.study_instance_uid,
            detail={"launch": launch.pk, "reason": "another patient's or another site's study"},
        )
    assert launch.access_until is not None  # set when the launch was opened
    already = set(AccessGrant.objects.filter(user=launch.user, scope=launch.scope).values_list("study_id", flat=True))
    AccessGrant.objects.bulk_create(
        AccessGrant(
            user=launch.user,
            study=study,
            scope=launch.scope,
            reason=f"EHR launch {launch.pk} by {launch.integration.name}",
            expires_at=launch.access_until,
        )
        for study in found.allowed
        if study.pk not in already
    )
    return found


def grant_arrived(launch: EhrLaunch, request: HttpRequest) -> Matches:
    """The launch's studies open to its session now (granting any that arrived since), and what is still missing."""
    if not is_open(launch):
        return Matches()
    with transaction.atomic():
        return _grant(launch, request)


def is_open(launch: EhrLaunch) -> bool:
    """May the launch's session still be given its studies?"""
    return bool(launch.access_until and launch.access_until > clock.now() and launch.integration.enabled)


def requested(launch: EhrLaunch) -> int:
    return len(launch.study_instance_uids) + len(launch.accession_numbers)
