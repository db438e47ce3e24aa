"""URLs of the FHIR endpoint, mounted at ``/fhir/``."""

from django.urls import path, re_path

from archive.fhir import views

#: A FHIR resource id: [A-Za-z0-9\-\.]{1,64}.
ID = r"(?P<{}>[A-Za-z0-9\-.]{{1,64}})"

urlpatterns = [
    path("metadata", views.metadata, name="fhir-metadata"),
    path("ImagingStudy", views.imaging_study_search, name="fhir-imagingstudy-search"),
    path("ImagingStudy/_search", views.imaging_study_search_post, name="fhir-imagingstudy-search-post"),
    re_path(r"^ImagingStudy/" + ID.format("study_id") + "$", views.imaging_study_read, name="fhir-imagingstudy"),
    path("Patient", views.patient_search, name="fhir-patient-search"),
    path("Patient/_search", views.patient_search_post, name="fhir-patient-search-post"),
    re_path(r"^Patient/" + ID.format("patient_id") + "$", views.patient_read, name="fhir-patient"),
    re_path(r"^Endpoint/" + ID.format("endpoint_id") + "$", views.endpoint_read, name="fhir-endpoint"),
    re_path(r"^(?P<rest>.*)$", views.unsupported),
]
