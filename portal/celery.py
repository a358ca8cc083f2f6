"""The Celery application. Configuration comes from Django settings (``CELERY_*``); the beat
schedule is defined once, in portal/schedule.py, and used both by Celery beat and by the
in-process runner of the embedded default (portal/periodic.py)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_ready

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
