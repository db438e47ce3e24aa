"""App configuration for the archive."""

from django.apps import AppConfig


class ArchiveConfig(AppConfig):
    name = "archive"
    verbose_name = "Archive"

    def ready(self) -> None:
        from pydicom import config

        from archive.ingest.priors import on_study_stored
        from archive.ingest.signals import study_stored
        from archive.query.lookups import register

        # Ahead of need: a new study brings the patient's relevant priors back from archive tiers.
        study_stored.connect(on_study_stored, dispatch_uid="archive.restore_priors")
        register()  # the __wildcard lookup QIDO matching compiles to GLOB / LIKE
        # pydicom's reading validation only warns, and its warnings quote the invalid value (a birth
        # date, say) into the server log: values are kept as received and never validated on reading.
        config.settings.reading_validation_mode = config.IGNORE
