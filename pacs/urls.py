"""Top-level URL map: DICOMweb, the portal and its worklist, the viewer, admin, and health."""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("health", health, name="health"),
    path("dicom-web/", include("archive.dicomweb.urls")),
    path("admin/", admin.site.urls),
    path("mfa/", include("portal.mfa.urls")),
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("worklist/", include("portal.worklist.urls")),
    path("", include("portal.urls")),
    path("viewer/", include("viewer.urls")),
]
