"""The Django project: settings, URLs, WSGI entry point and cross-cutting middleware."""
