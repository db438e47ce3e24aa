"""Worklist URLs, mounted at ``/worklist/``."""

from django.urls import path

from portal.worklist import correction, qc, reading, views

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("rows", views.rows, name="worklist-rows"),
    path("changes", views.changes, name="worklist-changes"),
    path("saved", views.save, name="worklist-save"),
    path("saved/<int:pk>/delete", views.forget, name="worklist-forget"),
    path("items/<int:pk>/claim", views.claim, name="worklist-claim"),
    path("items/<int:pk>/release", views.release, name="worklist-release"),
    path("items/<int:pk>/override", views.override, name="worklist-override"),
    path("items/<int:pk>/ready", views.mark_ready, name="worklist-ready"),
    path("items/<int:pk>/qc-failed", views.mark_qc_failed, name="worklist-qc-failed"),
    path("items/<int:pk>/open", views.open_study, name="worklist-open"),
    path("qc/", qc.qc_list, name="worklist-qc"),
    path("qc/<int:pk>/ready", qc.qc_passed, name="worklist-qc-passed"),
    path("qc/<int:pk>/failed", qc.qc_failed, name="worklist-qc-failed-reason"),
    path("qc/<int:pk>/correct", correction.correct, name="worklist-correct"),
    path("qc/<int:pk>/split", correction.split, name="worklist-split"),
    path("qc/<int:pk>/merge", correction.merge, name="worklist-merge"),
    path("studies/<str:study_instance_uid>/heartbeat", reading.heartbeat, name="worklist-heartbeat"),
    path("studies/<str:study_instance_uid>/next", reading.next_study, name="worklist-next-study"),
    path("studies/<str:study_instance_uid>/previous", reading.previous_study, name="worklist-previous-study"),
]
