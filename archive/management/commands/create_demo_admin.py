"""``manage.py create_demo_admin``: the demo administrator and its sign-in.

The password is generated at first run and kept in the data folder
(``demo-admin-password``, mode 600), never in the repository; later runs reuse
it and make sure the account still works. The account is an administrator, so
the portal asks it to enrol a TOTP authenticator at first sign-in.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser

PASSWORD_FILE = "demo-admin-password"


def demo_password(data_dir: Path) -> str:
    """The demo password, generated once into ``data_dir`` with mode 600."""
    path = data_dir / PASSWORD_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path.read_text().strip()
    password = secrets.token_urlsafe(15)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


class Command(BaseCommand):
    help = "Create or refresh the demo administrator and print how to sign in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="the URL to print")

    def handle(self, *args: Any, **options: Any) -> None:
        password = demo_password(Path(settings.DATA_DIR))
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=options["username"], defaults={"email": "admin@example.org"})
        user.is_active = user.is_staff = user.is_superuser = True
        if not user.check_password(password):
            user.set_password(password)
        user.save()
        group, _ = Group.objects.get_or_create(name="administrator")
        user.groups.add(group)
        self.stdout.write(
            f"\n  Open      {options['url']}\n"
            f"  Username  {user.get_username()}\n"
            f"  Password  {password}   (kept in {Path(settings.DATA_DIR) / PASSWORD_FILE})\n"
            "  At first sign-in you enrol an authenticator app (TOTP): administrators need a second factor.\n"
        )
