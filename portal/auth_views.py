"""Sign-in, sign-out (here or everywhere), password reset and change.

Thin wrappers over Django's auth views: they pick the portal templates, use
:class:`portal.forms.SignInForm`, and record the password events in the audit
trail. Sign-in and sign-out records come from :mod:`portal.authevents`.
Password reset never reveals whether an account exists: the same page follows
every request, and mail goes only to known, active addresses.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse_lazy
from django.views.decorators.http import require_POST

from audit.trail import record
from portal.forms import SignInForm
from portal.sessions import sign_out_everywhere


class SignInView(auth_views.LoginView):
    template_name = "portal/login.html"
    form_class = SignInForm
    redirect_authenticated_user = True


class SignOutView(auth_views.LogoutView):
    """POST only (Django 5); GET answers 405."""


@login_required
@require_POST
def sign_out_all(request: HttpRequest) -> HttpResponse:
    """End this user's sessions on every device, this one included."""
    sign_out_everywhere(request.user)
    record("sign-out-everywhere", request)
    request.pacs_signout_reason = "signed out everywhere"  # type: ignore[attr-defined]
    logout(request)
    messages.info(request, "You were signed out on every device.")
    return redirect("login")


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "portal/password_reset_form.html"
    email_template_name = "portal/password_reset_email.txt"
    subject_template_name = "portal/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")

    def form_valid(self, form: Any) -> HttpResponse:
        record("password-reset-request", self.request, detail={"email": form.cleaned_data.get("email", "")[:254]})
        return super().form_valid(form)


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
