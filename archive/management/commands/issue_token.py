"""``manage.py issue_token USERNAME``: print a new bearer token once.

Only the token's SHA-256 is stored, so the printed value cannot be shown again.
The issue is recorded in the audit trail.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from archive.models import ApiToken
from audit.trail import record


class Command(BaseCommand):
    help = "Issue a bearer token for USERNAME and print it once (for DICOMweb clients and modalities)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label for the token, e.g. the client's name")
        parser.add_argument("--days", type=int, default=None, help="expire after this many days (default: never)")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        if not user.is_active:
            raise CommandError(f"user {options['username']!r} is inactive")
        days = options["days"]
        if days is not None and days <= 0:
            raise CommandError("--days must be a positive number of days")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        token, raw = ApiToken.issue(user, options["name"][:100], expires_at=expires_at)
        record(
            "token_issue",
            user=user,
            actor="manage.py issue_token",
            detail={"token_id": token.pk, "prefix": token.prefix, "name": token.name, "expires_at": str(expires_at)},
        )
        self.stdout.write(raw)
        if options["verbosity"] > 1:
            self.stderr.write(f"expires: {expires_at or 'never'}; use it as 'Authorization: Bearer <token>'")
