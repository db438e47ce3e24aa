"""Top-level URL map: DICOMweb, FHIR, the portal and worklist, the viewer, JSON APIs and EHR launch, admin, health."""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from integrations import urls as integrations_urls


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("health", health, name="health"),
    # Before dicom-web/ and fhir/: SMART discovery lives under their bases too (the FHIR URLs end in a catch-all).
    path("", include(integrations_urls.root_urlpatterns)),
    path("dicom-web/", include("archive.dicomweb.urls")),
    path("fhir/", include("archive.fhir.urls")),
    path("admin/", admin.site.urls),
    path("mfa/", include("portal.mfa.urls")),
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("worklist/", include("portal.worklist.urls")),
    path("reports/", include("portal.reports.urls")),
    path("", include("portal.urls")),
    path("viewer/", include("viewer.urls")),
    path("api/", include(integrations_urls.api_urlpatterns)),
    path("ehr/", include(integrations_urls.page_urlpatterns)),
]
