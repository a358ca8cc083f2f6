"""Closed station connections, recorded together.

When an ASGI process stops (a restart, a deploy), Uvicorn closes every connection at once and
gives the application ``--timeout-graceful-shutdown`` seconds to finish; what is still running
then is cancelled. Each connection's teardown recorded its station offline in a database call
of its own: at 1,000 connections a process, three quarters were still waiting for a database
thread after 5 s, were cancelled (each logging a traceback), and their stations stayed online
in the database until they reconnected; and the new processes could not start before the
old ones had stopped (docs/BENCHMARKS.md, session 13).

Here the closes that wait are gathered: one database call (``services.connections_closed``,
one statement on PostgreSQL) records up to ``BATCH_MOST`` of them, and up to
``FLUSHES_AT_ONCE`` such calls run at once. A single close waits for no timer: it is recorded
at once, as before; only closes that come while others are being recorded are gathered.
"""

from __future__ import annotations

import asyncio
import logging

from stations import services
from stations.dbcalls import db

log = logging.getLogger(__name__)

#: Closes recorded by one database call.
BATCH_MOST = 200
#: Database calls recording closes at once (each takes a database thread of the process).
FLUSHES_AT_ONCE = 4

_Pending = tuple[int, str, "int | None", "asyncio.Future[dict[str, str] | None]"]


class DisconnectBatcher:
    """One per event loop. ``closed`` returns what ``services.connections_closed`` returned
    for that connection (its live fragments, or None if another connection holds the
    station)."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []
        self._flushes: set[asyncio.Task] = set()

    async def closed(
        self, station_id: int, channel_name: str, organization_id: int | None
    ) -> dict[str, str] | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, str] | None] = loop.create_future()
        self._pending.append((station_id, channel_name, organization_id, future))
        if len(self._flushes) < FLUSHES_AT_ONCE:
            task = loop.create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        # A cancelled teardown (the shutdown's grace ran out) cancels only its wait: the
        # batch it is in is still recorded.
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH_MOST], self._pending[BATCH_MOST:]
            try:
                results = await db(services.connections_closed)([item[:3] for item in batch])
            except Exception as exc:  # each waiting teardown gets the error, as before
                for *_item, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_item, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


_batchers: dict[int, DisconnectBatcher] = {}


def batcher() -> DisconnectBatcher:
    """The batcher of the running event loop (tests run several loops)."""
    loop = asyncio.get_running_loop()
    found = _batchers.get(id(loop))
    if found is None or getattr(found, "_loop", None) is not loop:
        found = DisconnectBatcher()
        found._loop = loop  # type: ignore[attr-defined]
        _batchers.clear()
        _batchers[id(loop)] = found
    return found
