"""Runs the beat schedule inside the ASGI process when there is no broker (embedded default).

One daemon thread per process; each entry runs at its interval, errors are logged and the loop
goes on. With ``REDIS_URL`` set, Celery beat does this instead and this runner stays off.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from portal.schedule import PERIODIC, PeriodicTask

log = logging.getLogger(__name__)
_started = threading.Event()
STARTUP_DELAY_S = 5.0


def run_due(
    next_due: dict[str, float], now: float, entries: dict[str, PeriodicTask] | None = None
) -> list[str]:
    """Run every entry whose time has come; returns the names of those that succeeded.
    ``next_due`` is updated (a failed run waits for its next interval too)."""
    from portal.celery import app

    # Celery discovers the apps' tasks modules lazily (a worker imports them at start);
    # this runner is no worker, so import them here. Cheap after the first time.
    app.loader.import_default_modules()
    ran = []
    for name, entry in (PERIODIC if entries is None else entries).items():
        if now < next_due.setdefault(name, now + STARTUP_DELAY_S):
            continue
        next_due[name] = now + entry.every.total_seconds()
        try:
            app.tasks[entry.task].apply(throw=True)
        except Exception:  # keep the loop alive; a failing task must not stop the others
            log.exception("periodic task %s failed", name)
            continue
        finally:
            close_old_connections()
        ran.append(name)
    return ran


def _run_forever(stop: threading.Event) -> None:
    next_due: dict[str, float] = {}
    while not stop.wait(1.0):
        run_due(next_due, time.monotonic())


def start_in_process_beat() -> threading.Event | None:
    """Start the runner once per process; returns the stop event (None if already running)."""
    if _started.is_set():
        return None
    _started.set()
    stop = threading.Event()
    threading.Thread(target=_run_forever, args=(stop,), name="periodic", daemon=True).start()
    log.info("periodic work runs in-process (no REDIS_URL)")
    return stop
