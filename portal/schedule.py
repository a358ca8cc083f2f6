"""The periodic work of the portal, in one place.

Each entry names a Celery task and its interval. Every entry expires before its next run, so
a backlog (a worker that was down) never piles up duplicate runs. Later features add their
entries to ``PERIODIC``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class PeriodicTask:
    task: str
    every: timedelta

    @property
    def expires(self) -> float:
        # Expire a little before the next run is due.
        return max(0.5, self.every.total_seconds() * 0.9)


PERIODIC: dict[str, PeriodicTask] = {
    "invitations-purge-expired": PeriodicTask(
        "portal.tasks.invitations_purge_expired", timedelta(hours=6)
    ),
    # Hourly, acting only on days 1-3 of a month: an outage on the 1st still gets invoiced.
    "billing-invoices-issue": PeriodicTask(
        "billing.tasks.billing_invoices_issue_last_month", timedelta(hours=1)
    ),
    # Live load management: every tree at least every 10 s (leases renewed), organizations
    # marked due by events every second on the embedded default, old samples purged.
    "loadmgmt-cycle": PeriodicTask(
        "loadmgmt.tasks.loadmgmt_cycle",
        timedelta(seconds=float(os.environ.get("LOADMGMT_CYCLE_SECONDS", "10"))),
    ),
    "loadmgmt-due": PeriodicTask("loadmgmt.tasks.loadmgmt_due", timedelta(seconds=1)),
    "loadmgmt-purge": PeriodicTask("loadmgmt.tasks.loadmgmt_purge", timedelta(hours=6)),
    "stations-mark-offline": PeriodicTask(
        "stations.tasks.stations_mark_offline", timedelta(seconds=30)
    ),
}


def celery_beat_schedule() -> dict[str, dict[str, Any]]:
    return {
        name: {"task": entry.task, "schedule": entry.every, "options": {"expires": entry.expires}}
        for name, entry in PERIODIC.items()
    }


#: Entries run more often than this are not logged at INFO each time they run: Celery logs
#: every task's receipt and success (the worker) and every sending (beat), and
#: ``loadmgmt-due`` alone would write three lines a second, 259,200 a day, the 10 s cycle
#: and the 30 s offline check 34,560 more (the demo's console scrolled with nothing else).
#: Failures, and what the tasks log themselves (a recompute that changed a setpoint), are
#: still logged.
QUIET_BELOW = timedelta(minutes=1)


class FrequentTaskFilter(logging.Filter):
    """On ``celery.app.trace``, ``celery.worker.strategy`` and ``celery.beat``: drops the
    INFO records "Task ... received", "Task ... succeeded" and "Sending due task" of the
    frequent periodic tasks. Celery passes the task's name in the record's ``data`` (the
    worker) or as the message's second argument (beat)."""

    def __init__(self) -> None:
        super().__init__()
        self.quiet = {entry.task for entry in PERIODIC.values() if entry.every < QUIET_BELOW}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            return data.get("name") not in self.quiet
        if isinstance(record.args, tuple) and len(record.args) == 2:  # beat's sending
            return record.args[1] not in self.quiet
        return True
