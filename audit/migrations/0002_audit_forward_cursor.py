"""The audit forwarding cursor joins the audit app; its table, created by the portal, stays as it is."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        ("portal", "0003_oidc_identity_reset_throttle_forward_cursor"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditForwardCursor",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("target", models.CharField(max_length=255, unique=True)),
                        ("last_id", models.BigIntegerField(default=0)),
                        ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                    ],
                    options={"db_table": "portal_auditforwardcursor"},
                ),
            ],
            database_operations=[],
        ),
    ]
