"""The one decision every read path makes before touching stored bytes: can they be read now, or restored first?

An instance whose (0008,0056) Instance Availability is not ONLINE lives on a
tier that needs a restore (the mover sets it at each switch). A read path
calls :func:`require_online` with the availability and id of the instances
it is about to read; if any is NEARLINE it raises :class:`Restoring`, which
:func:`~archive.dicomweb.auth.dicomweb_view` answers with :func:`restoring`:
the restores of the whole study are asked for (once per object, however many requests ask:
:func:`archive.ingest.restore.request_restores`) and the client gets 503
Service Unavailable with Retry-After and a body saying a restore is under
way and about how long it takes. Metadata and QIDO never need the stored
bytes and are always answered.

An OFFLINE instance (its tier's media need a person: disks removed, tapes on
a shelf) is answered 503 Service Unavailable too — the resource exists (QIDO
lists it, so 404 would be wrong) and is not readable now — but with no
Retry-After, since no retry will succeed until an administrator brings the
media back and runs ``manage.py tiers restore``; no restore is started for
it, and the body says so. PS3.18 defines no status of its own for either.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from archive.dicomweb.http import audit_at_intervals
from archive.ingest.lastaccess import touch_study
from archive.ingest.restore import request_restores
from archive.models import Availability, Instance


class Restoring(Exception):
    """Some instances a request reads must be restored first (``ids``: their primary keys)."""

    def __init__(self, ids: list[int]) -> None:
        super().__init__(f"{len(ids)} instance(s) need a restore")
        self.ids = ids


def require_online(rows: Iterable[tuple[int, str]]) -> None:
    """Raise :class:`Restoring` unless every ``(id, availability)`` is ONLINE."""
    waiting = [pk for pk, availability in rows if availability != Availability.ONLINE]
    if waiting:
        raise Restoring(waiting)


def restoring(request: HttpRequest, exc: Restoring) -> HttpResponse:
    """503 + Retry-After for a read that must wait for restores, which this starts (idempotently)."""
    asked_for = Instance.objects.filter(pk__in=exc.ids)
    first = asked_for.values_list("series__study__study_instance_uid", "series__study__patient__patient_id").first()
    study, patient = first if first is not None else ("", "")
    # The whole study comes back: a reader who opens one image of it will want the rest.
    whole = Instance.objects.filter(series__study__in=asked_for.values("series__study"))
    asked = request_restores(whole, "read", request, study_instance_uid=study, patient_id=patient)
    offline = asked_for.filter(availability=Availability.OFFLINE).count()
    # The refused read itself, once every few minutes per user and study (as frame reads are).
    audit_at_intervals(request, "restore_wait", study, patient, {"objects": asked.in_flight, "offline": offline})
    touch_study(study)  # a read, though it must wait: rules counting from the last access see it
    if offline:
        return _offline(offline)
    minutes = max(1, round(asked.seconds_left / 60))
    response = JsonResponse(
        {
            "detail": (
                f"Restoring from archive storage: {asked.in_flight} object(s) are being restored, "
                f"about {minutes} min. Send the request again after Retry-After seconds."
            ),
            "restoring": {"objects": asked.in_flight, "estimate_seconds": asked.seconds_left},
        },
        status=503,
    )
    # The estimate left, but never more than PACS_RESTORE_RETRY_AFTER_MAX: clients check back politely.
    response["Retry-After"] = str(max(1, min(int(settings.PACS_RESTORE_RETRY_AFTER_MAX), asked.seconds_left)))
    response["Cache-Control"] = "no-store"
    return response


def _offline(objects: int) -> HttpResponse:
    """503 without Retry-After: the objects are OFFLINE, no restore was started, an administrator is needed."""
    response = JsonResponse(
        {
            "detail": (
                f"Offline: {objects} object(s) are on storage media that are not connected. An administrator must "
                "bring them back (manage.py tiers restore); no restore was started, and retrying will not help "
                "until then."
            ),
            "offline": {"objects": objects},
        },
        status=503,
    )
    response["Cache-Control"] = "no-store"
    return response
