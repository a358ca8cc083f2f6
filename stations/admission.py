"""Admission control at the OCPP handshake.

After a restart every station of a fleet reconnects at once. A process that accepts them all
answers none in time: handshakes and boots queue behind each other until they outlive the
stations' timeouts, the stations give up and try again, and the work already spent on them is
lost (congestion collapse; seen at 10,000 stations on two cores, docs/BENCHMARKS.md). So a
process that is already busy refuses new handshakes with ``503 Service Unavailable`` and a
``Retry-After``, before the consumer is built and before any database work: the stations
already connected are served first, and the fleet comes back at the rate the process can take.

Busy means any of:
- more handshakes in progress than ``OCPP_ADMISSION_MAX_CONNECTING``, or than the process
  completes in 5 s at the rate it has been completing them (Little's law: more at once only
  makes each take longer);
- more OCPP database calls waiting for a thread than ``OCPP_ADMISSION_MAX_DB_BACKLOG``;
- the request waited longer than ``OCPP_ADMISSION_MAX_QUEUE_SECONDS`` between the load
  balancer and this process (nginx stamps ``X-Request-Start``). Such a request sat in the
  listen queue behind thousands of others: its station may already have given up, and working
  on it would only lengthen the queue for those behind it. Refusing it costs almost nothing.

The ``Retry-After`` is drawn from ``OCPP_ADMISSION_RETRY_AFTER`` (5-30 s) while few stations
are turned away. When many are, each refused station is given its own moment to come back,
one after the other a little faster (``BOOKING_AHEAD``) than this process has been
completing handshakes (measured over the last 10 s), up to ``OCPP_ADMISSION_RETRY_AFTER_MAX``:
a fixed short range would bring thousands back every few seconds, and each refusal costs
nginx, the server and the station work again. A station refused again before its moment
(many ignore ``Retry-After``) is given the same moment, not a new one.
"""

from __future__ import annotations

import contextvars
import heapq
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from stations import conf, dbcalls

log = logging.getLogger(__name__)

#: Handshakes completed within this many seconds give the process's admission rate.
RATE_WINDOW_SECONDS = 10.0
#: Below this many completed handshakes per second (a process just started, or one that has
#: completed none yet), the rate is taken as this: the spread stays bounded.
RATE_FLOOR = 10.0
#: Refused stations are booked to come back this much faster than the process has been
#: completing handshakes. A process held back by its own admission completes what comes back
#: and no more: booked at exactly its measured rate it would never find out that it can do
#: more, and a storm's last stations would come back to a machine with room to spare (seen in
#: a 2,000-station run: 5-15 % of the CPU idle in the storm's second half). Those that
#: come back to a process still busy are refused again, at the cost of a 503, and booked anew.
BOOKING_AHEAD = 1.5
#: A handshake let in should be answered within about this (s): the stations' own time-outs
#: are 10-30 s, and a handshake waits behind the connected stations' messages.
HANDSHAKE_SECONDS = 5.0
#: Handshakes let in at once however slow the process has been.
CONNECTING_LEAST = 20
#: At most this many refused identities are remembered (a hostile client inventing
#: identities must not grow the memory of a busy process without bound).
BOOKED_MOST = 50_000


