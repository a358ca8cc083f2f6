"""Periodic work of the stations app (entries in portal/schedule.py)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from stations import commands, conf
from stations.events import OFFLINE, station_event_emit
from stations.live import station_event
from stations.models import Station


def mark_offline(now=None) -> list[int]:
    """Stations silent for two heartbeat intervals plus a grace → offline (conditional
    update: a message that arrived meanwhile wins). Pushes ``station.offline`` per station."""
    now = now or timezone.now()
    grace = conf.offline_grace()
    stale = []
    for pk, last_seen, interval in Station.objects.filter(online=True).values_list(
        "pk", "last_seen", "heartbeat_interval"
    ):
        if last_seen is None or last_seen < now - timedelta(seconds=2 * interval + grace):
            updated = Station.objects.filter(pk=pk, online=True, last_seen=last_seen).update(
                online=False
            )
            if updated:
                stale.append(pk)
                station_event_emit(OFFLINE, pk, data={"reason": "silent"})
    for station in Station.objects.filter(pk__in=stale).select_related("organization"):
        station_event(station, "station.offline", data={"reason": "silent"})
    return stale


@shared_task
def stations_mark_offline() -> int:
    marked = mark_offline()
    now = timezone.now()
    commands.commands_expire_unclaimed(now, conf.command_unclaimed_after())
    commands.commands_expire_lost(now, conf.command_lost_after())
    return len(marked)
