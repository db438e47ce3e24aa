"""App configuration for integrations (EHR launch; IID, SMART and FHIR to come)."""

from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations"
