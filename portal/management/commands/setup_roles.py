"""``manage.py setup_roles``: create or refresh the role groups (idempotent)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand

from portal.accounts.groups import ensure_roles


class Command(BaseCommand):
    help = "Create the role groups (administrator, radiologist, ...) and set their permissions."

    def handle(self, *args: Any, **options: Any) -> None:
        for role, count in ensure_roles(Group, Permission).items():
            self.stdout.write(f"{role}: {count} permission(s)")
