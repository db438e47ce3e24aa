"""App configuration for the portal."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
