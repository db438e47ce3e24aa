"""Placeholder: being written in this session (returns 501 until then)."""

from typing import Any

from django.http import HttpRequest, HttpResponse

from archive.auth import dicomweb_view
from archive.responses import error


@dicomweb_view
def study_rendered(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def study_thumbnail(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def series_rendered(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def series_thumbnail(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def instance_rendered(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def instance_thumbnail(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def frames_rendered(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def frames_thumbnail(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")
