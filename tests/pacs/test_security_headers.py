"""Security headers on every kind of response, cookie flags, and HSTS behind TLS."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

PATHS = ["/accounts/login/", "/health", "/dicom-web/studies", "/", "/admin/", "/viewer/"]


@pytest.mark.parametrize("path", PATHS)
def test_every_response_carries_the_security_headers(db: Any, path: str) -> None:
    response = Client().get(path)
    csp = response["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "object-src 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    # URLs carry study UIDs: they must never reach another origin. ("no-referrer" would be
    # stricter, but Chromium then sends `Origin: null` on form posts and CSRF fails.)
    assert response["Referrer-Policy"] in ("no-referrer", "same-origin")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_session_and_csrf_cookies_are_secure_and_http_only(db: Any) -> None:
    User.objects.create_user("cookie", password="a long and proper passphrase 7")
    client = Client()
    form = client.get("/accounts/login/")
    csrf = form.cookies["csrftoken"]
    assert csrf["secure"] and csrf["httponly"] and csrf["samesite"] == "Lax"
    response = client.post("/accounts/login/", {"username": "cookie", "password": "a long and proper passphrase 7"})
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


def test_hsts_is_sent_on_secure_requests_when_configured(db: Any, settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 31536000
    secure = Client().get("/health", secure=True)
    assert secure["Strict-Transport-Security"].startswith("max-age=31536000")
    plain = Client().get("/health")
    assert "Strict-Transport-Security" not in plain


def test_no_hsts_unless_configured(db: Any, settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 0
    assert "Strict-Transport-Security" not in Client().get("/health", secure=True)
