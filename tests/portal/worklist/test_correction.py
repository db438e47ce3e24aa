"""The correction form over HTTP, and the earlier versions in Django admin.

Studies are stored over STOW-RS; a technologist of their site corrects them
from the QC list; administrators list and download the earlier versions.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

import pydicom
import pytest
from django.contrib.auth.models import User
from django.test import Client

from archive.dicom.synthetic import StudySpec, make_series
from archive.ingest.trash import trash_study
from archive.models import Instance, InstanceVersion, Series, Site, Study
from audit.models import AuditEvent
from portal.accounts.roles import Role
from portal.worklist.models import WorklistItem
from tests.conftest import role_user, stow
from tests.mfa_support import force_verified_login
from tests.portal.worklist.conftest import signed_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def row(upload_client: Client, settings: Any) -> WorklistItem:
    settings.PACS_WORKLIST_AUTO_READY = False  # arrived: on the QC list
    spec = StudySpec(patient_name="WRONG^WANDA", patient_id="PAT-W", accession="ACC-W", description="CT HEAD")
    assert stow(upload_client, make_series(spec, "CT", count=2, size=16)).status_code == 200
    return WorklistItem.objects.get(study_instance_uid=spec.study_uid)


@pytest.fixture
def tech_client(general_site: Site) -> Client:
    return signed_in(role_user("tech", Role.TECHNOLOGIST, general_site))


def form_data(client: Client, pk: int, **changes: str) -> dict[str, str]:
    """The form's current values with ``changes``."""
    page = client.get(f"/worklist/qc/{pk}/correct").content.decode()
    values = dict(re.findall(r'<input type="text" name="(\w+)" value="([^"]*)"', page))
    return {**values, **changes}


def test_a_technologist_corrects_a_study_from_the_qc_list(tech_client: Client, row: WorklistItem) -> None:
    qc = tech_client.get("/worklist/qc/").content.decode()
    assert f'href="/worklist/qc/{row.pk}/correct"' in qc
    page = tech_client.get(f"/worklist/qc/{row.pk}/correct")
    assert page.status_code == 200 and b'value="PAT-W"' in page.content
    data = form_data(tech_client, row.pk, PatientID="PAT-R", PatientName="RIGHT^RITA", reason="wrong patient")
    done = tech_client.post(f"/worklist/qc/{row.pk}/correct", data)
    assert done.status_code == 303 and done["Location"] == f"/worklist/qc/{row.pk}/correct?done"
    assert b'id="correction-done"' in tech_client.get(done["Location"]).content
    row.refresh_from_db()
    assert (row.patient_id, row.patient_name) == ("PAT-R", "RIGHT^RITA")
    event = AuditEvent.objects.get(action="correct", outcome="success")
    assert event.actor == "tech" and event.detail["changes"] == {
        "Patient ID": {"from": "PAT-W", "to": "PAT-R"},
        "Patient's Name": {"from": "WRONG^WANDA", "to": "RIGHT^RITA"},
    }
    assert InstanceVersion.objects.count() == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"PatientID": "P" * 65}, b"at most 64 characters"),
        ({"PatientBirthDate": "20241301"}, b"not a date in the calendar"),
        ({"PatientSex": "X"}, b"M, F or O"),
        ({"StudyDescription": "fine", "reason": ""}, b"This field is required."),
    ],
)
def test_invalid_values_come_back_as_form_errors_and_nothing_is_written(
    tech_client: Client, row: WorklistItem, changes: dict[str, str], message: bytes
) -> None:
    before = list(Instance.objects.values_list("sha256", flat=True))
    response = tech_client.post(
        f"/worklist/qc/{row.pk}/correct", form_data(tech_client, row.pk, **{"reason": "r", **changes})
    )
    assert response.status_code == 400 and message in response.content
    assert list(Instance.objects.values_list("sha256", flat=True)) == before
    assert not InstanceVersion.objects.exists()


