"""Database calls from the OCPP path, off the event loop.

Channels' ``database_sync_to_async`` runs every ORM call of a process on one thread, one after
another: with thousands of stations per process, their handshakes, status notifications and
transactions queue behind each other, and the time is mostly spent waiting for PostgreSQL's
answers. On PostgreSQL this module spreads the calls over a small pool of threads (each keeps
its own connection, ``OCPP_DB_THREADS``, default 8); on SQLite (one writer at a time) or with
``OCPP_DB_THREADS=1`` it is exactly ``database_sync_to_async``.

Order per station is kept by the caller: the ``ocpp`` library handles one message of a
connection at a time, and each call here is awaited before the next.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import DatabaseError, close_old_connections, connection

from portal.thread_context import in_thread_context
from stations import conf

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=conf.db_threads(), thread_name_prefix="ocpp-db")
    return _executor


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


def db(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``await db(services.boot)(...)``: run a synchronous ORM function off the loop."""
    if connection.vendor == "sqlite" or conf.db_threads() <= 1:
        return database_sync_to_async(fn)
    return sync_to_async(_with_fresh_connection(fn), thread_sensitive=False, executor=_pool())


def backlog() -> int:
    """Calls waiting for a database thread in this process (0 when none is in use)."""
    if _executor is None:
        return 0
    return _executor._work_queue.qsize()


__all__ = ["backlog", "db", "in_thread_context"]
