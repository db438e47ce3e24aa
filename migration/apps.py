"""App configuration for the migration from a legacy PACS."""

from django.apps import AppConfig


class MigrationConfig(AppConfig):
    name = "migration"
    verbose_name = "Migration from a legacy PACS"
    default_auto_field = "django.db.models.BigAutoField"
