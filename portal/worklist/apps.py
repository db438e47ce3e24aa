"""App configuration of the worklist: connects it to the archive's ingest signal."""

from django.apps import AppConfig


class WorklistConfig(AppConfig):
    name = "portal.worklist"
    label = "worklist"
    verbose_name = "Worklist"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from archive.ingest.signals import study_stored
        from portal.worklist import rows

        study_stored.connect(rows.on_study_stored, dispatch_uid="worklist.on_study_stored")
