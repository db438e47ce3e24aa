"""Multi-factor authentication: TOTP enrolment, backup codes, verification, policy.

Second factors are django-otp devices: one :class:`TOTPDevice` per user (an
authenticator app) and one :class:`StaticDevice` holding ten single-use backup
codes. A session is *verified* when django-otp recorded the device that passed
(``django_otp.login``) or when an OpenID provider asserted a multi-factor sign-in
in the ID token's ``amr`` claim (see :func:`mark_verified_by_idp`).

Who must pass a second factor: superusers, members of the groups named by
:data:`portal.accounts.roles.MFA_REQUIRED`, and anyone who chose to enrol. Guessing is
throttled by django-otp (exponential back-off per device, on by default and
pinned in settings); each verification locks the device row so parallel
guesses are counted one by one. Every event goes to the audit trail.
"""

from __future__ import annotations

import base64
import enum
import io
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import trail
from portal.accounts.roles import MFA_REQUIRED

BACKUP_CODE_COUNT = 10
TOTP_NAME = "Authenticator app"
BACKUP_NAME = "Backup codes"
#: Session key holding the pk of the user whose IdP sign-in was multi-factor.
IDP_MFA_SESSION_KEY = "pacs_mfa_idp_user"
#: Session key holding when (epoch seconds) this session last passed a second factor (see :func:`verified_within`).
VERIFIED_AT_SESSION_KEY = "pacs_mfa_verified_at"
#: ``amr`` values (RFC 8176) accepted as a second factor done at the IdP.
IDP_MFA_AMR = frozenset({"mfa", "otp", "hwk"})


class Method(enum.StrEnum):
    TOTP = "totp"
    BACKUP_CODE = "backup_code"


@dataclass(frozen=True)
class Verification:
    """The outcome of one code submitted at the challenge."""

    ok: bool
    method: Method | None = None
    #: The code was not even checked: the device is still backing off.
    throttled: bool = False
    #: When the next attempt will be checked (after a failure).
    retry_at: datetime | None = None
    backup_codes_left: int | None = None


def mfa_required(user: Any) -> bool:
    """True for users whose role (or superuser flag) demands a second factor."""
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    names = {role.value for role in MFA_REQUIRED}
    return bool(user.groups.filter(name__in=names).exists())


def is_verified(request: HttpRequest) -> bool:
    """Did this session pass a second factor (ours, or the IdP's)?"""
    user = request.user
    verified = getattr(user, "is_verified", None)
    if callable(verified) and verified():
        return True
    return bool(user.is_authenticated and request.session.get(IDP_MFA_SESSION_KEY) == user.pk)


def verified_by_idp(request: HttpRequest) -> bool:
    """Did the IdP's multi-factor sign-in verify this session (see :func:`mark_verified_by_idp`)?"""
    user = request.user
    return bool(user.is_authenticated and request.session.get(IDP_MFA_SESSION_KEY) == user.pk)


def stamp_verified(request: HttpRequest) -> None:
    """Remember that this session passed a second factor just now."""
    request.session[VERIFIED_AT_SESSION_KEY] = time.time()


def verified_within(request: HttpRequest, seconds: int) -> bool:
    """Did this session pass a second factor within the last ``seconds`` (e.g. before signing a final report)?"""
    at = request.session.get(VERIFIED_AT_SESSION_KEY)
    if not is_verified(request) or not isinstance(at, int | float):
        return False
    return 0 <= time.time() - at <= seconds


def has_second_factor(user: Any) -> bool:
    """Has the user confirmed an authenticator app (or kept backup codes)?"""
    return bool(user_has_device(user, confirmed=True))


def needs_challenge(request: HttpRequest) -> bool:
    """Must this session pass a second factor before going anywhere else?"""
    user = request.user
    if not user.is_authenticated or is_verified(request):
        return False
    return mfa_required(user) or has_second_factor(user)


