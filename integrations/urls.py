"""URLs of the integrations: the EHR launch API (under ``/api/``), its browser pages (``/ehr/``), and root paths.

The root paths are those a standard fixes: ``/IHEInvokeImageDisplay`` (IHE IID), SMART's
``.well-known/smart-configuration`` (at the root and at the FHIR and DICOMweb bases).
"""

from django.urls import path

from integrations.ehr import api, views
from integrations.iid import views as iid_views
from integrations.smart import views as smart_views

api_urlpatterns = [
    path("ehr/launch", api.LaunchView.as_view(), name="ehr-launch-api"),
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
