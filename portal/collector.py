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
import os

DEFAULT_THRESHOLD0 = 50_000


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
    return gc.get_threshold()
