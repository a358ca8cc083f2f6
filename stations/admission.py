"""Admission control at the OCPP handshake.

After a restart every station of a fleet reconnects at once. A process that accepts them all
answers none in time: handshakes and boots queue behind each other until they outlive the
stations' timeouts, the stations give up and try again, and the work already spent on them is
lost (congestion collapse; seen at 10,000 stations on two cores, docs/BENCHMARKS.md). So a
process that is already busy refuses new handshakes with ``503 Service Unavailable`` and a
``Retry-After`` (spread over a range, so the retries do not come back as one wave), before any
database work: the stations already connected are served first, and the fleet comes back at
the rate the process can take. Busy means: more handshakes in progress than
``OCPP_ADMISSION_MAX_CONNECTING``, or more OCPP database calls waiting for a thread than
``OCPP_ADMISSION_MAX_DB_BACKLOG``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stations import conf, dbcalls


@dataclass
class Gate:
    connecting: int = 0
    refused: int = 0

    def busy(self) -> str | None:
        """Why a new handshake should wait, or None."""
        most = conf.admission_max_connecting()
        if most and self.connecting >= most:
            return "handshakes"
        backlog_most = conf.admission_max_db_backlog()
        if backlog_most and dbcalls.backlog() > backlog_most:
            return "database"
        return None

    def retry_after(self) -> int:
        low, high = conf.admission_retry_after()
        return random.randint(low, max(low, high))


#: One per process (each ASGI process decides for itself).
gate = Gate()
