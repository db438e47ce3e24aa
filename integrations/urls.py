"""URLs of the integrations: the EHR launch API (``/api/``), its browser pages (``/ehr/``), and root paths.

The root paths are those a standard fixes: ``/IHEInvokeImageDisplay`` (IHE IID), SMART's
``.well-known/smart-configuration`` (at the root and at the FHIR and DICOMweb bases).
"""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import IsAuthenticated

from integrations.ehr import api, views
from integrations.iid import views as iid_views
from integrations.smart import views as smart_views

api_urlpatterns = [
    path("ehr/launch", api.LaunchView.as_view(), name="ehr-launch-api"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    # Swagger UI with its script in a file of its own (?script) and no inline style: the strict CSP holds.
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="api-schema", permission_classes=[IsAuthenticated], template_name="integrations/api_docs.html"
        ),
        name="api-docs",
    ),
]

page_urlpatterns = [
    path("launch/problem/<slug:problem>", views.problem_page, name="ehr-launch-problem"),
    path("launch/<str:client_id>", views.launch_page, name="ehr-launch-page"),
    path("waiting", views.waiting, name="ehr-waiting"),
    path("studies", views.studies, name="ehr-studies"),
]

root_urlpatterns = [
    path("IHEInvokeImageDisplay", iid_views.invoke_image_display, name="iid-invoke"),
    path(".well-known/smart-configuration", smart_views.smart_configuration, name="smart-configuration"),
    path("fhir/.well-known/smart-configuration", smart_views.smart_configuration, name="smart-configuration-fhir"),
    path(
        "dicom-web/.well-known/smart-configuration",
        smart_views.smart_configuration,
        name="smart-configuration-dicomweb",
    ),
    path("smart/launch", smart_views.smart_launch, name="smart-launch"),
    path("smart/callback", smart_views.smart_callback, name="smart-callback"),
    path("smart/studies", smart_views.smart_studies, name="smart-studies"),
]
