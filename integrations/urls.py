"""URLs of the integrations: the EHR launch API (``/api/``) and its browser pages (``/ehr/``)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated

from integrations.ehr import api, views

api_urlpatterns = [
    path("ehr/launch", api.LaunchView.as_view(), name="ehr-launch-api"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
]

page_urlpatterns = [
    path("launch/problem/<slug:problem>", views.problem_page, name="ehr-launch-problem"),
    path("launch/<str:client_id>", views.launch_page, name="ehr-launch-page"),
    path("waiting", views.waiting, name="ehr-waiting"),
    path("studies", views.studies, name="ehr-studies"),
]
