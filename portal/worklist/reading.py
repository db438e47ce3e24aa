"""The worklist endpoints the viewer page calls while a radiologist reads a study.

* :func:`heartbeat`: ``POST /worklist/studies/<uid>/heartbeat``, sent by the
  viewer (``static/viewer/services/heartbeat.js``) every
  :func:`~portal.worklist.claims.heartbeat_seconds` while its tab is visible.
  It keeps the reader's claim from expiring while the study is open
  (:func:`portal.worklist.claims.heartbeat`) and answers ``{"held": true}``,
  or ``{"held": false}`` when the user holds no live claim on it (nothing
  changes). A closed or hidden viewer sends nothing, so an abandoned claim
  still expires. CSRF protected like every POST.

The study is found through the one access policy (the worklist's visible
rows): a study the user may not see answers 404 exactly like one that does
not exist, and that refusal is audited.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from archive.dicom.uid import is_valid_uid
from audit.trail import record
from portal.worklist import claims, listing
from portal.worklist.models import WorklistItem


def _visible(request: HttpRequest, study_instance_uid: str, action: str) -> WorklistItem | None:
    """The row of a study the user may see; a miss is audited without saying whether the study exists."""
    item = listing.visible_items(request.user).filter(study_instance_uid=study_instance_uid).first()
    if item is None:
        record(action, request, outcome="denied", detail={"reason": "not found or not visible"})
    return item


@login_required
@never_cache
@require_POST
def heartbeat(request: HttpRequest, study_instance_uid: str) -> HttpResponse:
    """Refresh the user's claim on the study the viewer shows: ``{"held": bool}``."""
    if not is_valid_uid(study_instance_uid):
        return HttpResponse("not a valid Study Instance UID", status=400, content_type="text/plain")
    if not claims.may_claim(request.user):
        record("worklist_heartbeat", request, outcome="denied", detail={"reason": "only readers claim studies"})
        return HttpResponse("only radiologists and administrators hold claims", status=403, content_type="text/plain")
    item = _visible(request, study_instance_uid, "worklist_heartbeat")
    if item is None:
        return HttpResponse("no such study", status=404, content_type="text/plain")
    return JsonResponse({"held": claims.heartbeat(item, request.user)})
