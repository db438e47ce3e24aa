"""The migration job as a background task (django-tasks; ``manage.py db_worker`` runs it)."""

from __future__ import annotations

from django_tasks import task

from migration import runner
from migration.lease import JobBusy
from migration.models import Job


@task()
def run_job(job_id: int, actor: str) -> str:
    """Run migration job ``job_id`` to its end (complete, stopped or failed); idempotent: a re-run resumes it."""
    job = Job.objects.select_related("device__site").get(pk=job_id)
    try:
        return runner.run(job, actor)
    except JobBusy:
        return "busy"  # already running in another worker: that run carries on