class Gate:
    """One per process: each ASGI process decides for itself."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.connecting = 0
        self.refused = 0
        self._completed: deque[float] = deque()
        self._next_return = 0.0  # the latest moment promised to a refused station
        self._booked: dict[str, float] = {}  # identity -> the moment it was told to return
        self._expiry: list[tuple[float, str]] = []  # heap over _booked's moments

    def busy(self, queued_for: float | None = None) -> str | None:
        """Why a new handshake should wait, or None. ``queued_for``: seconds the request
        waited before it reached this process (None when unknown)."""
        most = self.connecting_limit()
        if most and self.connecting >= most:
            return "handshakes"
        backlog_most = conf.admission_max_db_backlog()
        if backlog_most and dbcalls.backlog() > backlog_most:
            return "database"
        queue_most = conf.admission_max_queue_seconds()
        if queue_most and queued_for is not None and queued_for > queue_most:
            return "queued"
        return None

    def connecting_limit(self) -> int:
        """Handshakes let in at once (0: no limit): ``OCPP_ADMISSION_MAX_CONNECTING``, and
        no more than this process completes in ``HANDSHAKE_SECONDS`` at its current rate.
        More in progress would only make each wait longer (a handshake in a storm waits for
        the connected stations' boots, which go first): those beyond the stations' patience
        are lost work, while fewer at once finish as many per second."""
        most = conf.admission_max_connecting()
        if not most:
            return 0
        return min(most, max(CONNECTING_LEAST, round(self.admission_rate() * HANDSHAKE_SECONDS)))

    def completed(self, identity: str) -> None:
        """A handshake this gate let through has been answered (accepted or not)."""
        now = self.clock()
        self._completed.append(now)
        self._forget_before(now)
        self._booked.pop(identity, None)  # its heap entry is dropped in _prune

    def admission_rate(self) -> float:
        """Handshakes completed per second, over the last ``RATE_WINDOW_SECONDS`` (or since
        the process started, if that is shorter), at least ``RATE_FLOOR``."""
        now = self.clock()
        self._forget_before(now)
        window = min(RATE_WINDOW_SECONDS, max(1.0, now - self.started))
        return max(RATE_FLOOR, len(self._completed) / window)

    def waiting(self) -> int:
        """Stations refused and told to come back later, whose moment has not passed."""
        self._prune(self.clock())
        return len(self._booked)

    def refuse(self, identity: str) -> int:
        """Count a refusal and choose its Retry-After (s)."""
        self.refused += 1
        now = self.clock()
        self._prune(now)
        booked = self._booked.get(identity)
        if booked is not None and booked - now >= 1:
            return math.ceil(booked - now)  # back too early: the same moment again
        wait = self._book(now)
        if identity in self._booked or len(self._booked) < BOOKED_MOST:
            self._booked[identity] = now + wait
            heapq.heappush(self._expiry, (now + wait, identity))
        return wait

    def _book(self, now: float) -> int:
        low, high = conf.admission_retry_after()
        most = max(high, conf.admission_retry_after_max())
        # One more return promised, a little sooner than 1/rate after the latest one.
        step = 1 / (self.admission_rate() * BOOKING_AHEAD)
        # But not after promises that no longer hold: stations let in before their moment
        # and moments that passed leave their places free. Without this a refusal late in a
        # storm (a short busy moment) was sent to the far end of a schedule that had long
        # emptied: the last 3 of 10,000 stations came back 60-110 s after all the others
        # (docs/BENCHMARKS.md, session 15).
        self._next_return = min(self._next_return, now + low + len(self._booked) * step)
        self._next_return = max(self._next_return, now + low) + step
        ahead = self._next_return - now
        if ahead <= high:  # few refused: the configured spread
            return random.randint(low, max(low, high))
        if ahead > most:  # more than the longest wait can spread: spread over its far end
            self._next_return = now + most
            return random.randint(high, most)
        return math.ceil(ahead)

    def _forget_before(self, now: float) -> None:
        while self._completed and self._completed[0] < now - RATE_WINDOW_SECONDS:
            self._completed.popleft()

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            moment, identity = heapq.heappop(self._expiry)
            if self._booked.get(identity) == moment:
                del self._booked[identity]
        if len(self._expiry) > 2 * len(self._booked) + 1000:  # entries of let-through ones
            self._expiry = [(m, i) for i, m in self._booked.items()]
            heapq.heapify(self._expiry)


gate = Gate()


def queued_for(scope: dict[str, Any]) -> float | None:
    """Seconds since the load balancer received the request, from ``X-Request-Start:
    t=<unix seconds>`` (nginx's ``$msec``); None without the header or with a bad one."""
    for name, value in scope.get("headers") or ():
        if name == b"x-request-start":
            text = value.decode("latin-1").strip().removeprefix("t=")
            try:
                stamp = float(text)
            except ValueError:
                return None
            if stamp > 1e11:  # milliseconds or microseconds, as some balancers send
                stamp /= 1000 if stamp < 1e14 else 1_000_000
            return max(0.0, time.time() - stamp)
    return None


#: Set in the task of a connection whose handshake was refused with a denial response.
_denied: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ocpp_handshake_denied", default=False
)
#: What Uvicorn's websockets-sansio protocol logs, at ERROR, after every denial response: it
#: never marks the handshake complete when the response is a denial (Kludex/uvicorn#3138,
#: open), so each refused handshake of a reconnect storm, thousands of them, logged an error.
SPURIOUS_DENIAL_ERROR = "ASGI callable returned without completing handshake."


class DeniedHandshakeLogFilter(logging.Filter):
    """Drops that message for connections we refused with a response; an application that
    really returned without answering a handshake is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == SPURIOUS_DENIAL_ERROR and _denied.get())


def denied_handshake_log_filter_install() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DeniedHandshakeLogFilter) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(DeniedHandshakeLogFilter())


async def deny_handshake(
    scope: dict[str, Any],
    send: Any,
    status: int,
    text: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Refuse a websocket handshake with an HTTP status, through the ASGI websocket
    denial-response extension when the server offers it (Uvicorn does), else with a close
    before accept (the server answers 403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *(headers or [])],
            }
        )
        await send(
            {"type": "websocket.http.response.body", "body": text.encode(), "more_body": False}
        )
        _denied.set(True)  # read by DeniedHandshakeLogFilter, in this connection's task
    else:
        await send({"type": "websocket.close"})


async def _deny_busy(scope: dict[str, Any], receive: Any, send: Any, retry_after: int) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client went away before its handshake was read
    await deny_handshake(
        scope,
        send,
        503,
        "Too many stations connecting at once; try again later.",
        [(b"retry-after", str(retry_after).encode())],
    )


HANDSHAKE_ANSWERS = ("websocket.accept", "websocket.close", "websocket.http.response.start")


class AdmissionMiddleware:
    """Wraps the OCPP consumer: refuses while busy, counts the handshakes in progress."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        identity = str(scope.get("path", ""))
        busy = gate.busy(queued_for(scope))
        if busy is not None:
            retry = gate.refuse(identity)
            if gate.refused % 1000 == 1:
                log.warning(
                    "handshake refused (busy: %s), %d so far, %d waiting, Retry-After %d s",
                    busy,
                    gate.refused,
                    gate.waiting(),
                    retry,
                )
            await _deny_busy(scope, receive, send, retry)
            return
        gate.connecting += 1
        in_progress = True

        def finished(answered: bool) -> None:
            nonlocal in_progress
            if in_progress:
                in_progress = False
                gate.connecting -= 1
                if answered:
                    gate.completed(identity)

        async def watched_send(message: dict[str, Any]) -> None:
            if message["type"] in HANDSHAKE_ANSWERS:
                finished(answered=True)
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            finished(answered=False)  # the connection ended before any answer (client gone)
