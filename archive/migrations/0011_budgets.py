"""Budgets, sites' cost tags, and the bytes each instance takes on its tier (filled from the mover's ledger)."""

import django.core.validators
import django.db.models.deletion
from typing import Any

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def stored_sizes_from_ledger(apps: Any, schema_editor: Any) -> None:
    """Instances the mover already moved take on their tier what its last finished move measured there.

    One UPDATE with a correlated subquery (no loop over the index): the latest
    switched or done move of each instance to the tier it is on now.
    """
    Instance = apps.get_model("archive", "Instance")
    TierMove = apps.get_model("archive", "TierMove")
    latest = (
        TierMove.objects.filter(
            instance_id=OuterRef("pk"),
            target_tier=OuterRef("tier"),
            state__in=["switched", "done"],
            stored_size__isnull=False,
        )
        .order_by("-id")
        .values("stored_size")[:1]
    )
    Instance.objects.filter(moves__state__in=["switched", "done"]).update(stored_size=Subquery(latest))


class Migration(migrations.Migration):
    dependencies = [
        ("archive", "0010_storage_commitment_transaction_uid_once"),
    ]

    operations = [
        migrations.AddField(
            model_name="instance",
            name="stored_size",
            field=models.BigIntegerField(
                blank=True,
                help_text="Bytes it takes on its tier (zstd: compressed), set by the mover; empty: its Part 10 size.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="site",
            name="cost_tag",
            field=models.SlugField(
                blank=True,
                default="",
                help_text="Groups sites for storage budgets (e.g. a cost centre): a budget may cover every site with a tag.",
                max_length=32,
            ),
        ),
        migrations.CreateModel(
            name="Budget",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                (
                    "cost_tag",
                    models.SlugField(
                        blank=True,
                        default="",
                        help_text="Every site with this cost tag. Empty with no site: all.",
                        max_length=32,
                    ),
                ),
                (
                    "monthly_limit",
                    models.DecimalField(
                        decimal_places=2, max_digits=14, validators=[django.core.validators.MinValueValidator(0)]
                    ),
                ),
                (
                    "horizon_months",
                    models.PositiveIntegerField(
                        default=12,
                        help_text="Alert when the monthly cost projected this many months ahead (0: now) crosses the limit.",
                        validators=[
                            django.core.validators.MinValueValidator(0),
                            django.core.validators.MaxValueValidator(60),
                        ],
                    ),
                ),
                (
                    "notify",
                    models.TextField(blank=True, default="", help_text="E-mail addresses to alert, one per line."),
                ),
                ("enabled", models.BooleanField(default=True)),
                ("alerted_at", models.DateTimeField(blank=True, editable=False, null=True)),
                (
                    "alerted_cost",
                    models.DecimalField(blank=True, decimal_places=2, editable=False, max_digits=14, null=True),
                ),
                (
                    "site",
                    models.ForeignKey(
                        blank=True,
                        help_text="Empty: see cost tag.",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="budgets",
                        to="archive.site",
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.RunPython(stored_sizes_from_ledger, migrations.RunPython.noop),
    ]
