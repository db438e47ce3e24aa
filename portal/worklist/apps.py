"""App configuration of the worklist: connects it to the archive's ingest signals."""

from django.apps import AppConfig


class WorklistConfig(AppConfig):
    name = "portal.worklist"
    label = "worklist"
    verbose_name = "Worklist"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from archive.ingest.signals import study_corrected, study_stored
        from portal.worklist import rows

        study_stored.connect(rows.on_study_stored, dispatch_uid="worklist.on_study_stored")
        study_corrected.connect(rows.on_study_corrected, dispatch_uid="worklist.on_study_corrected")
