"""``manage.py audit_verify``: walk the audit chain; exit 0 when intact, 1 naming the first broken record.

Each run is itself recorded (``audit-verify``), as a verification from the admin is,
so the operations page and an auditor see when the chain was last checked.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.trail import record, verify_chain


class Command(BaseCommand):
    help = "Verify the hash chain of the audit trail. Exit status 0: intact; 1: broken."

    def handle(self, *args: Any, **options: Any) -> None:
        result = verify_chain()
        record(
            "audit-verify",
            actor="audit_verify",
            outcome="success" if result.ok else "failure",
            detail={"checked": result.checked, "first_broken_id": result.first_broken_id, "via": "audit_verify"},
        )
        if result.ok:
            self.stdout.write(f"intact: {result.checked} record(s) verified")
            return
        where = f"record {result.first_broken_id}" if result.first_broken_id is not None else "the end of the chain"
        raise CommandError(f"broken at {where}: {result.reason} ({result.checked} record(s) verified before it)")
