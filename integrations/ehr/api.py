"""``POST /api/ehr/launch``: an EHR's server asks for a one-time launch URL (Django REST framework).

The EHR authenticates with its client secret (HTTP Basic, client id as the
user name) or an RFC 7523 client assertion (``client_assertion_type`` and
``client_assertion`` members of the JSON body; ``aud`` is this endpoint's
URL). Answers: 201 with the launch URL; 400 for a body that is not exactly
right (with the failing members); 401 when the EHR is not authenticated; 403
when it may not open what it asked for (a disabled integration, another
patient's or another site's study); 413 for a body over 64 KiB; 415 for a body
that is not JSON. Every refusal is audited.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.urls import reverse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.trail import record
from integrations import clock
from integrations.ehr import credentials, launch
from integrations.ehr.serializers import ErrorSerializer, LaunchRequestSerializer, LaunchResponseSerializer
from integrations.models import EhrIntegration

MAX_BODY_BYTES = 64 * 1024


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The request body may be at most {MAX_BODY_BYTES} bytes."


def audience(request: Request) -> str:
    """This endpoint's absolute URL: what a client assertion's ``aud`` must say."""
    return request.build_absolute_uri(reverse("ehr-launch-api"))


class EhrClientAuthentication(BaseAuthentication):
    """An EHR integration by HTTP Basic (client id, secret) or by an RFC 7523 client assertion."""

    def authenticate(self, request: Request) -> tuple[Any, EhrIntegration] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        try:
            is_json = request.content_type.split(";")[0].strip().lower() == "application/json"
            data = request.data if is_json else {}
            has_assertion = isinstance(data, dict) and ("client_assertion" in data or "client_assertion_type" in data)
            if header and has_assertion:  # RFC 6749 2.3: one client authentication method per request
                raise credentials.Refused("use HTTP Basic or a client assertion, not both")
            if header:
                integration = self._basic(header)
            elif has_assertion:
                integration = self._assertion(request, data)
            else:
                raise credentials.Refused("no credentials: use HTTP Basic or a client assertion")
        except credentials.Refused as refused:
            record(
                "ehr.launch.auth",
                request._request,
                outcome="failure",
                actor=f"ehr:{refused.client_id}" if refused.client_id else "",
                detail={"reason": refused.reason},
            )
            raise exceptions.AuthenticationFailed(f"Not authenticated: {refused.reason}.") from None
        return AnonymousUser(), integration

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="ehr-launch", charset="UTF-8"'

    @staticmethod
    def _basic(header: str) -> EhrIntegration:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise credentials.Refused("the Authorization scheme must be Basic")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise credentials.Refused("the Basic credentials are not base64 of UTF-8") from None
        client_id, colon, secret = decoded.partition(":")
        if not colon or not client_id or len(client_id) > 64 or len(secret) > 256:
            raise credentials.Refused("the Basic credentials are not client-id:secret")
        return credentials.check_secret(client_id, secret)

    @staticmethod
    def _assertion(request: Request, data: dict[str, Any]) -> EhrIntegration:
        if data.get("client_assertion_type") != credentials.ASSERTION_TYPE:
            raise credentials.Refused(f"client_assertion_type must be {credentials.ASSERTION_TYPE}")
        assertion = data.get("client_assertion")
        if not isinstance(assertion, str) or not assertion:
            raise credentials.Refused("client_assertion must be a JWT")
        return credentials.check_assertion(assertion, audience(request))


class IsEhrIntegration(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, EhrIntegration)


class EhrAuthScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = EhrClientAuthentication
    name = "ehrClient"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Client id and secret; or leave this out and send an RFC 7523 client assertion "
            "(client_assertion_type, client_assertion) in the body, aud = this endpoint's URL.",
        }


class LaunchView(APIView):
    authentication_classes = [EhrClientAuthentication]
    permission_classes = [IsEhrIntegration]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="ehr_launch",
        summary="Get a one-time launch URL for a clinician, a patient and studies",
        request=LaunchRequestSerializer,
        responses={
            201: LaunchResponseSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        integration: EhrIntegration = request.auth
        actor = f"ehr:{integration.client_id}"
        if not integration.enabled:
            record("ehr.launch.issue", request._request, outcome="failure", actor=actor, detail={"reason": "disabled"})
            raise exceptions.PermissionDenied("This integration is disabled.")
        body = LaunchRequestSerializer(data=request.data, context={"return_origins": integration.origins})
        if not body.is_valid():
            record(
                "ehr.launch.issue",
                request._request,
                outcome="failure",
                actor=actor,
                detail={"reason": "invalid request", "fields": sorted(body.errors)},
            )
            return Response(body.errors, status=status.HTTP_400_BAD_REQUEST)
        studies = body.validated_data["studies"]
        wanted = launch.LaunchRequest(
            clinician_id=body.validated_data["clinician"]["id"],
            clinician_name=body.validated_data["clinician"]["name"],
            clinician_email=body.validated_data["clinician"]["email"],
            clinician_role=body.validated_data["clinician"]["role"],
            patient_id=body.validated_data["patient"]["id"],
            issuer_of_patient_id=body.validated_data["patient"]["issuer"],
            study_instance_uids=tuple(
                dict.fromkeys(s["study_instance_uid"] for s in studies if "study_instance_uid" in s)
            ),
            accession_numbers=tuple(dict.fromkeys(s["accession_number"] for s in studies if "accession_number" in s)),
            return_url=body.validated_data["return_url"],
        )
        try:
            issued = launch.issue(integration, wanted, request._request)
        except launch.Refusal as refusal:
            raise exceptions.PermissionDenied(f"Refused: {refusal.reason}.") from None
        arrived_uids = {s.study_instance_uid for s in issued.matches.allowed}
        arrived_accessions = {s.accession_number for s in issued.matches.allowed}
        url = request.build_absolute_uri(reverse("ehr-launch-page", args=[integration.client_id]))
        answer = {
            "launch_url": f"{url}#{issued.token}",
            "expires_at": issued.launch.expires_at,
            "expires_in": max(0, round((issued.launch.expires_at - clock.now()).total_seconds())),
            "studies": [{"study_instance_uid": u, "available": u in arrived_uids} for u in wanted.study_instance_uids]
            + [{"accession_number": a, "available": a in arrived_accessions} for a in wanted.accession_numbers],
        }
        response = Response(LaunchResponseSerializer(answer).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response
