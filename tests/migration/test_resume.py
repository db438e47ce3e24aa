"""A migration killed mid-way (SIGKILL of the command's process) resumes to complete, with nothing sent twice.

The command runs in a process of its own against the test database and
storage; our node keeps running in the test process and Orthanc keeps its
state. The resumed run takes over the lease of the dead process at once.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from archive.dimse.listener import DicomListener
from archive.models import DicomDevice, Instance
from audit.models import AuditEvent
from migration import report
from migration.models import Job, JobState, LedgerInstance, State
from tests.archive.dimse.conftest import wait_idle
from tests.migration.conftest import PLAN, Orthanc, load
from tests.migration.test_import_legacy import data_set, store_records, stored

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the test database, for a process of its own."""
    config: dict[str, Any] = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    auth = f"{config['USER']}:{config['PASSWORD']}@" if config.get("USER") else ""
    return f"postgres://{auth}{config.get('HOST') or 'localhost'}:{config.get('PORT') or 5432}/{config['NAME']}"


def test_a_run_killed_mid_way_resumes_to_complete_without_fetching_anything_twice(
    orthanc: Orthanc, node: DicomListener, legacy_device: DicomDevice, tmp_path: Path
) -> None:
    layout = load(orthanc, PLAN)
    expected = layout.uids()
    args = ["--aet", "LEGACY", "--host", "127.0.0.1", "--port", str(orthanc.port), "--from", "2024-01-10"]
    args += ["--to", "2024-01-15"]
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "PACS_STORAGE_DIR": str(settings.PACS_STORAGE_DIR),
        "PACS_FSYNC": "false",
    }
    log = tmp_path / "import_legacy.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "import_legacy", *args, "--rate", "40"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while LedgerInstance.objects.filter(state=State.COMPLETE).count() < 60:
        assert process.poll() is None, log.read_text()
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the migration did not get going: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    wait_idle(node)
    time.sleep(0.5)  # a move Orthanc was still running has ended
    wait_idle(node)

    job = Job.objects.get()
    assert job.state == JobState.RUNNING  # as the killed process left it: no chance to say otherwise
    done = LedgerInstance.objects.filter(state=State.COMPLETE).count()
    assert 60 <= done < len(expected)
    assert not AuditEvent.objects.filter(action="migration_stop").exists()
    with pytest.raises(CommandError, match="with --resume"):
        call_command("import_legacy", *args, stdout=io.StringIO(), stderr=io.StringIO())

    call_command("import_legacy", *args, "--resume", stdout=io.StringIO(), stderr=io.StringIO())

    job.refresh_from_db()
    assert job.state == JobState.COMPLETE
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == expected
    for uid in expected:
        assert data_set(stored(uid)) == data_set(orthanc.uploaded[uid])
    assert set(store_records(expected).values()) == {1}  # no instance was sent twice
    built = report.build(job)
    assert built.proven and built.instances_identical == len(expected) == 260
    assert built.duplicate_groups == []
    assert job.received_instances == 260  # each counted once, across both runs
    assert AuditEvent.objects.filter(action="migration_start").count() == 2
