"""``manage.py worklist_expire``: release claims idle longer than ``PACS_WORKLIST_CLAIM_IDLE_SECONDS``."""

from typing import Any

from django.core.management.base import BaseCommand

from portal.worklist.claims import expire_claims


class Command(BaseCommand):
    help = "Put studies whose claim has been idle too long back to ready (each one audited)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{expire_claims()} claims expired")
