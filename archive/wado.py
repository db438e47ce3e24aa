"""Placeholder: being written in this session (returns 501 until then)."""

from typing import Any

from django.http import HttpRequest, HttpResponse

from archive.auth import dicomweb_view
from archive.responses import error


@dicomweb_view
def retrieve_study(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def retrieve_series(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def retrieve_instance(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def study_metadata(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def series_metadata(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def instance_metadata(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def retrieve_frames(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")


@dicomweb_view
def bulkdata(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return error(501, "Not implemented yet")
