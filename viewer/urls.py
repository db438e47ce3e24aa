"""Viewer URLs, mounted at ``/viewer/``: the study search and the viewer page."""

from django.urls import path

from viewer import views

urlpatterns = [
    path("", views.search, name="viewer-search"),
    path("studies/<str:study_instance_uid>", views.study, name="viewer-study"),
    path("viewer.js", views.viewer_script, name="viewer-script"),
]
