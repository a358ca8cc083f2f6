"""Time sources for the simulator.

Charging physics and protocol intervals (heartbeat, meter sampling, boot retry, profile
validity) read a `Clock`, so tests can run an hour of charging in milliseconds with `FakeClock`.
Networking (connect timeouts, reconnect back-off) always uses real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (UTC)."""

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of this clock's time."""


class RealClock:
    """Wall-clock time and `asyncio.sleep`."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when a test calls `advance()`.

    Sleepers wake in deadline order; at each wake-up the clock reads exactly the sleeper's
    deadline, so periodic work (meter samples every 60 s) happens at exact instants.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float, *, settle: int = 20) -> None:
        """Move time forward, waking every sleeper whose deadline falls inside the step."""
        target = self._now + seconds
        await _settle(settle)  # tasks just created get to register their first sleep
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            if fut.done():  # cancelled sleeper
                continue
            self._now = max(self._now, deadline)
            fut.set_result(None)
            await _settle(settle)
        self._now = target
        await _settle(settle)


async def _settle(rounds: int) -> None:
    # Let woken tasks run up to their next await (they enqueue, they do not wait for the
    # network). Stop early once the loop has nothing ready to run (CPython's `_ready` queue).
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        await asyncio.sleep(0)
        if not getattr(loop, "_ready", True):
            break


def iso(ts: float) -> str:
    """OCPP timestamp: ISO 8601 UTC with milliseconds and a Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> float:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:  # OCPP asks for UTC; treat a naive time as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
