"""The periodic work of the portal, in one place.

Each entry names a Celery task and its interval. Every entry expires before its next run, so
a backlog (a worker that was down) never piles up duplicate runs. Later features add their
entries to ``PERIODIC``.
"""

from __future__ import annotations

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
