"""The audit forwarding cursor moved to the audit app: gone from the portal's state, its table kept."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0003_oidc_identity_reset_throttle_forward_cursor"),
        ("audit", "0002_audit_forward_cursor"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditForwardCursor")],
            database_operations=[],
        ),
    ]
