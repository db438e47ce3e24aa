"""MFA pages: enrol an authenticator, answer the challenge, see and renew backup codes.

Thin views over :mod:`portal.mfa.factors`. Fresh backup codes are handed from the POST
that created them to the page that shows them through the session, and removed
from it as they are shown: they appear exactly once.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_otp.plugins.otp_static.models import StaticToken

from audit import trail
from portal.mfa import factors as mfa

NEW_CODES_SESSION_KEY = "pacs_mfa_new_backup_codes"
MAX_CODE_LENGTH = 32


def _next_url(request: HttpRequest) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("home")


def _with_next(name: str, next_url: str) -> str:
    return f"{reverse(name)}?{urlencode({'next': next_url})}"


def _code(request: HttpRequest) -> str | None:
    """The submitted code, or None when it is missing or absurdly long."""
    code = request.POST.get("code", "")
    if not code.strip() or len(code) > MAX_CODE_LENGTH:
        return None
    return code


def _retry_message(outcome: mfa.Verification) -> str:
    wait = ""
    if outcome.retry_at is not None:
        seconds = max(1, math.ceil((outcome.retry_at - timezone.now()).total_seconds()))
        wait = f" Wait {seconds} second{'s' if seconds > 1 else ''} before the next try."
    if outcome.throttled:
        return "Too many wrong codes." + wait
    return "That code is not valid. Check the time on your device and try again." + wait


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def enrol(request: HttpRequest) -> HttpResponse:
    """Show the QR code and secret of a new authenticator; confirm it with its first code."""
    next_url = _next_url(request)
    if mfa.confirmed_totp(request.user) is not None:
        if mfa.is_verified(request):
            return redirect("mfa_manage")
        return redirect(_with_next("mfa_verify", next_url))
    device = mfa.pending_totp(request.user)
    context = {
        "qr": mfa.qr_data_uri(device),
        "secret": mfa.secret_base32(device),
        "next": next_url,
        "required": mfa.mfa_required(request.user),
    }
    if request.method == "POST":
        code = _code(request)
        if code is None:
            context["error"] = "Enter the six-digit code your app shows."
            return render(request, "portal/mfa_enrol.html", context, status=400)
        outcome, codes = mfa.confirm_enrolment(request, code)
        if not outcome.ok:
            context["error"] = _retry_message(outcome)
            return render(request, "portal/mfa_enrol.html", context, status=429 if outcome.throttled else 400)
        request.session[NEW_CODES_SESSION_KEY] = codes
        return redirect(_with_next("mfa_backup_codes", next_url))
    return render(request, "portal/mfa_enrol.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """The challenge after password (or single-factor SSO) sign-in, or again on demand (``fresh``)."""
    next_url = _next_url(request)
    # ``fresh=1``: a verified session proves its second factor again (signing a final report asks for a recent one).
    fresh = (request.POST.get("fresh") or request.GET.get("fresh")) == "1"
    if mfa.is_verified(request) and not fresh:
        return HttpResponseRedirect(next_url)
    if fresh and mfa.verified_by_idp(request) and not mfa.has_second_factor(request.user):
        # the IdP did the second factor: prove it again there (a new sign-in, prompt=login and max_age=0)
        return redirect(f"{reverse('oidc_authentication_init')}?{urlencode({'next': next_url, 'fresh': '1'})}")
    if not mfa.has_second_factor(request.user):
        return redirect(_with_next("mfa_enrol", next_url))
    context: dict[str, object] = {"next": next_url, "fresh": fresh}
    if request.method == "POST":
        code = _code(request)
        if code is None:
            context["error"] = "Enter a code from your authenticator app or a backup code."
            return render(request, "portal/mfa_verify.html", context, status=400)
        outcome = mfa.verify(request, code)
        if not outcome.ok:
            context["error"] = _retry_message(outcome)
            return render(request, "portal/mfa_verify.html", context, status=429 if outcome.throttled else 400)
        return HttpResponseRedirect(next_url)
    return render(request, "portal/mfa_verify.html", context)


@never_cache
@login_required
def backup_codes(request: HttpRequest) -> HttpResponse:
    """Show freshly issued backup codes once."""
    codes = request.session.pop(NEW_CODES_SESSION_KEY, None)
    if not codes:
        return redirect("mfa_manage")
    return render(request, "portal/mfa_backup_codes.html", {"codes": codes, "next": _next_url(request)})


@never_cache
@login_required
def manage(request: HttpRequest) -> HttpResponse:
    """Second-factor status of the signed-in user."""
    context = {
        "totp": mfa.confirmed_totp(request.user),
        "backup_codes_left": StaticToken.objects.filter(device__user=request.user).count(),
        "required": mfa.mfa_required(request.user),
        "verified": mfa.is_verified(request),
    }
    return render(request, "portal/mfa_manage.html", context)


@never_cache
@login_required
@require_POST
def regenerate_backup_codes(request: HttpRequest) -> HttpResponse:
    """Replace the backup codes (only from a verified session, which the middleware ensures)."""
    if not mfa.is_verified(request):
        return redirect(_with_next("mfa_verify", reverse("mfa_manage")))
    codes = mfa.issue_backup_codes(request.user)
    trail.record("mfa_backup_codes_issued", request, detail={"backup_codes": len(codes)})
    request.session[NEW_CODES_SESSION_KEY] = codes
    return redirect(_with_next("mfa_backup_codes", reverse("mfa_manage")))
