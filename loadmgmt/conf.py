"""Settings of live load management, each read once here with its default (environment or
Django settings)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


# Read once per name: these are read on every frame and database call of every station
# (getattr on Django's settings raises and catches AttributeError for an unset name, then
# reads the environment: 1.9 % of an ASGI process's CPU in a reconnect storm). A changed
# setting (tests: override_settings, pytest-django's ``settings``) forgets what was read.
@cache
def _get(name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    if value is None:
        raw = os.environ.get(name)
        if raw in (None, ""):
            return default
        value = raw
    return type(default)(value)


def cycle_seconds() -> float:
    """Every tree is recomputed at least this often (leases renewed, meters re-read)."""
    return _get("LOADMGMT_CYCLE_SECONDS", 10.0)


def lease_seconds() -> float:
    """How long a setpoint stays valid on a station that hears nothing more (validTo)."""
    return _get("LOADMGMT_LEASE_SECONDS", 60.0)


def renewal_spread_seconds() -> float:
    """Renewals of one recompute reach the stations spread over this many seconds, not all
    at once (``LOADMGMT_RENEWAL_SPREAD_SECONDS``; by default a whole cycle, so that one
    cycle's renewals end as the next cycle's begin and the processes see an even stream, at
    most a sixth of a lease: a renewal leaves with 40 % of its lease still to run, and
    arrives with at least a quarter of it)."""
    default = min(float(cycle_seconds()), float(lease_seconds()) / 6)
    return float(_get("LOADMGMT_RENEWAL_SPREAD_SECONDS", default))


def debounce_seconds() -> float:
    """Wait this long before a triggered recompute, to merge more events into it (events that
    arrive before the worker starts it are merged anyway; below 0.1 s: no wait)."""
    return _get("LOADMGMT_DEBOUNCE_SECONDS", 0.0)


def ack_wait_seconds() -> float:
    """How long a recompute waits for the decreases to be accepted before it sends the
    increases (if not all are accepted by then, the increases wait for the next cycle)."""
    return _get("LOADMGMT_ACK_WAIT_SECONDS", 5.0)


def rerun_pace_from_seconds() -> float:
    """A recompute that took longer than this (on the clock, without its wait for answers)
    and must run again at once (changes came meanwhile) first rests as long as it took, at
    most half a cycle (``tasks.rerun_rest``): an organization of hundreds or thousands of
    stations in a reconnect storm then keeps at most half of its worker thread, and the
    storm's events are merged into fewer recomputes. Smaller organizations (milliseconds per
    recompute) rerun without a pause."""
    return _get("LOADMGMT_RERUN_PACE_FROM_SECONDS", 0.1)


def rerun_gather_seconds() -> float:
    """A recompute that must run again at once (changes came meanwhile) rests at least this
    long first (``tasks.rerun_rest``), so that the events of a busy organization are
    gathered into one recompute of their trees instead of one each: a recompute of one tree
    costs mostly its fixed part (reading the configuration, about ten queries), and in a
    reconnect storm the events came faster than those recomputes ran. A single event (no
    recompute running) is not delayed."""
    return _get("LOADMGMT_RERUN_GATHER_SECONDS", 0.25)


def samples_keep_hours() -> float:
    return _get("LOADMGMT_SAMPLES_KEEP_HOURS", 48.0)


def sample_every_seconds() -> float:
    """Node load samples for the chart: at most one per node this often."""
    return _get("LOADMGMT_SAMPLE_EVERY_SECONDS", 30.0)


def live_push_seconds() -> float:
    """Browsers get the live view at most this often per organization: the first change at
    once, the newest state of a burst at the end of the interval (0: after every recompute)."""
    return _get("LOADMGMT_LIVE_PUSH_SECONDS", 1.0)


def other_load_hold_seconds() -> float:
    """Under a reference meter, the other loads (reading less the cars) count at the highest
    value of this many seconds: longer than the stations' meter-value interval, so that the
    cars' lagging values never make the other loads look smaller than they are."""
    return _get("LOADMGMT_OTHER_LOAD_HOLD_SECONDS", 15.0)


def meter_readings_rate() -> str:
    """Readings a meter may post over REST from one address (DRF rate: count/period)."""
    return _get("LOADMGMT_METER_READINGS_RATE", "1200/min")


@receiver(setting_changed)
def _setting_changed(**_kwargs: Any) -> None:
    _get.cache_clear()
