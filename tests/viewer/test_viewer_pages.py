"""The viewer's pages: sign-in required, UID validation, access policy, CSP-safe shells."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.db.models import QuerySet
from django.test import Client

from archive import access
from archive.access import AccessPolicy
from archive.dicom.synthetic import StudySpec, make_instance, make_series
from archive.models import Study
from audit.models import AuditEvent
from tests.conftest import stow
from viewer.bundle import BundleError, bundle

PAYLOAD = "<script>alert(1)</script>^<img src=x onerror=alert(2)>"


class NothingPolicy(AccessPolicy):
    """A policy under which nobody sees any study."""

    def studies(self, user: Any) -> QuerySet[Study]:
        return Study.objects.none()


@pytest.fixture(autouse=True)
def everyone_sees_everything(settings: Any) -> Any:
    """Pin the simplest policy: the viewer must only ever ask ``visible_studies``, whatever it is."""
    settings.PACS_ACCESS_POLICY = "archive.access.AuthenticatedPolicy"
    access.policy.cache_clear()
    yield
    access.policy.cache_clear()


@pytest.fixture
def signed_in(reader: User) -> Client:
    client = Client()
    client.force_login(reader)
    return client


@pytest.fixture
def hidden_everything(settings: Any) -> Any:
    settings.PACS_ACCESS_POLICY = f"{__name__}.NothingPolicy"
    access.policy.cache_clear()
    yield
    access.policy.cache_clear()


def viewer_url(uid: str) -> str:
    return f"/viewer/studies/{uid}"


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/viewer/", viewer_url("1.2.3.4")])
def test_it_sends_anonymous_visitors_to_sign_in(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "uid",
    ["abc", "1.2.3.", "1..2", ".1.2", "1.2.3a", "1" * 65, "1.2.3<script>", "1.2.3%20"],
)
def test_it_rejects_a_malformed_study_uid_with_400(signed_in: Client, uid: str) -> None:
    response = signed_in.get(viewer_url(uid))
    assert response.status_code == 400
    assert b"not a valid Study Instance UID" in response.content
    assert b"<script>" not in response.content


@pytest.mark.django_db
def test_it_answers_404_for_a_study_that_does_not_exist(signed_in: Client) -> None:
    assert signed_in.get(viewer_url("1.2.3.4.5.6")).status_code == 404


@pytest.mark.django_db
def test_it_answers_404_for_a_study_the_access_policy_hides(
    signed_in: Client, ct_study: dict[str, Any], hidden_everything: Any
) -> None:
    response = signed_in.get(viewer_url(ct_study["spec"].study_uid))
    assert response.status_code == 404
    assert ct_study["spec"].study_uid.encode() not in response.content


@pytest.mark.django_db
def test_it_serves_the_viewer_shell_for_a_visible_study(signed_in: Client, ct_study: dict[str, Any]) -> None:
    uid = ct_study["spec"].study_uid
    response = signed_in.get(viewer_url(uid))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-study="{uid}"' in html
    assert 'data-dicomweb="/dicom-web"' in html
    assert '<script type="module" src="/viewer/viewer.js"></script>' in html
    # The page is a shell: patient data only ever arrives over DICOMweb.
    assert "DOE" not in html and "PAT-1" not in html


@pytest.mark.django_db
def test_it_records_opening_a_study_in_the_audit_trail(signed_in: Client, ct_study: dict[str, Any]) -> None:
    uid = ct_study["spec"].study_uid
    signed_in.get(viewer_url(uid))
    event = AuditEvent.objects.filter(action="viewer.open").get()
    assert (event.actor, event.study_instance_uid, event.patient_id) == ("reader", uid, "PAT-1")


@pytest.mark.django_db
def test_it_does_not_audit_a_refused_request(signed_in: Client) -> None:
    signed_in.get(viewer_url("1.2.3.4.5.6"))
    signed_in.get(viewer_url("not-a-uid"))
    assert not AuditEvent.objects.filter(action="viewer.open").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["search", "viewer"])
def test_its_pages_have_no_inline_script_or_style_and_carry_the_csp(
    signed_in: Client, ct_study: dict[str, Any], page: str
) -> None:
    url = "/viewer/" if page == "search" else viewer_url(ct_study["spec"].study_uid)
    response = signed_in.get(url)
    html = response.content.decode()
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert all(not body.strip() for body in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S))
    assert "<style" not in html
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "external resource"


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["search", "viewer"])
def test_every_file_its_pages_reference_exists(signed_in: Client, ct_study: dict[str, Any], page: str) -> None:
    url = "/viewer/" if page == "search" else viewer_url(ct_study["spec"].study_uid)
    html = signed_in.get(url).content.decode()
    paths = re.findall(r"(?:src|href)=\"/static/([^\"]+)\"", html)
    for path in paths:
        assert finders.find(path), path
    scripts = re.findall(r"<script[^>]* src=\"([^\"]+)\"", html)
    assert scripts
    for src in scripts:
        if not src.startswith("/static/"):
            assert signed_in.get(src).status_code == 200, src


def test_every_module_the_viewer_imports_is_preloaded_or_exists() -> None:
    """A typo in an import path would only show up in the browser; catch it here."""
    entry = ["viewer/viewer.js", "viewer/search.js"]
    seen: set[str] = set()
    while entry:
        path = entry.pop()
        if path in seen:
            continue
        seen.add(path)
        found = finders.find(path)
        assert found, path
        source = open(found, encoding="utf-8").read()
        for name in re.findall(r"from\s+'(\.{1,2}/[a-z0-9/.]+\.js)'", source):
            entry.append(posixpath.normpath(posixpath.join(posixpath.dirname(path), name)))
    assert {"viewer/dicomweb.js", "viewer/pixels.js", "viewer/loader.js", "viewer/tools/pan.js"} <= seen
    assert all(path.startswith("viewer/") for path in seen)


@pytest.mark.django_db
def test_a_patient_name_with_markup_never_reaches_the_html(signed_in: Client, upload_client: Client) -> None:
    spec = StudySpec(patient_name=PAYLOAD, patient_id="XSS-1")
    assert stow(upload_client, make_series(spec, "CT", count=1)).status_code == 200
    for url in ("/viewer/", viewer_url(spec.study_uid)):
        html = signed_in.get(url).content.decode()
        assert "<script>alert" not in html and "onerror" not in html


def preloads(client: Client, uid: str) -> list[str]:
    html = client.get(viewer_url(uid)).content.decode()
    return re.findall(r'<link rel="preload" as="fetch" crossorigin="anonymous" href="([^"]+)">', html)


@pytest.mark.django_db
def test_the_viewer_page_preloads_its_first_dicomweb_requests(signed_in: Client, upload_client: Client) -> None:
    spec = StudySpec(patient_id="PRE-1")
    axial = make_series(spec, "CT", count=3, size=32)
    scout = make_series(spec, "CT", count=5, size=32, series_description="SCOUT")
    assert stow(upload_client, axial + scout).status_code == 200
    series_uid = Study.objects.get(study_instance_uid=spec.study_uid).series.get(series_description="AXIAL")
    study_path = f"/dicom-web/studies/{spec.study_uid}"
    series_path = f"{study_path}/series/{series_uid.series_instance_uid}"
    search, metadata, rendered, frame = preloads(signed_in, spec.study_uid)
    assert search == (
        f"{study_path}/series?includefield=SeriesDescription&amp;includefield=SeriesNumber&amp;includefield=Modality"
        "&amp;includefield=NumberOfSeriesRelatedInstances&amp;includefield=BodyPartExamined"
    )
    # The hanging protocol puts the axial series first although the scout has more images.
    assert metadata == f"{series_path}/metadata"
    assert rendered.startswith(f"{series_path}/instances/") and rendered.endswith("/rendered?viewport=32,32")
    assert frame.startswith(f"{series_path}/instances/") and frame.endswith("/frames/1")


@pytest.mark.django_db
def test_the_preloaded_frame_is_the_highest_slice_along_the_normal(signed_in: Client, upload_client: Client) -> None:
    spec = StudySpec(patient_id="PRE-2")
    series_uid = "1.2.826.0.1.3680043.8.498.91"
    # Instance 2 lies highest (z = +40 mm): the viewer's stack starts there, not at instance 1.
    heights = {1: 0.0, 2: 40.0, 3: 20.0}
    parts = [
        make_instance(
            spec,
            "CT",
            series_uid=series_uid,
            instance_number=n,
            size=32,
            sop_uid=f"1.2.826.0.1.3680043.8.498.91.{n}",
            extra={"ImagePositionPatient": [0.0, 0.0, z]},
        )
        for n, z in heights.items()
    ]
    assert stow(upload_client, parts).status_code == 200
    frame = preloads(signed_in, spec.study_uid)[-1]
    assert frame.endswith("/instances/1.2.826.0.1.3680043.8.498.91.2/frames/1")


@pytest.mark.django_db
def test_a_study_without_images_preloads_only_the_series_search(signed_in: Client, upload_client: Client) -> None:
    spec = StudySpec(patient_id="PRE-3")
    assert stow(upload_client, make_series(spec, "CT", count=1, size=16)).status_code == 200
    Study.objects.get(study_instance_uid=spec.study_uid).series.update(modality="SR")
    assert [url.split("?")[0] for url in preloads(signed_in, spec.study_uid)] == [
        f"/dicom-web/studies/{spec.study_uid}/series"
    ]


@pytest.mark.django_db
def test_the_viewer_script_is_the_current_modules_joined_and_revalidates(signed_in: Client) -> None:
    response = signed_in.get("/viewer/viewer.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert response.content.decode() == bundle()
    again = signed_in.get("/viewer/viewer.js", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304 and again["ETag"] == response["ETag"]


@pytest.mark.django_db
def test_the_viewer_script_needs_a_signed_in_user(client: Client) -> None:
    assert client.get("/viewer/viewer.js").status_code == 302


def test_the_bundle_keeps_every_module_in_its_own_scope_in_dependency_order() -> None:
    text = bundle()
    order = re.findall(r"^const __([a-z0-9$]+) = \(\(\) => \{$", text, re.MULTILINE)
    assert order[-1] == "viewer" and order.index("dicomjson") < order.index("pixels") < order.index("viewport$viewport")
    assert order.index("tools$annotate") < order.index("tools$pointer") < order.index("app")
    assert len(order) == len(set(order))
    assert not re.search(r"^\s*(import|export)\b", text, re.MULTILINE)
    assert "  const { TAG, formatDate, personName, str } = __dicomjson;" in text  # from viewport/overlays.js


def test_the_bundler_refuses_an_import_form_it_does_not_know(tmp_path: Any) -> None:
    (tmp_path / "viewer.js").write_text("import * as all from './other.js';\n", encoding="utf-8")
    with pytest.raises(BundleError):
        bundle(tmp_path)


def write_modules(root: Path, modules: dict[str, str]) -> None:
    for name, source in modules.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")


def test_the_bundler_follows_imports_into_subfolders_and_back_up(tmp_path: Path) -> None:
    write_modules(
        tmp_path,
        {
            "viewer.js": "import { pan } from './tools/pan.js';\nconsole.log(pan());\n",
            "tools/pan.js": "import { add } from '../geometry.js';\nimport { step } from './step.js';\n"
            "export function pan() { return add(step, 1); }\n",
            "tools/step.js": "export const step = 2;\n",
            "geometry.js": "export const add = (a, b) => a + b;\n",
        },
    )
    text = bundle(tmp_path)
    order = re.findall(r"^const (__[\w$]+) = \(\(\) => \{$", text, re.MULTILINE)
    assert order == ["__geometry", "__tools$step", "__tools$pan", "__viewer"]
    assert "  const { add } = __geometry;\n  const { step } = __tools$step;" in text
    assert "  const { pan } = __tools$pan;" in text
    assert "// ---- tools/pan.js" in text


def test_the_bundler_keeps_modules_of_the_same_name_in_different_folders_apart(tmp_path: Path) -> None:
    write_modules(
        tmp_path,
        {
            "viewer.js": "import { a } from './cine.js';\nimport { b } from './services/cine.js';\n",
            "cine.js": "export const a = 1;\n",
            "services/cine.js": "import { a } from '../cine.js';\nexport const b = a + 1;\n",
        },
    )
    order = re.findall(r"^const (__[\w$]+) = ", bundle(tmp_path), re.MULTILINE)
    assert order == ["__cine", "__services$cine", "__viewer"]


@pytest.mark.parametrize(
    "line",
    [
        "import { x } from '../outside.js';",  # above static/viewer
        "import { x } from './tools/../../outside.js';",
        "import { x } from 'lodash';",  # a bare specifier
        "import { x } from '/static/viewer/x.js';",
        "import { x } from './Tools/Pan.js';",
    ],
)
def test_the_bundler_refuses_an_import_path_it_cannot_follow(tmp_path: Path, line: str) -> None:
    write_modules(tmp_path, {"viewer.js": line + "\n"})
    with pytest.raises(BundleError):
        bundle(tmp_path)
