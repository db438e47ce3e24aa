"""The worklist endpoints the viewer page calls while a radiologist reads a study.

* :func:`heartbeat`: ``POST /worklist/studies/<uid>/heartbeat``, sent by the
  viewer (``static/viewer/services/heartbeat.js``) every
  :func:`~portal.worklist.claims.heartbeat_seconds` while its tab is visible.
  It keeps the reader's claim from expiring while the study is open
  (:func:`portal.worklist.claims.heartbeat`) and answers ``{"held": true}``,
  or ``{"held": false}`` when the user holds no live claim on it (nothing
  changes). A closed or hidden viewer sends nothing, so an abandoned claim
  still expires. CSRF protected like every POST.
* :func:`next_study` and :func:`previous_study`:
  ``GET /worklist/studies/<uid>/next`` (``previous``), the viewer's *Next
  study* and *Previous study* links and their keys (``]`` and ``[``): a
  redirect to the viewer of the row after (before) this study's in the
  worklist's list to read (the default filters and order), one keyset
  query; to the worklist at either end. A study no longer on that list (just
  signed, say) has the top of the list as its next study.

The study is found through the one access policy (the worklist's visible
rows): a study the user may not see answers 404 exactly like one that does
not exist, and that refusal is audited. Only readers (who may claim) beat or
step: anyone else gets 403, audited (the order of the list to read tells a
study's status).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

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


def _neighbour(user: object, item: WorklistItem, forward: bool) -> WorklistItem | None:
    """The row after (``forward``) or before ``item`` on the user's list to read, by its default order."""
    on_list = listing.filtered(listing.visible_items(user), {}, user).filter(pk=item.pk).exists()
    if not on_list:
        top = listing.page(user, {}, size=1).rows if forward else []
        return top[0] if top else None
    found = listing.page(user, {"after" if forward else "before": item.pk}, size=1).rows
    return found[0] if found and found[0].pk != item.pk else None


def _step(forward: bool) -> Callable[[HttpRequest, str], HttpResponse]:
    action = "worklist_next" if forward else "worklist_previous"

    @login_required
    @never_cache
    @require_GET
    def view(request: HttpRequest, study_instance_uid: str) -> HttpResponse:
        if not is_valid_uid(study_instance_uid):
            return HttpResponse("not a valid Study Instance UID", status=400, content_type="text/plain")
        if not claims.may_claim(request.user):  # the list to read (its order, its statuses) is a reader's
            record(action, request, outcome="denied", detail={"reason": "only readers step through the worklist"})
            return HttpResponse(
                "only radiologists and administrators read the worklist", status=403, content_type="text/plain"
            )
        item = _visible(request, study_instance_uid, action)
        if item is None:
            return HttpResponse("no such study", status=404, content_type="text/plain")
        neighbour = _neighbour(request.user, item, forward)
        if neighbour is None:
            return HttpResponseRedirect(reverse("worklist"))
        return HttpResponseRedirect(reverse("viewer-study", args=[neighbour.study_instance_uid]))

    view.__name__ = "next_study" if forward else "previous_study"
    view.__doc__ = f"Open the {'next' if forward else 'previous'} study to read in the viewer (or the worklist)."
    return view


next_study = _step(forward=True)
previous_study = _step(forward=False)
