"""Placeholder: being written in this session (returns 501 until then)."""

from typing import Any

from django.http import HttpRequest, HttpResponse

from archive.auth import dicomweb_view
from archive.responses import error


@dicomweb_view
def root(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def search_studies(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def search_series(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def search_instances(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")
