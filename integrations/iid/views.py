"""``/IHEInvokeImageDisplay``: the Image Display actor of IHE Invoke Image Display (RAD-106).

A thin view: parse (:mod:`.request`, 400 with a sentence on a bad
parameter), find what the user may see (:mod:`.display`), then one study
opens the viewer, several open a list, none answers a 404 page that says
only that nothing is available to this user for this request (it reveals
neither whether the studies exist nor whose they are). Anonymous browsers
are sent to sign in and come back; a client that does not take HTML gets
401. Every invocation, answered or refused, leaves one audit record.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from audit.trail import record
from integrations.iid import display
from integrations.iid.request import BadRequest, IidRequest, parse


def _wants_html(request: HttpRequest) -> bool:
    accept = request.META.get("HTTP_ACCEPT", "")
    return not accept or "text/html" in accept or "*/*" in accept


def _private(response: HttpResponseBase) -> HttpResponseBase:
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _asked(asked: IidRequest) -> dict[str, object]:
    """What the audit record keeps of the request (identifiers go to their own columns)."""
    return {
        "request_type": asked.request_type.value,
        "studies": list(asked.study_uids)[:20],
        "accessions": list(asked.accession_numbers)[:20],
        "modalities": list(asked.modalities),
        "most_recent": asked.most_recent,
        "lower": asked.lower,
        "upper": asked.upper,
    }


@never_cache
def invoke_image_display(request: HttpRequest) -> HttpResponseBase:
    """Sign-in first (whatever the method, so nothing is said to anonymous callers), then GET only."""
    if not request.user.is_authenticated:
        record("iid.invoke", request, outcome="failure", detail={"reason": "not signed in"})
        if _wants_html(request):
            return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
        response = HttpResponse("Sign in first.\n", status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="IHEInvokeImageDisplay"'
        return response
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    try:
        asked = parse({k: request.GET.getlist(k) for k in request.GET})
    except BadRequest as problem:
        record("iid.invoke", request, outcome="failure", detail={"reason": "bad request", "problem": str(problem)})
        page = {"problem": str(problem)}
        return _private(render(request, "integrations/iid/bad_request.html", page, status=400))
    patient_id = asked.patient.patient_id if asked.patient is not None else ""
    studies = display.studies_for(request.user, asked)
    if not studies:
        record(
            "iid.invoke",
            request,
            outcome="failure",
            patient_id=patient_id,
            study_instance_uid=asked.study_uids[0] if len(asked.study_uids) == 1 else "",
            detail={**_asked(asked), "reason": "nothing visible"},
        )
        return _private(render(request, "integrations/iid/none.html", status=404))
    record(
        "iid.invoke",
        request,
        patient_id=patient_id or studies[0].patient.patient_id,
        study_instance_uid=studies[0].study_instance_uid if len(studies) == 1 else "",
        detail={**_asked(asked), "opened": [s.study_instance_uid for s in studies][:50]},
    )
    if len(studies) == 1:
        return _private(redirect("viewer-study", studies[0].study_instance_uid))
    return _private(render(request, "integrations/iid/studies.html", {"studies": studies}))
