"""``manage.py worklist_sync``: give every study its worklist row and bring every row's counts up to date."""

from typing import Any

from django.core.management.base import BaseCommand

from portal.worklist.rows import rebuild


class Command(BaseCommand):
    help = "Create missing worklist rows and refresh the counts of existing ones (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{rebuild()} studies checked")
