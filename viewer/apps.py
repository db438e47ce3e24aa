"""App configuration for the viewer."""

from django.apps import AppConfig


class ViewerConfig(AppConfig):
    name = "viewer"
