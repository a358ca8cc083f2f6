"""The Celery application. Configuration comes from Django settings (``CELERY_*``); the beat
schedule is defined once, in portal/schedule.py, and used both by Celery beat and by the
in-process runner of the embedded default (portal/periodic.py)."""

from __future__ import annotations

import os

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _install_beat_schedule(sender: Celery, **_kwargs: object) -> None:
    from portal.schedule import celery_beat_schedule

    sender.conf.beat_schedule = celery_beat_schedule()


@worker_ready.connect
def _tune_collector(**_kwargs: object) -> None:
    from portal.collector import collector_tune

    collector_tune()  # the worker's code is loaded: see portal/collector.py


@task_prerun.connect
@task_postrun.connect
def _database_connections_checked(sender: Task | None = None, **_kwargs: object) -> None:
    """Around each task, what Django does around each request: drop a connection that is
    too old (CONN_MAX_AGE) or broken (errors, a PostgreSQL restart: with health checks the
    next query pings first), keep the others. Celery's own fix-up would close them all
    (settings.CELERY_DB_REUSE_MAX). Not for eager tasks: they run inside the caller's
    request or transaction, on its connection."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
