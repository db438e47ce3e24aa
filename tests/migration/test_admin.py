"""Migration jobs in Django admin: created there, run on the task worker, stopped, and reported (HTML and CSV).

The task runs under the real database backend of django-tasks, by
``manage.py db_worker --batch`` (what ``make run`` starts, processing the
queue and exiting); Orthanc is the legacy PACS.
"""

from __future__ import annotations

import io
import threading
import time
from datetime import date, timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from archive.models import DicomDevice, Instance
from audit.models import AuditEvent
from migration import runner
from migration.models import Job, JobState
from tests.mfa_support import force_verified_login
from tests.migration.conftest import PLAN, Orthanc, free_port, load

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_browser(admin_user: User) -> Client:
    client = Client()
    force_verified_login(client, admin_user)
    return client


def add_job(client: Client, device: DicomDevice, port: int, **more: str) -> Job:
    form = {
        "device": str(device.pk),
        "host": "127.0.0.1",
        "port": str(port),
        "method": "move",
        "destination_ae": "",
        "date_from": "2024-01-10",
        "date_to": "2024-01-12",
        "modalities": "",
        "window_start": "",
        "window_end": "",
        "rate_limit": "",
        "max_results": "500",
        **more,
    }
    response = client.post("/admin/migration/job/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    return Job.objects.get()


def test_a_job_created_in_admin_runs_on_the_task_worker_and_its_report_is_audited(
    orthanc: Orthanc, legacy_device: DicomDevice, admin_browser: Client
) -> None:
    layout = load(orthanc, PLAN[:4])
    job = add_job(admin_browser, legacy_device, orthanc.port)
    assert job.created_by == "admin" and job.state == JobState.NEW

    response = admin_browser.post(
        "/admin/migration/job/", {"action": "start", "_selected_action": [str(job.pk)]}, follow=True
    )
    assert "1 job(s) queued" in response.content.decode()
    assert Job.objects.get().state == JobState.QUEUED
    assert DBTaskResult.objects.filter(status="READY").count() == 1
    call_command("db_worker", "--batch", stdout=io.StringIO(), stderr=io.StringIO())

    job.refresh_from_db()
    assert job.state == JobState.COMPLETE
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == layout.uids() != set()
    starts = AuditEvent.objects.filter(action="migration_start").order_by("id")
    assert [(e.actor, e.detail["step"]) for e in starts] == [("admin", "queued"), ("admin", "running")]
    assert AuditEvent.objects.get(action="migration_stop").detail["state"] == "complete"

    page = admin_browser.get(f"/admin/migration/job/{job.pk}/report/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Every one of the 212 instances the legacy PACS listed arrived" in text
    assert "<script" not in text.split("<body")[1].replace('<script src="', "")  # no inline script
    csv_response = admin_browser.get(f"/admin/migration/job/{job.pk}/report.csv")
    body = b"".join(csv_response.streaming_content).decode()  # type: ignore[attr-defined]
    assert csv_response["Content-Type"] == "text/csv; charset=utf-8"
    assert "# instances identical: 212" in body
    assert body.count("\ncomplete") == 0 and body.count(",complete,yes,") == 212
    reports = AuditEvent.objects.filter(action="migration_report").order_by("id")
    assert [(e.actor, e.detail["format"], e.detail["job"]) for e in reports] == [
        ("admin", "html", job.pk),
        ("admin", "csv", job.pk),
    ]


def test_the_report_is_for_administrators_only(legacy_device: DicomDevice, admin_browser: Client, reader: User) -> None:
    job = add_job(admin_browser, legacy_device, 104)
    client = Client()
    force_verified_login(client, reader)
    for url in (f"/admin/migration/job/{job.pk}/report/", f"/admin/migration/job/{job.pk}/report.csv"):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    assert not AuditEvent.objects.filter(action="migration_report").exists()


def test_a_stop_requested_in_admin_ends_a_run_waiting_outside_its_window(
    legacy_device: DicomDevice, admin_browser: Client
) -> None:
    later = (timezone.localtime() + timedelta(hours=3)).strftime("%H:%M")
    end = (timezone.localtime() + timedelta(hours=4)).strftime("%H:%M")
    # Nothing listens on the port: had the run asked anything of the legacy PACS, it would have failed.
    job = add_job(admin_browser, legacy_device, free_port(), window_start=later, window_end=end)
    states: list[str] = []
    thread = threading.Thread(target=lambda: states.append(runner.run(Job.objects.get(pk=job.pk), "test")))
    thread.start()
    deadline = time.monotonic() + 20
    while Job.objects.get(pk=job.pk).state != JobState.WAITING:
        assert time.monotonic() < deadline, "the run did not wait for its window"
        time.sleep(0.05)

    admin_browser.post("/admin/migration/job/", {"action": "stop", "_selected_action": [str(job.pk)]})
    thread.join(timeout=20)

    assert states == [JobState.STOPPED]
    job.refresh_from_db()
    assert job.state == JobState.STOPPED and job.last_error == "" and job.inventory_cursor is None
    stops = AuditEvent.objects.filter(action="migration_stop").order_by("id")
    assert [(e.actor, e.detail["step"], e.outcome) for e in stops] == [
        ("admin", "requested", "success"),
        ("test", "ended", "stopped"),
    ]


def test_a_rate_limit_spreads_the_requests(orthanc: Orthanc, legacy_device: DicomDevice) -> None:
    load(orthanc, [("20240110", [("CT", 10)]), ("20240111", [("CT", 10)]), ("20240112", [("CT", 10)])])
    job = Job.objects.create(
        device=legacy_device,
        host="127.0.0.1",
        port=orthanc.port,
        date_from=date(2024, 1, 10),
        date_to=date(2024, 1, 12),
        rate_limit=10,
    )
    started = time.monotonic()
    assert runner.run(job, "test") == JobState.COMPLETE
    # Three series of ten at ten per second: the third may be asked for two seconds after the first.
    assert time.monotonic() - started >= 2.0
    assert Instance.objects.count() == 30


@pytest.mark.parametrize(
    ("more", "field", "message"),
    [
        ({"date_to": "2024-01-01"}, "date_to", "before the first"),
        ({"window_start": "20:00"}, "window_end", "both ends"),
        ({"window_start": "20:00", "window_end": "20:00"}, "window_end", "is empty"),
        ({"rate_limit": "0"}, "rate_limit", "positive number"),
        ({"modalities": "CT, M*R"}, "modalities", "Not DICOM modalities: M*R"),
    ],
)
def test_the_admin_form_refuses_a_job_it_could_not_run(
    legacy_device: DicomDevice, admin_browser: Client, more: dict[str, str], field: str, message: str
) -> None:
    form = {"device": str(legacy_device.pk), "host": "127.0.0.1", "port": "104", "method": "move"}
    form |= {"date_from": "2024-01-10", "max_results": "500", **more}
    response = admin_browser.post("/admin/migration/job/add/", form)
    assert response.status_code == 200
    assert message in str(response.context["adminform"].form.errors[field])
    assert not Job.objects.exists()
