"""Top-level URL map: DICOMweb, FHIR, the portal and worklist, the viewer, JSON APIs and EHR launch, admin, health.

The JSON API (``/api/``) gathers the apps' own API URLs (worklist, reports, the EHR launch) and
serves their OpenAPI 3 schema (``/api/schema/``) and its documentation page (``/api/docs/``).
"""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import IsAuthenticated

from integrations import urls as integrations_urls
from portal.reports import api as reports_api
from portal.worklist import api as worklist_api


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
    path("api/", include(worklist_api.urlpatterns)),
    path("api/", include(reports_api.urlpatterns)),
    path("api/", include(integrations_urls.api_urlpatterns)),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    # Swagger UI with its script in a file of its own (?script) and no inline style: the strict CSP holds.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="api-schema", permission_classes=[IsAuthenticated], template_name="api/docs.html"
        ),
        name="api-docs",
    ),
    path("ehr/", include(integrations_urls.page_urlpatterns)),
]
