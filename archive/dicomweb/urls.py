"""URL map of the DICOMweb API (PS3.18 §10), mounted at ``/dicom-web/``.

UIDs are matched loosely here and validated by
:func:`archive.dicomweb.auth.dicomweb_view` before a view runs, so a malformed
UID gets a 400 with a reason rather than a bare 404.
"""

from django.urls import path, register_converter

from archive.dicomweb import bulkdata, frames, qido, rendered, views, wado


class UIDConverter:
    regex = r"[^/]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(UIDConverter, "uid")

S = "studies/<uid:study>"
SE = S + "/series/<uid:series>"
I = SE + "/instances/<uid:instance>"  # noqa: E741

urlpatterns = [
    path("", qido.root, name="dicomweb-root"),
    path("studies", views.studies, name="dicomweb-studies"),
    path("series", qido.search_series, name="dicomweb-all-series"),
    path("instances", qido.search_instances, name="dicomweb-all-instances"),
    path(S, views.study, name="dicomweb-study"),
    path(S + "/metadata", wado.study_metadata),
    path(S + "/rendered", rendered.study_rendered),
    path(S + "/thumbnail", rendered.study_thumbnail),
    path(S + "/series", qido.search_series),
    path(S + "/instances", qido.search_instances),
    path(SE, views.series),
    path(SE + "/metadata", wado.series_metadata),
    path(SE + "/rendered", rendered.series_rendered),
    path(SE + "/thumbnail", rendered.series_thumbnail),
    path(SE + "/instances", qido.search_instances),
    path(I, wado.retrieve_instance),
    path(I + "/metadata", wado.instance_metadata),
    path(I + "/rendered", rendered.instance_rendered),
    path(I + "/thumbnail", rendered.instance_thumbnail),
    path(I + "/frames/<str:frames>", frames.retrieve_frames),
    path(I + "/frames/<str:frames>/rendered", rendered.frames_rendered),
    path(I + "/frames/<str:frames>/thumbnail", rendered.frames_thumbnail),
    path(I + "/bulkdata/<str:tag>", bulkdata.bulkdata),
]
