"""What every JSON API view does first: refuse an oversized body (413), and name errors in one shape
(a database that is down or locked is a 503 with ``Retry-After``, never a 500).

Errors are ``{"detail": "...", ...}`` with a precise status (DRF's own shape);
:func:`problem` adds the members a client acts on (the holder of a claim, the
current text of a report that changed).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from archive.dicom.uid import is_valid_uid

log = logging.getLogger(__name__)

#: The largest request body accepted: five report sections at their longest, JSON-escaped, fit well inside.
MAX_BODY_BYTES = 1024 * 1024


#: The study named in a URL.
STUDY_UID = OpenApiParameter(
    "study_uid", OpenApiTypes.STR, OpenApiParameter.PATH, description="(0020,000D) Study Instance UID of the study."
)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The request body may be at most {MAX_BODY_BYTES} bytes."


class ApiView(APIView):
    """An API view whose body is refused (413) before it is read when it is too large."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        length = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else MAX_BODY_BYTES + 1
        if length > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        super().initial(request, *args, **kwargs)


def problem(status_code: int, detail: str, **more: Any) -> Response:
    """An error answer: ``detail`` says what went wrong, ``more`` what the client needs to act on it."""
    return Response({"detail": detail, **more}, status=status_code)


class BadRequest(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The request is not right."


def check_uid(value: str) -> None:
    """400 unless ``value`` (from the URL) is a valid DICOM UID."""
    if not is_valid_uid(value):
        raise BadRequest("The Study Instance UID in the URL is not a valid UID.")


class ProblemSerializer(serializers.Serializer[Any]):
    """Every error: what went wrong, in a sentence."""

    detail = serializers.CharField()


class InvalidRequestSerializer(serializers.Serializer[Any]):
    """Bad input: what went wrong, and each failing field with its reasons."""

    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, and 503 with ``Retry-After`` when the database is down or locked (not the client's fault)."""
    if isinstance(exc, OperationalError | InterfaceError):
        log.exception("API request not served: the database is not available")
        response = problem(503, "The database is not available right now. Send the request again later.")
        response["Retry-After"] = "5"
        return response
    return drf_exception_handler(exc, context)
