"""Report URLs, mounted at ``/reports/``: a study's report page, its panel beside the viewer, its actions."""

from django.urls import path

from portal.reports import views

urlpatterns = [
    path("studies/<str:study_instance_uid>/", views.report_page, name="report"),
    path("studies/<str:study_instance_uid>/panel", views.panel, name="report-panel"),
    path("studies/<str:study_instance_uid>/save", views.save, name="report-save"),
    path("studies/<str:study_instance_uid>/sign", views.sign, name="report-sign"),
    path("studies/<str:study_instance_uid>/amend", views.amend, name="report-amend"),
    path("studies/<str:study_instance_uid>/critical", views.critical, name="report-critical"),
    path("studies/<str:study_instance_uid>/print", views.printable, name="report-print"),
]