def test_hostile_values_are_shown_as_text(tech_client: Client, row: WorklistItem) -> None:
    hostile = '"><script>alert(1)</script>'
    data = form_data(tech_client, row.pk, StudyDescription=hostile, reason="<b>why</b>")
    assert tech_client.post(f"/worklist/qc/{row.pk}/correct", data).status_code == 303
    page = tech_client.get(f"/worklist/qc/{row.pk}/correct").content.decode()
    assert "<script>alert" not in page and "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in tech_client.get("/worklist/qc/").content.decode()


def test_another_sites_user_gets_404_and_a_radiologist_403(
    row: WorklistItem, other_site: Site, rad_client: Client
) -> None:
    outsider = signed_in(role_user("far-tech", Role.TECHNOLOGIST, other_site))
    assert outsider.get(f"/worklist/qc/{row.pk}/correct").status_code == 404
    assert outsider.post(f"/worklist/qc/{row.pk}/correct", {"PatientID": "X", "reason": "r"}).status_code == 404
    assert rad_client.get(f"/worklist/qc/{row.pk}/correct").status_code == 403
    assert not InstanceVersion.objects.exists()


def test_a_study_in_the_trash_is_refused(tech_client: Client, row: WorklistItem) -> None:
    data = form_data(tech_client, row.pk, PatientID="PAT-R", reason="fix")
    trash_study(Study.objects.get(pk=row.study_id), actor="admin")
    response = tech_client.post(f"/worklist/qc/{row.pk}/correct", data)
    assert response.status_code in (404, 409)
    assert not InstanceVersion.objects.exists()


def test_administrators_list_and_download_earlier_versions_others_may_not(
    tech_client: Client, row: WorklistItem, admin_user: User, general_site: Site
) -> None:
    originals = {i.sop_instance_uid: i.sha256 for i in Instance.objects.all()}
    tech_client.post(f"/worklist/qc/{row.pk}/correct", form_data(tech_client, row.pk, PatientID="PAT-R", reason="fix"))
    version = InstanceVersion.objects.order_by("pk")[0]
    admin = Client()
    force_verified_login(admin, admin_user)
    listing = admin.get("/admin/archive/instanceversion/")
    assert listing.status_code == 200 and version.sop_instance_uid.encode() in listing.content
    download = admin.get(f"/admin/archive/instanceversion/{version.pk}/download")
    assert download.status_code == 200 and download["Content-Type"] == "application/dicom"
    data = b"".join(download.streaming_content)  # type: ignore[attr-defined]
    assert hashlib.sha256(data).hexdigest() == originals[version.sop_instance_uid] == version.sha256
    assert pydicom.dcmread(io.BytesIO(data)).PatientID == "PAT-W"
    event = AuditEvent.objects.filter(action="version_retrieve").latest("pk")
    assert event.outcome == "success" and event.detail["version"] == 1

    technologist = User.objects.get(username="tech")
    technologist.is_staff = True  # even with the admin site open to them
    technologist.save()
    tech_admin = Client()
    force_verified_login(tech_admin, technologist)
    assert tech_admin.get(f"/admin/archive/instanceversion/{version.pk}/download").status_code in (302, 403, 404)
    assert tech_admin.get("/admin/archive/instanceversion/").status_code in (302, 403)


def test_a_technologist_splits_a_series_off_from_the_correction_page(
    tech_client: Client, row: WorklistItem, upload_client: Client
) -> None:
    study = Study.objects.get(pk=row.study_id)
    extra = make_series(
        StudySpec(study_uid=study.study_instance_uid, patient_id="PAT-W", patient_name="WRONG^WANDA"), "MR", count=1
    )
    assert stow(upload_client, extra).status_code == 200
    page = tech_client.get(f"/worklist/qc/{row.pk}/correct").content.decode()
    series = re.findall(r'name="series" value="([0-9.]+)"', page)
    assert len(series) == 2
    mr = Series.objects.get(study=study, modality="MR").series_instance_uid
    assert tech_client.post(f"/worklist/qc/{row.pk}/split", {"series": series, "reason": "r"}).status_code == 400
    done = tech_client.post(f"/worklist/qc/{row.pk}/split", {"series": [mr], "reason": "two exams"})
    assert done.status_code == 303
    assert Study.objects.count() == 2 and WorklistItem.objects.count() == 2


