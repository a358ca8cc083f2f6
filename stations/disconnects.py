"""Closed station connections, recorded together.

When an ASGI process stops (a restart, a deploy), Uvicorn closes every connection at once and
gives the application ``--timeout-graceful-shutdown`` seconds to finish; what is still running
then is cancelled. Each connection's teardown recorded its station offline in a database call
of its own: at 1,000 connections a process, 680-750 of each process's teardowns were still
running after 5 s, were cancelled (each logging a traceback), and their stations stayed online
in the database until they reconnected (docs/BENCHMARKS.md, session 13).

Here the closes that come while others are being recorded are gathered
(``portal.batching.Batcher``): one database call (``services.connections_closed``, one
statement on PostgreSQL) records up to ``BATCH_MOST`` of them, and up to ``FLUSHES_AT_ONCE``
such calls run at once. A close on its own is recorded at once, as before.
"""

from __future__ import annotations

import asyncio

from portal.batching import Batcher
from stations import services
from stations.dbcalls import db

#: Closes recorded by one database call.
BATCH_MOST = 200
#: Database calls recording closes at once (each takes a database thread of the process).
FLUSHES_AT_ONCE = 4

Closed = tuple[int, str, "int | None"]  # station, channel name, organization


async def _record(closed: list[Closed]) -> list[dict[str, str] | None]:
    return await db(services.connections_closed)(closed)


_batchers: dict[int, tuple[asyncio.AbstractEventLoop, Batcher]] = {}


def batcher() -> Batcher[Closed, dict[str, str] | None]:
    """The batcher of the running event loop (tests run several loops). ``add((station,
    channel name, organization))`` returns what ``services.connections_closed`` returned for
    that connection: its live fragments, or None if another connection holds the station."""
    loop = asyncio.get_running_loop()
    found = _batchers.get(id(loop))
    if found is None or found[0] is not loop:
        _batchers.clear()
        found = _batchers[id(loop)] = (
            loop,
            Batcher(_record, most=BATCH_MOST, at_once=FLUSHES_AT_ONCE),
        )
    return found[1]
