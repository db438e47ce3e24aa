"""Authentication for DICOMweb: a signed-in session or a bearer token.

:func:`dicomweb_view` wraps every DICOMweb view. Anonymous requests get 401
with a ``WWW-Authenticate: Bearer`` challenge; then the decorator refuses a
method the resource does not answer (405) and a malformed UID in the URL (400),
so no view checks these itself. Bearer requests are exempt from
CSRF (no ambient credentials); a browser session must still pass the CSRF
check for unsafe methods. Tokens are never accepted in the URL.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, overload

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt

from archive.bearer import authenticate_bearer
from archive.dicom.uid import is_valid_uid
from archive.dicomweb.http import error, retry_later
from archive.dicomweb.restoring import Restoring, restoring

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
log = logging.getLogger(__name__)


def unauthorized(detail: str = "Authentication required") -> HttpResponse:
    response = JsonResponse({"detail": detail}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="dicom-web"'
    return response


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda r: HttpResponse(), (), {})


#: The view arguments that carry a UID from the URL, and what each one is called in an error.
UID_ARGUMENTS = {"study": "Study Instance UID", "series": "Series Instance UID", "instance": "SOP Instance UID"}
#: The methods of a resource that is only read.
READ_METHODS = ("GET", "HEAD")

View = Callable[..., HttpResponseBase]


@overload
def dicomweb_view(view: View, /) -> View: ...
@overload
def dicomweb_view(*, methods: tuple[str, ...] | None = None) -> Callable[[View], View]: ...
def dicomweb_view(view: View | None = None, /, *, methods: tuple[str, ...] | None = None) -> Any:
    """Require a session user or a bearer token and set ``request.user``; then check what every view would.

    Before the view runs: a method outside ``methods`` (when given) is a 405
    with ``Allow``, and an argument named ``study``, ``series`` or
    ``instance`` (:data:`UID_ARGUMENTS`, by keyword or position) that is not a
    valid DICOM UID is a 400 that names it. The views receive only valid UIDs.
    """
    if view is None:
        return functools.partial(_wrap, methods=methods)
    return _wrap(view, methods)


def uid_positions(view: Callable[..., object]) -> dict[str, int]:
    """Where each UID argument of ``view`` stands among its positional arguments (after the request)."""
    names = list(inspect.signature(view).parameters)[1:]
    return {name: names.index(name) for name in UID_ARGUMENTS if name in names}


def bad_uid(positions: dict[str, int], args: tuple[Any, ...], kwargs: dict[str, Any]) -> HttpResponse | None:
    """400 for the first UID argument that is not a valid DICOM UID; None if all are (or absent)."""
    for name, position in positions.items():
        value = kwargs[name] if name in kwargs else args[position] if position < len(args) else None
        if value is not None and not is_valid_uid(value):
            return error(400, f"The {UID_ARGUMENTS[name]} in the URL is not a valid UID (PS3.5 §9)")
    return None


def _wrap(view: View, methods: tuple[str, ...] | None) -> View:
    positions = uid_positions(view)
    allow = ", ".join(methods) if methods else ""

    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return authenticated(request, *args, **kwargs)
        except (OperationalError, InterfaceError):  # the database is down, locked or gone: not the request's fault
            log.exception("DICOMweb request not served: the index is not available")
            return retry_later("The archive's index is not available right now. Send the request again later.")

    def authenticated(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.META.get("HTTP_AUTHORIZATION"):
            bearer = authenticate_bearer(request)
            if bearer.user is None:
                if bearer.status == 403:
                    return error(403, bearer.detail)
                return unauthorized(bearer.detail)
            request.user = bearer.user
        elif request.user.is_authenticated:
            if request.method not in SAFE_METHODS:
                failure = _csrf_failure(request)
                if failure is not None:
                    return JsonResponse({"detail": "CSRF check failed"}, status=403)
        else:
            return unauthorized()
        response = checked(request, *args, **kwargs)
        # Another user's token must never be answered from a cache (the session path adds Vary: Cookie).
        patch_vary_headers(response, ("Authorization",))
        return response

    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if methods is not None and request.method not in methods:
            return error(405, f"Only {allow} may be used on this resource", allow=allow)
        try:
            return bad_uid(positions, args, kwargs) or view(request, *args, **kwargs)
        except Restoring as exc:  # stored bytes on a tier that needs a restore: 503, and the restore starts
            return restoring(request, exc)

    return wrapper
