"""Management commands: issue_token, load_demo, sweep and create_demo_admin."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from archive.demo import LoadReport, plans
from archive.dicom.synthetic import StudySpec, make_series
from archive.models import ApiToken, DicomDevice, Instance, Patient, Series, Study
from archive.storage.registry import get_storage
from audit.models import AuditEvent
from tests.conftest import stow


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def token_client(uploader: User) -> Client:
    """A client that knows only what ``issue_token`` printed, and sends no CSRF token (as real clients do)."""
    raw = run("issue_token", uploader.username, "--name", "modality-1").strip()
    assert raw.startswith("pacs_") and "\n" not in raw
    return Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.mark.django_db
def test_the_printed_token_stores_instances_with_stow_rs(token_client: Client) -> None:
    spec = StudySpec(patient_id="TOKEN-1")
    stored = stow(token_client, make_series(spec, "CT", count=2))
    assert stored.status_code == 200, stored.content
    assert Study.objects.get(study_instance_uid=spec.study_uid).number_of_instances == 2


@pytest.mark.django_db
def test_the_printed_token_searches_studies_with_qido_rs(token_client: Client) -> None:
    spec = StudySpec(patient_id="TOKEN-1")
    assert stow(token_client, make_series(spec, "CT", count=2)).status_code == 200
    found = token_client.get("/dicom-web/studies", {"PatientID": "TOKEN-1"}, HTTP_ACCEPT="application/dicom+json")
    assert found.status_code == 200, found.content
    assert [s["0020000D"]["Value"][0] for s in json.loads(found.content)] == [spec.study_uid]


@pytest.mark.django_db
def test_it_stores_only_the_hash_and_audits_the_issue(uploader: User) -> None:
    raw = run("issue_token", uploader.username, "--name", "ci", "--days", "7").strip()
    token = ApiToken.objects.get(user=uploader)
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert token.name == "ci" and token.expires_at is not None
    assert abs((token.expires_at - timezone.now()).total_seconds() - 7 * 86400) < 60
    event = AuditEvent.objects.get(action="token_issue")
    assert event.actor_id == uploader.pk and event.detail["prefix"] == token.prefix
    assert raw not in json.dumps(event.detail)


@pytest.mark.django_db
def test_it_refuses_a_token_that_is_not_the_one_printed(uploader: User) -> None:
    raw = run("issue_token", uploader.username).strip()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw[:-1]}x")
    assert client.get("/dicom-web/studies").status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [(["nobody"], "no user named"), (["modality", "--days", "0"], "--days must be a positive")],
)
def test_it_explains_why_it_cannot_issue_a_token(uploader: User, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("issue_token", *args)
    assert not ApiToken.objects.exists()


@pytest.fixture
def demo(db: None) -> str:
    return run("load_demo")


def test_the_demo_data_set_has_what_the_readme_promises(demo: str) -> None:
    expected = LoadReport().expected_instances
    assert f"{expected} instances stored" in demo
    assert Instance.objects.count() == expected >= 200
    assert Patient.objects.count() >= 6
    assert set(Series.objects.values_list("modality", flat=True)) >= {"CT", "MR", "CR", "US"}
    viewer_series = [
        s for s in Series.objects.filter(modality="CT") if s.instances.filter(rows=512, columns=512).count() >= 50
    ]
    assert len(viewer_series) == 1
    first = viewer_series[0].instances.order_by("instance_number").first()
    assert first is not None
    with get_storage(first.tier).open(first.storage_key) as fh:
        ds = pydicom.dcmread(fh)
    assert (ds.BitsAllocated, ds.Rows, ds.Columns, ds.Modality) == (16, 512, 512, "CT")
    assert Instance.objects.filter(series__modality="US", number_of_frames__gt=1).count() >= 3
    priors = [p for p in Patient.objects.all() if len(set(p.studies.values_list("study_date", flat=True))) >= 2]
    assert len(priors) >= 2
    names = set(Patient.objects.values_list("patient_name", flat=True))
    assert {"MÜLLER^JÜRGEN", "Yamada^Taro=山田^太郎=やまだ^たろう"} <= names
    assert Study.objects.filter(study_description="CT 腹部").exists()


def test_the_demo_files_are_the_bytes_indexed(demo: str) -> None:
    for inst in Instance.objects.all():
        with get_storage(inst.tier).open(inst.storage_key) as fh:
            data = fh.read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (inst.size, inst.sha256)


def test_loading_the_demo_twice_changes_nothing(demo: str) -> None:
    before = sorted(Instance.objects.values_list("sop_instance_uid", "sha256", "storage_key"))
    again = run("load_demo")
    assert "already loaded" in again
    assert sorted(Instance.objects.values_list("sop_instance_uid", "sha256", "storage_key")) == before
    assert Study.objects.count() == len(plans())


def test_loading_the_demo_completes_a_half_loaded_series(demo: str) -> None:
    series = Series.objects.get(series_description="AXIAL 512 2.5MM")
    victims = list(series.instances.order_by("-instance_number")[:10])
    for inst in victims:
        inst.delete()
    Series.objects.filter(pk=series.pk).update(number_of_instances=50)
    out = run("load_demo")
    assert "10 instances stored" in out
    assert series.instances.count() == 60
    assert set(series.instances.values_list("sha256", flat=True)) >= {v.sha256 for v in victims}


@pytest.mark.django_db
def test_sweep_removes_old_orphans_and_keeps_indexed_and_fresh_objects(ct_study: dict, isolated_storage: Path) -> None:
    hot = get_storage("hot")
    kept = set(Instance.objects.values_list("storage_key", flat=True))
    old_orphan = isolated_storage / "hot" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.0123456789abcdef.dcm"
    fresh_orphan = old_orphan.with_name("1.2.3.4.6.0123456789abcdef.dcm")
    stale_part = hot.staging_dir / "upload.part"
    for path in (old_orphan, fresh_orphan, stale_part):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    for path in (old_orphan, stale_part, *(hot.path(k) for k in kept)):
        os.utime(path, (two_hours_ago, two_hours_ago))
    out = run("sweep")
    assert "removed 2" in out
    assert not old_orphan.exists() and not stale_part.exists() and fresh_orphan.exists()
    assert set(hot.keys()) == kept | {"1.2.3/1.2.3.4/1.2.3.4.6.0123456789abcdef.dcm"}


@pytest.mark.django_db
def test_sweep_refuses_a_negative_grace_period() -> None:
    with pytest.raises(CommandError, match="must not be negative"):
        run("sweep", "--grace-minutes", "-1")


@pytest.mark.django_db
def test_the_demo_admin_gets_a_private_password_that_survives_reruns(settings, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path
    first = run("create_demo_admin")
    secret_file = tmp_path / "demo-admin-password"
    password = secret_file.read_text().strip()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(password) >= 16 and password in first and "admin" in first
    user = User.objects.get(username="admin")
    user.set_password("something-else-entirely")
    user.is_active = False
    user.save()
    second = run("create_demo_admin")
    assert password in second
    user.refresh_from_db()
    assert user.is_active and user.is_superuser and user.check_password(password)
    assert user.groups.filter(name="administrator").exists()


def test_every_demo_study_belongs_to_the_demo_site(demo: str) -> None:
    from archive.models import Site, Study

    site = Site.objects.get(code="demo")
    assert Study.objects.count() == len(plans())
    assert set(Study.objects.values_list("site", flat=True)) == {site.pk}


# --- dicom_device ---


def test_dicom_device_add_list_remove_round_trip_is_audited(general_site: Any) -> None:
    out = run(
        "dicom_device", "add", "--ae", " CT1 ", "--host", "10.0.0.21/32", "--port", "104", "--site", "general",
        "--store", "--move-destination", "--description", "CT scanner",
    )  # fmt: skip
    assert out == "DICOM device CT1@10.0.0.21 added (store, move-destination)\n"
    run("dicom_device", "add", "--ae", "WS1", "--host", "10.0.0.0/24", "--site", "general", "--query", "--retrieve")
    run("dicom_device", "add", "--ae", "OLD", "--site", "general", "--disabled")
    lines = run("dicom_device", "list").splitlines()
    assert [line.split() for line in lines] == [
        ["AE", "title", "host", "port", "site", "capabilities", "enabled", "description"],
        ["CT1", "10.0.0.21", "104", "general", "store,move-destination", "yes", "CT", "scanner"],
        ["OLD", "any", "general", "-", "no"],
        ["WS1", "10.0.0.0/24", "general", "query,retrieve", "yes"],
    ]
    assert run("dicom_device", "remove", "OLD") == "DICOM device OLD removed\n"
    assert list(DicomDevice.objects.values_list("ae_title", flat=True)) == ["CT1", "WS1"]
    records = AuditEvent.objects.filter(action__startswith="admin-").order_by("pk")
    assert [(r.action, r.actor, r.detail["model"], r.detail["object"]) for r in records] == [
        ("admin-add", "manage.py dicom_device", "archive.dicomdevice", "CT1@10.0.0.21"),
        ("admin-add", "manage.py dicom_device", "archive.dicomdevice", "WS1@10.0.0.0/24"),
        ("admin-add", "manage.py dicom_device", "archive.dicomdevice", "OLD"),
        ("admin-delete", "manage.py dicom_device", "archive.dicomdevice", "OLD"),
    ]
    assert records[0].detail["change"] == "capabilities: store, move-destination"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ae", "CT1", "--site", "nowhere"], "no site with code 'nowhere'"),
        (["--ae", "BACK\\SLASH", "--site", "general"], "ae_title: An AE title is 1-16 printable ASCII characters"),
        (["--ae", "SEVENTEEN-CHARS-X", "--site", "general"], "ae_title: An AE title is 1-16 printable"),
        (["--ae", "   ", "--site", "general"], "ae_title: This field cannot be blank."),
        (["--ae", "CT9", "--site", "general", "--host", "scanner.local"], "host: Give an IP address (10.0.0.21)"),
        (["--ae", "CT9", "--site", "general", "--port", "70000"], "port: Ensure this value is less than or equal"),
        (["--ae", "TAKEN", "--site", "general"], "ae_title: DICOM device with this AE title already exists."),
    ],
)
def test_dicom_device_add_refuses_bad_input_in_one_line_and_changes_nothing(
    general_site: Any, args: list[str], message: str
) -> None:
    DicomDevice.objects.create(ae_title="TAKEN", site=general_site)
    with pytest.raises(CommandError) as caught:
        run("dicom_device", "add", *args)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert list(DicomDevice.objects.values_list("ae_title", flat=True)) == ["TAKEN"]
    assert not AuditEvent.objects.filter(action__startswith="admin-").exists()


def test_dicom_device_add_if_missing_leaves_a_registered_device_alone(general_site: Any) -> None:
    DicomDevice.objects.create(ae_title="DEMO", site=general_site, may_query=True)
    out = run("dicom_device", "add", "--ae", "DEMO", "--site", "general", "--store", "--if-missing")
    assert out == "DICOM device DEMO is already registered\n"
    assert DicomDevice.objects.get().capabilities() == ["query"]


def test_dicom_device_remove_of_an_unknown_ae_title_fails(db: Any) -> None:
    with pytest.raises(CommandError, match="^no DICOM device with AE title 'NOPE'$"):
        run("dicom_device", "remove", "NOPE")


def test_dicom_device_without_a_subcommand_fails(db: Any) -> None:
    with pytest.raises(CommandError, match="add\\|list\\|remove"):
        run("dicom_device")
