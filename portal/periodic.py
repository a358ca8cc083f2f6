"""Runs the beat schedule inside the ASGI process when there is no broker (embedded default).

One daemon thread per process; each entry runs at its interval, errors are logged and the loop
goes on. With ``REDIS_URL`` set, Celery beat does this instead and this runner stays off.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from portal.schedule import PERIODIC

log = logging.getLogger(__name__)
_started = threading.Event()


def _run_forever(stop: threading.Event) -> None:
    from portal.celery import app

    next_due = {name: time.monotonic() + 5 for name in PERIODIC}
    while not stop.wait(1.0):
        now = time.monotonic()
        for name, entry in PERIODIC.items():
            if now < next_due[name]:
                continue
            next_due[name] = now + entry.every.total_seconds()
            try:
                app.tasks[entry.task].apply()
            except Exception:  # keep the loop alive; a failing task must not stop the others
                log.exception("periodic task %s failed", name)
            finally:
                close_old_connections()


def start_in_process_beat() -> threading.Event | None:
    """Start the runner once per process; returns the stop event (None if already running)."""
    if _started.is_set():
        return None
    _started.set()
    stop = threading.Event()
    threading.Thread(target=_run_forever, args=(stop,), name="periodic", daemon=True).start()
    log.info("periodic work runs in-process (no REDIS_URL)")
    return stop