def test_a_merge_needs_a_target_the_user_may_see(
    tech_client: Client, row: WorklistItem, upload_client: Client, other_site: Site, outsider_client: Client
) -> None:
    elsewhere = StudySpec(patient_id="PAT-ELSE")
    assert stow(outsider_client, make_series(elsewhere, "CT", count=1, size=16)).status_code == 200
    hidden = tech_client.post(f"/worklist/qc/{row.pk}/merge", {"target": elsewhere.study_uid, "reason": "r"})
    assert hidden.status_code == 400 and b"no study you may see" in hidden.content
    target = StudySpec(patient_id="PAT-R", patient_name="RIGHT^RITA")
    assert stow(upload_client, make_series(target, "CT", count=1, size=16)).status_code == 200
    done = tech_client.post(f"/worklist/qc/{row.pk}/merge", {"target": target.study_uid, "reason": "sent twice"})
    assert done.status_code == 303 and done["Location"] == "/worklist/qc/?merged"
    assert not Study.objects.filter(pk=row.study_id).exists()
    assert Study.objects.get(study_instance_uid=target.study_uid).number_of_instances == 3
    outsider = signed_in(role_user("far-tech", Role.TECHNOLOGIST, other_site))
    assert outsider.post(f"/worklist/qc/{row.pk}/split", {"series": ["1.2"], "reason": "r"}).status_code == 404


def test_opening_the_correction_page_is_an_audited_access(tech_client: Client, row: WorklistItem) -> None:
    assert tech_client.get(f"/worklist/qc/{row.pk}/correct").status_code == 200
    (event,) = AuditEvent.objects.filter(action="worklist_view", study_instance_uid=row.study_instance_uid)
    assert (event.outcome, event.actor, event.patient_id) == ("success", "tech", "PAT-W")


@pytest.mark.parametrize("target", ["1.2.3\x00", "not a uid", "1." + "2" * 80])
def test_a_merge_target_that_is_not_a_uid_is_a_400_on_every_database(
    tech_client: Client, row: WorklistItem, target: str
) -> None:
    refused = tech_client.post(f"/worklist/qc/{row.pk}/merge", {"target": target, "reason": "sent twice"})
    assert refused.status_code == 400 and b"no study you may see" in refused.content
    assert Study.objects.filter(pk=row.study_id).exists() and not InstanceVersion.objects.exists()


def test_a_nul_in_a_split_or_merge_reason_is_a_400_and_nothing_is_written(
    tech_client: Client, row: WorklistItem, upload_client: Client
) -> None:
    study = Study.objects.get(pk=row.study_id)
    extra = make_series(
        StudySpec(study_uid=study.study_instance_uid, patient_id="PAT-W", patient_name="WRONG^WANDA"), "MR", count=1
    )
    assert stow(upload_client, extra).status_code == 200
    mr = Series.objects.get(study=study, modality="MR").series_instance_uid
    target = StudySpec(patient_id="PAT-R", patient_name="RIGHT^RITA")
    assert stow(upload_client, make_series(target, "CT", count=1, size=16)).status_code == 200
    split = tech_client.post(f"/worklist/qc/{row.pk}/split", {"series": [mr], "reason": "two\x00exams"})
    merge = tech_client.post(f"/worklist/qc/{row.pk}/merge", {"target": target.study_uid, "reason": "twice\x00"})
    assert (split.status_code, merge.status_code) == (400, 400)
    assert Study.objects.count() == 2 and not InstanceVersion.objects.exists()
