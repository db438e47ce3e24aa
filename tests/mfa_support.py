"""Helpers shared by the MFA and SSO tests: role users and TOTP codes as an app computes them."""

from __future__ import annotations

import base64
import time
import uuid

from django.contrib.auth.models import Group, User
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

PASSWORD = "correct horse battery staple 42"


def user_with_role(username: str, role: str | None, password: str = PASSWORD) -> User:
    user = User.objects.create_user(username, email=f"{username}@example.org", password=password)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def code_from_secret(secret: str, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows for the base32 secret (optionally a later step)."""
    compact = "".join(secret.split()).upper()
    key = base64.b32decode(compact + "=" * (-len(compact) % 8))
    totp = TOTP(key, step=30, t0=0, digits=6)
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def code_from_hex_key(hex_key: str, steps_ahead: int = 0) -> str:
    secret = base64.b32encode(bytes.fromhex(hex_key)).decode()
    return code_from_secret(secret, steps_ahead)


def random_password() -> str:
    return uuid.uuid4().hex


def force_verified_login(client: Client, user: User) -> TOTPDevice:
    """Sign ``client`` in as ``user`` with a second factor already passed (for tests of
    pages that MFA guards, e.g. the admin as a superuser)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="test authenticator", confirmed=True)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device
