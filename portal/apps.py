"""App configuration for the portal."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"

    def ready(self) -> None:
        # Django's own sign-in/sign-out signals feed the audit trail and the lockout.
        from portal.accounts import authevents

        authevents.connect()