def confirmed_totp(user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def pending_totp(user: Any) -> TOTPDevice:
    """The unconfirmed authenticator being enrolled; the same key across reloads."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_NAME, confirmed=False)
    return device


def secret_base32(device: TOTPDevice) -> str:
    """The key as authenticator apps expect it for manual entry, in groups of four."""
    raw = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def qr_data_uri(device: TOTPDevice) -> str:
    """The ``otpauth://`` URL as an SVG QR code in a ``data:`` URI (CSP allows data: images)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=10, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def normalise_code(code: str) -> str:
    return "".join(code.split()).lower()


def _locked_until(device: TOTPDevice | StaticDevice) -> datetime | None:
    allowed, data = device.verify_is_allowed()
    if allowed:
        return None
    until = (data or {}).get("locked_until")
    return until if isinstance(until, datetime) else None


def issue_backup_codes(user: Any) -> list[str]:
    """Replace the user's backup codes with ten new ones; returned once, never shown again."""
    with transaction.atomic():
        StaticDevice.objects.filter(user=user).delete()
        device = StaticDevice.objects.create(user=user, name=BACKUP_NAME, confirmed=True)
        codes = [StaticToken.random_token() for _ in range(BACKUP_CODE_COUNT)]
        StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


def confirm_enrolment(request: HttpRequest, code: str) -> tuple[Verification, list[str]]:
    """Check the first code of the pending authenticator; on success confirm it,
    verify this session, and return fresh backup codes."""
    user = request.user
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().get(pk=pending_totp(user).pk)
        locked = _locked_until(device)
        if locked is not None:
            outcome = Verification(False, Method.TOTP, throttled=True, retry_at=locked)
        elif device.verify_token(normalise_code(code)):
            TOTPDevice.objects.filter(user=user, confirmed=True).delete()
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            outcome = Verification(True, Method.TOTP)
        else:
            outcome = Verification(False, Method.TOTP, retry_at=_locked_until(device))
    if not outcome.ok:
        trail.record("mfa_failed", request, outcome="failure", detail=_failure_detail(outcome, "enrolment"))
        return outcome, []
    codes = issue_backup_codes(user)
    otp_login(request, device)
    stamp_verified(request)
    trail.record("mfa_enrol", request, detail={"device": "totp", "backup_codes": len(codes)})
    return outcome, codes


def _check(device: TOTPDevice | StaticDevice, code: str, method: Method) -> Verification:
    with transaction.atomic():
        locked_device = type(device).objects.select_for_update().get(pk=device.pk)
        locked = _locked_until(locked_device)
        if locked is not None:
            return Verification(False, method, throttled=True, retry_at=locked)
        if locked_device.verify_token(code):
            left = locked_device.token_set.count() if isinstance(locked_device, StaticDevice) else None
            return Verification(True, method, backup_codes_left=left)
        return Verification(False, method, retry_at=_locked_until(locked_device))


def verify(request: HttpRequest, code: str) -> Verification:
    """Check a code from the challenge page: six digits go to the authenticator,
    anything else is tried as a backup code. Verifies the session on success."""
    user = request.user
    token = normalise_code(code)
    device: TOTPDevice | StaticDevice | None
    if token.isascii() and token.isdigit() and len(token) in {6, 8}:
        method, device = Method.TOTP, confirmed_totp(user)
    else:
        method, device = Method.BACKUP_CODE, StaticDevice.objects.filter(user=user, confirmed=True).first()
    if device is None or not token:
        outcome = Verification(False, method)
    else:
        outcome = _check(device, token, method)
    if not outcome.ok or device is None:
        trail.record("mfa_failed", request, outcome="failure", detail=_failure_detail(outcome, "challenge"))
        return outcome
    otp_login(request, device)
    stamp_verified(request)
    if method is Method.BACKUP_CODE:
        trail.record("mfa_backup_code_used", request, detail={"backup_codes_left": outcome.backup_codes_left})
    else:
        trail.record("mfa_verify", request, detail={"method": method.value})
    return outcome


def _failure_detail(outcome: Verification, step: str) -> dict[str, Any]:
    method = outcome.method.value if outcome.method else ""
    return {"step": step, "method": method, "reason": "throttled" if outcome.throttled else "invalid code"}


def amr_is_multi_factor(amr: Iterable[str] | None) -> bool:
    return bool(amr) and bool(IDP_MFA_AMR.intersection(str(value).lower() for value in amr or ()))


def mark_verified_by_idp(request: HttpRequest, amr: Iterable[str] | None, auth_time: object = None) -> bool:
    """Accept the IdP's multi-factor sign-in (``amr`` has mfa/otp/hwk) as our second
    factor for this session. Returns whether it was accepted.

    How recent that second factor is comes from the ID token's ``auth_time`` (when the user last
    actually authenticated at the IdP), never from the moment of our sign-in: a silent SSO sign-in
    riding an IdP session hours old is not a fresh second factor (see :func:`verified_within`).
    Without a usable ``auth_time`` the session is verified but never counts as fresh.
    """
    if not settings.PACS_MFA_TRUST_IDP_AMR or not amr_is_multi_factor(amr):
        request.session.pop(IDP_MFA_SESSION_KEY, None)
        return False
    request.session[IDP_MFA_SESSION_KEY] = request.user.pk
    at = _auth_time(auth_time)
    if at is None:
        request.session.pop(VERIFIED_AT_SESSION_KEY, None)
    else:
        request.session[VERIFIED_AT_SESSION_KEY] = at
    detail: dict[str, Any] = {"method": "idp", "amr": sorted(str(a) for a in amr or ())}
    if at is None:
        detail["auth_time"] = "missing"
    trail.record("mfa_verify", request, detail=detail)
    return True


def _auth_time(value: object) -> float | None:
    """The ``auth_time`` claim as seconds since the epoch (a JSON number, never later than now), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return min(float(value), time.time())
