"""Sign-in, sign-out (here or everywhere), password reset and change.

Thin wrappers over Django's auth views: they pick the portal templates, use
:class:`portal.accounts.forms.SignInForm`, and record the password events in the audit
trail. Sign-in and sign-out records come from :mod:`portal.accounts.authevents`.
Password reset never reveals whether an account exists: the same page follows
every request, mail goes only to known, active addresses, and a throttle per
address and per client address (:mod:`portal.accounts.resetlimit`) stops mailbox
flooding without changing the answer. Sign-out also ends the OpenID provider's
session when the user came through SSO (``OIDC_OP_LOGOUT_URL_METHOD``, :func:`portal.sso.oidc.provider_logout_url`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from audit.trail import client_ip, record
from portal.accounts import resetlimit
from portal.accounts.forms import SignInForm
from portal.accounts.sessions import sign_out_everywhere


def provider_logout_url(request: HttpRequest) -> str:
    """Where the browser goes after signing out: the SSO provider's end-session URL, or our sign-in page.

    Named by the setting mozilla-django-oidc reads (``OIDC_OP_LOGOUT_URL_METHOD``),
    so accounts need not import SSO.
    """
    return str(import_string(settings.OIDC_OP_LOGOUT_URL_METHOD)(request))


class SignInView(auth_views.LoginView):
    template_name = "portal/login.html"
    form_class = SignInForm
    redirect_authenticated_user = True


def leave_provider_too(request: HttpRequest, provider_url: str, response: HttpResponse) -> HttpResponse:
    """After the local sign-out, send an SSO user on to the provider's end-session endpoint.

    Through a page rather than a redirect: the sign-out form's own page has
    ``form-action 'self'`` in its CSP, and browsers apply form-action to the
    redirects that follow a form submission, so a 302 to the provider would be
    blocked. The page moves on by ``<meta http-equiv="refresh">`` (no script) and
    shows the link as well.
    """
    if provider_url == str(settings.LOGOUT_REDIRECT_URL):
        return response
    return render(request, "portal/signed_out_sso.html", {"provider_url": provider_url})


class SignOutView(auth_views.LogoutView):
    """POST only (Django 5); GET answers 405."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        provider_url = provider_logout_url(request)
        return leave_provider_too(request, provider_url, super().post(request, *args, **kwargs))


@login_required
@require_POST
def sign_out_all(request: HttpRequest) -> HttpResponse:
    """End this user's sessions on every device, this one included."""
    provider_url = provider_logout_url(request)
    sign_out_everywhere(request.user)
    record("sign-out-everywhere", request)
    request.pacs_signout_reason = "signed out everywhere"  # type: ignore[attr-defined]
    logout(request)
    messages.info(request, "You were signed out on every device.")
    return leave_provider_too(request, provider_url, redirect("login"))


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "portal/password_reset_form.html"
    email_template_name = "portal/password_reset_email.txt"
    subject_template_name = "portal/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")

    def form_valid(self, form: Any) -> HttpResponse:
        email = resetlimit.normalise(form.cleaned_data.get("email", ""))
        refused = resetlimit.register(email, client_ip(self.request))
        if refused is None:
            record("password-reset-request", self.request, detail={"email": email})
            return super().form_valid(form)
        record(
            "password-reset-request", self.request, outcome="throttled", detail={"email": email, "limit": str(refused)}
        )
        return HttpResponseRedirect(self.get_success_url())


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "portal/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "portal/password_reset_confirm.html"
    success_url = reverse_lazy("password_reset_complete")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        record("password-reset", self.request, user=form.user)
        return response


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "portal/password_reset_complete.html"


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "portal/password_change.html"
    success_url = reverse_lazy("password_change_done")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        record("password-change", self.request)
        return response


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "portal/password_change_done.html"
