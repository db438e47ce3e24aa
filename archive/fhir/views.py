"""FHIR interactions: ``metadata``, ImagingStudy and Patient search and read, Endpoint read.

Thin views: :mod:`.search` turns parameters into a query over what the user
may see, :mod:`.resources` turns rows into resources. A page of ImagingStudy
results costs a fixed number of queries (the count, the studies with their
patients, their series, and with ``_include`` nothing more). Each search
and each read leaves one audit record; a read of what the user may not see
is a 404, as for what does not exist, and is audited as denied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, QueryDict
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string

from archive.access import policy, visible_studies
from archive.fhir import resources
from archive.fhir.http import fhir_response, fhir_view, outcome
from archive.fhir.search import Page, SearchError, imaging_studies, patients
from archive.models import Instance, Patient, Series, Study
from audit.trail import record

FORM = "application/x-www-form-urlencoded"


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("fhir-metadata")).removesuffix("/metadata")


def _dicomweb_root(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("dicomweb-root")).rstrip("/")


def _search_params(request: HttpRequest) -> QueryDict | HttpResponse:
    """GET's query string, or a POST ``_search``'s form body (which keeps identifiers out of URLs and logs)."""
    if request.method != "POST":
        return request.GET
    if request.content_type != FORM:
        return outcome(415, "not-supported", f"POST _search takes {FORM}")
    params = request.POST.copy()
    for key in request.GET:
        params.setlist(key, request.GET.getlist(key) + params.getlist(key))
    return params


def _bundle(request: HttpRequest, kind: str, total: int, page: Page, entries: list[dict[str, Any]]) -> dict[str, Any]:
    base = _base(request)

    def link(offset: int) -> str:
        return f"{base}/{kind}?" + urlencode([*page.used, ("_count", page.count), ("_offset", offset)])

    links = [{"relation": "self", "url": link(page.offset)}]
    if page.offset + page.count < total and page.count:
        links.append({"relation": "next", "url": link(page.offset + page.count)})
    if page.offset:
        links.append({"relation": "previous", "url": link(max(0, page.offset - page.count))})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return bundle


def _audit_query(params: QueryDict) -> dict[str, str]:
    return {k[:64]: ",".join(params.getlist(k))[:128] for k in list(params)[:16]}


@fhir_view(anonymous=True)
def metadata(request: HttpRequest) -> HttpResponseBase:
    """The CapabilityStatement: public, as FHIR clients read it before they authenticate.

    ``settings.PACS_FHIR_SECURITY``, when set, is the dotted path of a function of the request
    that gives the ``rest.security`` additions (SMART's oauth-uris extension and service code).
    """
    statement = resources.capability_statement(_base(request), timezone.now().date().isoformat())
    security_of = getattr(settings, "PACS_FHIR_SECURITY", "")
    security = import_string(security_of)(request) if security_of else None
    if security:
        statement["rest"][0]["security"].update(security)
    return fhir_response(statement)


def _refused_search(request: HttpRequest, resource: str) -> HttpResponse | None:
    """403 for a user who may not search the archive (as QIDO-RS answers: a referring clinician, a launched session)."""
    if policy().can_search(request.user):
        return None
    record("search", request, outcome="denied", detail={"via": "FHIR", "resource": resource})
    return outcome(403, "forbidden", "You may not search the archive; open a study you were given instead")


@fhir_view()
def imaging_study_search(request: HttpRequest) -> HttpResponseBase:
    """``GET ImagingStudy?…`` (a POST here would be a create: 405)."""
    return _imaging_study_search(request)


@fhir_view(methods=("GET", "HEAD", "POST"))
def imaging_study_search_post(request: HttpRequest) -> HttpResponseBase:
    """``ImagingStudy/_search``, GET or POST with a form body."""
    return _imaging_study_search(request)


def _searched(
    request: HttpRequest, resource: str, search: Callable[[Any, QueryDict], tuple[QuerySet[Any], Page]]
) -> tuple[QueryDict, Page, int, list[Any]] | HttpResponse:
    """The steps every search shares: may search, the parameters, the query; its parameters, page, total and rows."""
    refused = _refused_search(request, resource)
    if refused:
        return refused
    params = _search_params(request)
    if isinstance(params, HttpResponse):
        return params
    try:
        found, page = search(request.user, params)
    except SearchError as exc:
        record("search", request, outcome="failure", detail={"via": "FHIR", "resource": resource, "error": str(exc)})
        return outcome(400, "invalid", str(exc))
    rows = list(found[page.offset : page.offset + page.count]) if page.count and not page.count_only else []
    return params, page, found.count(), rows


def _imaging_study_search(request: HttpRequest) -> HttpResponseBase:
    searched = _searched(request, "ImagingStudy", imaging_studies)
    if isinstance(searched, HttpResponse):
        return searched
    params, page, total, rows = searched
    series_of = _series_of(rows)
    base = _base(request)
    entries = [
        {
            "fullUrl": f"{base}/ImagingStudy/{s.study_instance_uid}",
            "resource": resources.imaging_study(s, series_of.get(s.pk, [])),
            "search": {"mode": "match"},
        }
        for s in rows
    ]
    if page.include_endpoint and rows:
        entries.append(
            {
                "fullUrl": f"{base}/Endpoint/{resources.ENDPOINT_ID}",
                "resource": resources.endpoint(_dicomweb_root(request)),
                "search": {"mode": "include"},
            }
        )
    record(
        "search",
        request,
        detail={"via": "FHIR", "resource": "ImagingStudy", "query": _audit_query(params), "results": len(rows)},
    )
    return fhir_response(_bundle(request, "ImagingStudy", total, page, entries))


def _series_of(studies: list[Study]) -> dict[int, list[Series]]:
    by_study: dict[int, list[Series]] = {}
    if studies:
        for series in Series.objects.filter(study_id__in=[s.pk for s in studies]).order_by("series_number", "pk"):
            by_study.setdefault(series.study_id, []).append(series)
    return by_study


@fhir_view()
def imaging_study_read(request: HttpRequest, study_id: str) -> HttpResponseBase:
    study = visible_studies(request.user).select_related("patient").filter(study_instance_uid=study_id).first()
    if study is None:
        record("retrieve", request, outcome="denied", study_instance_uid=study_id[:64], detail={"via": "FHIR"})
        return outcome(404, "not-found", "No ImagingStudy with this id is visible to you")
    series = list(Series.objects.filter(study=study).order_by("series_number", "pk"))
    instances: dict[int, list[Instance]] = {}
    for instance in study_instances(series):
        instances.setdefault(instance.series_id, []).append(instance)
    record(
        "retrieve",
        request,
        patient_id=study.patient.patient_id,
        study_instance_uid=study.study_instance_uid,
        detail={"via": "FHIR", "resource": "ImagingStudy"},
    )
    return fhir_response(resources.imaging_study(study, series, instances))


def study_instances(series: list[Series]) -> QuerySet[Instance]:
    return (
        Instance.objects.filter(series__in=series)
        .only("sop_instance_uid", "sop_class_uid", "instance_number", "series_id")
        .order_by("instance_number", "pk")
    )


@fhir_view()
def patient_search(request: HttpRequest) -> HttpResponseBase:
    """``GET Patient?…`` (a POST here would be a create: 405)."""
    return _patient_search(request)


@fhir_view(methods=("GET", "HEAD", "POST"))
def patient_search_post(request: HttpRequest) -> HttpResponseBase:
    """``Patient/_search``, GET or POST with a form body."""
    return _patient_search(request)


def _patient_search(request: HttpRequest) -> HttpResponseBase:
    searched = _searched(request, "Patient", patients)
    if isinstance(searched, HttpResponse):
        return searched
    params, page, total, rows = searched
    base = _base(request)
    entries = [
        {"fullUrl": f"{base}/Patient/{p.pk}", "resource": resources.patient(p), "search": {"mode": "match"}}
        for p in rows
    ]
    record(
        "search",
        request,
        detail={"via": "FHIR", "resource": "Patient", "query": _audit_query(params), "results": len(rows)},
    )
    return fhir_response(_bundle(request, "Patient", total, page, entries))


@fhir_view()
def patient_read(request: HttpRequest, patient_id: str) -> HttpResponseBase:
    found = None
    if patient_id.isdigit() and len(patient_id) <= 18:
        found = Patient.objects.filter(
            pk=int(patient_id), pk__in=visible_studies(request.user).values("patient_id")
        ).first()
    if found is None:
        record(
            "retrieve", request, outcome="denied", detail={"via": "FHIR", "resource": "Patient", "id": patient_id[:64]}
        )
        return outcome(404, "not-found", "No Patient with this id is visible to you")
    record("retrieve", request, patient_id=found.patient_id, detail={"via": "FHIR", "resource": "Patient"})
    return fhir_response(resources.patient(found))


@fhir_view()
def endpoint_read(request: HttpRequest, endpoint_id: str) -> HttpResponseBase:
    if endpoint_id != resources.ENDPOINT_ID:
        return outcome(404, "not-found", "No such Endpoint")
    return fhir_response(resources.endpoint(_dicomweb_root(request)))


@fhir_view(methods=("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))
def unsupported(request: HttpRequest, rest: str) -> HttpResponseBase:
    return outcome(404, "not-supported", "This server answers ImagingStudy, Patient, Endpoint and metadata, read-only")
