"""The sign-in form: Django's, with a clear message when sign-ins are locked."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm

from audit.trail import client_ip
from portal.accounts import lockout

LOCKED_MESSAGE = (
    "Too many failed sign-in attempts. Sign-in is paused for {minutes} minutes; "
    "try again later or ask an administrator."
)


class SignInForm(AuthenticationForm):
    """Same answer whether or not the account exists; a distinct one once locked."""

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except forms.ValidationError:
            username = self.cleaned_data.get("username") or ""
            if getattr(self.request, "pacs_signin_locked", False) or lockout.is_locked(
                username, client_ip(self.request)
            ):
                minutes = max(1, settings.PACS_SIGNIN_LOCKOUT_SECONDS // 60)
                raise forms.ValidationError(LOCKED_MESSAGE.format(minutes=minutes), code="locked") from None
            raise
