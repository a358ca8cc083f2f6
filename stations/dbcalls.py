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

import contextvars
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


def in_thread_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` in its worker thread's own (lasting) context, not in the copy of the
    calling connection's that ``sync_to_async`` enters. Django keeps its cache clients per
    context (asgiref ``Local``), each with a Redis connection of its own that nothing closes
    on a websocket: in each connection's context, every station held a Redis client (10,000
    stations: Redis's default limit of clients). Per thread, a process holds a few."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        context = getattr(_thread, "context", None)
        if context is None:
            context = _thread.context = contextvars.Context()
        return context.run(fn, *args, **kwargs)

    return run


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


__all__ = ["db", "in_thread_context"]
