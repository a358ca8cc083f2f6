"""Garbage-collector settings for the long-running processes (ASGI, Celery worker).

CPython's default thresholds (700, 10, 10) suit short programs. An ASGI process holding 5,000
stations keeps about 1.3 million objects, and with a young generation of 700 allocations
almost every object that lives a few milliseconds (a message being handled, a database call
in flight) is promoted to the oldest generation; every time that grew by a quarter CPython
scanned all of it. Measured in the 10,000-station fleet benchmark (docs/BENCHMARKS.md):
31-37 full collections per ASGI process in six minutes, each stopping the process for 2.1 to
3.5 s, the cause of a steady-state p99 answer time of 1.5 s.

So, once the code is loaded: everything alive is frozen (``gc.freeze``: Django, the URL
configuration and the imported libraries are never garbage, so no collection scans them
again), and the young generation holds ``GC_THRESHOLD0`` allocations (default 50,000), long
enough for a message's objects to die young. Cycles are still collected; a young collection
scans at most that many objects.
"""

from __future__ import annotations

import gc
import logging
import os
import time

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD0 = 50_000
# A full collection longer than this is logged (a process stopped that long answers nothing).
SLOW_FULL_COLLECTION_MS = 100.0


def collector_tune() -> tuple[int, int, int]:
    """Freeze what is alive now and raise the young generation's threshold; returns the
    thresholds in force. ``GC_THRESHOLD0=0`` leaves the collector as CPython sets it."""
    threshold0 = int(os.environ.get("GC_THRESHOLD0", DEFAULT_THRESHOLD0))
    if threshold0 <= 0:
        return gc.get_threshold()
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    _, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(threshold0, threshold1, threshold2)
    if full_collection_watch not in gc.callbacks:
        gc.callbacks.append(full_collection_watch)
    return gc.get_threshold()


_full_started: float | None = None


def full_collection_watch(phase: str, info: dict) -> None:
    """Logs a full (oldest-generation) collection that stopped the process for longer than
    ``SLOW_FULL_COLLECTION_MS``: the objects of thousands of connections are not frozen, and
    scanning them all stops the process. Suspected when one process's answers were all slow
    for a second in the fleet benchmark; in the two runs with this watch it logged nothing
    (docs/BENCHMARKS.md, session 17), so a line here rules the cause in or out."""
    global _full_started
    if info.get("generation") != 2:
        return
    if phase == "start":
        _full_started = time.perf_counter()
    elif phase == "stop" and _full_started is not None:
        took_ms = (time.perf_counter() - _full_started) * 1000
        _full_started = None
        if took_ms > SLOW_FULL_COLLECTION_MS:
            log.warning(
                "full garbage collection took %.0f ms (%d objects tracked, %d collected)",
                took_ms,
                len(gc.get_objects(generation=2)),
                info.get("collected", 0),
            )
