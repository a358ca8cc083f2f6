"""Database calls from the OCPP path, off the event loop.

Channels' ``database_sync_to_async`` runs every ORM call of a process on one thread, one after
another: with thousands of stations per process, their handshakes, status notifications and
transactions queue behind each other, and the time is mostly spent waiting for PostgreSQL's
answers. On PostgreSQL this module spreads the calls over a small pool of threads (each keeps
its own connection, ``OCPP_DB_THREADS``, default 8); on SQLite (one writer at a time) or with
``OCPP_DB_THREADS=1`` it is exactly ``database_sync_to_async``.

Order per station is kept by the caller: the ``ocpp`` library handles one message of a
connection at a time, and each call here is awaited before the next.

Calls wait for a thread in order of priority, first come first served within one:
``MESSAGES`` (what connected stations sent: they are waiting for the answer), then
``HANDSHAKES`` (new connections), then ``COMMANDS`` (claiming and recording the portal's own
calls). Load management renews hundreds of leases at once every few seconds; without
priorities every station message arriving meanwhile waited behind their bookkeeping (the
slowest 1 % of a 10,000-station fleet's answers came in those moments, docs/BENCHMARKS.md).
In a reconnect storm, stations that are connected get their boot answered before more
handshakes are worked on.
"""

from __future__ import annotations

import functools
import itertools
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import DatabaseError, close_old_connections, connection

from portal.thread_context import in_thread_context
from stations import conf

P = ParamSpec("P")
R = TypeVar("R")

MESSAGES, HANDSHAKES, COMMANDS = 0, 1, 2


class _PriorityPool:
    """Threads (each keeps its own database connection) taking calls from one queue in
    order of priority, then of arrival."""

    def __init__(self, threads: int) -> None:
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = threads
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, priority: int, fn: Callable, args: tuple, kwargs: dict) -> Future:
        future: Future = Future()
        self._queue.put((priority, next(self._order), future, fn, args, kwargs))
        if self._started < self._threads:
            self._start_thread()
        return future

    def backlog(self) -> int:
        return self._queue.qsize()

    def _start_thread(self) -> None:
        with self._lock:
            if self._started < self._threads:
                self._started += 1
                threading.Thread(
                    target=self._work, name=f"ocpp-db-{self._started}", daemon=True
                ).start()

    def _work(self) -> None:
        while True:
            _priority, _order, future, fn, args, kwargs = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)


class _Lane(Executor):
    """The pool seen as an executor (what ``sync_to_async`` takes) at one priority."""

    def __init__(self, pool: _PriorityPool, priority: int) -> None:
        self.pool, self.priority = pool, priority

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        return self.pool.submit(self.priority, fn, args, kwargs)


_shared_pool: _PriorityPool | None = None
_lanes: dict[int, _Lane] = {}


def _lane(priority: int) -> _Lane:
    global _shared_pool
    if _shared_pool is None:
        _shared_pool = _PriorityPool(conf.db_threads())
    if priority not in _lanes:
        _lanes[priority] = _Lane(_shared_pool, priority)
    return _lanes[priority]


_thread = threading.local()


#: A thread's connection is checked (broken, too old, CONN_HEALTH_CHECKS) at most this often.
CHECK_EVERY_SECONDS = 1.0


def _with_fresh_connection(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        # As database_sync_to_async does, drop connections that are broken or too old, but
        # once a second per thread, not around every call: with health checks on, each check
        # makes the next query ping the database first (15 % of a process's time in a
        # reconnect storm). A call that fails drops its connection for the next one.
        now = time.monotonic()
        if now - getattr(_thread, "checked_at", -math.inf) >= CHECK_EVERY_SECONDS:
            close_old_connections()
            _thread.checked_at = now
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            close_old_connections()
            _thread.checked_at = -math.inf
            raise

    return in_thread_context(run)


def db(fn: Callable[P, R], priority: int = MESSAGES) -> Callable[P, Awaitable[R]]:
    """``await db(services.boot)(...)``: run a synchronous ORM function off the loop."""
    if connection.vendor == "sqlite" or conf.db_threads() <= 1:
        return database_sync_to_async(fn)
    return sync_to_async(
        _with_fresh_connection(fn), thread_sensitive=False, executor=_lane(priority)
    )


def backlog() -> int:
    """Calls waiting for a database thread in this process, all priorities (0 when none
    is in use)."""
    return 0 if _shared_pool is None else _shared_pool.backlog()


__all__ = ["COMMANDS", "HANDSHAKES", "MESSAGES", "backlog", "db", "in_thread_context"]
