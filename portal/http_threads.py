"""HTTP requests on a few long-lived threads, so that their database connections are reused.

Under ASGI Django runs each request's synchronous parts (middleware, views, the ORM) in a
thread of the request's own (``ThreadSensitiveContext``), started for the request and ended
with it. Its database connection ended with it too (portal/asgi.py closes it; before that it
leaked), so every page and API call connected to PostgreSQL anew: 6-7 ms on the benchmark
machine before the first query, a PostgreSQL backend forked for it, and the prepared
statements of ``DATABASES["OPTIONS"]`` never used twice.

Here each request borrows one of at most ``HTTP_THREADS`` single-thread executors and gives it
back when it ends: its connection stays open between requests and is managed as Django
manages any persistent connection (``CONN_MAX_AGE``, health checks, closed after an error, by
``close_old_connections`` at the request's start and end). One request at a time per thread,
as a thread-sensitive context requires. When all are busy a request gets a thread of its own,
as before, whose connection is closed at its end (``close_request_connections``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler
from django.db import connections

#: A thread of the pool: its connections outlive the request (read by the closing hook).
_pooled = threading.local()


def _mark_pooled() -> None:
    _pooled.yes = True


class RequestThreads:
    """Up to ``most`` single-thread executors, lent one per request, most recently returned
    first: a quiet process keeps using the same one or two threads (and connections)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.created = 0
        self._idle: list[ThreadPoolExecutor] = []

    def borrow(self) -> ThreadPoolExecutor | None:
        if self._idle:
            return self._idle.pop()
        if self.created >= self.most:
            return None
        self.created += 1
        return ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"http-{self.created}", initializer=_mark_pooled
        )

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        """Lent again only once its thread is idle: a request cancelled (its client gone)
        may leave its synchronous part still running there."""
        loop = asyncio.get_running_loop()

        def lend_again(_done: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
                loop.call_soon_threadsafe(self._idle.append, executor)

        executor.submit(lambda: None).add_done_callback(lend_again)

    def close_connections(self) -> None:
        """Close the idle threads' database connections (the server stops: lifespan
        shutdown, or a test's in-process server, whose open connections would keep the test
        database from being dropped)."""
        for executor in list(self._idle):
            executor.submit(connections.close_all).result(timeout=10)


class PooledThreadsASGIHandler(ASGIHandler):
    """Django's ASGI handler with its requests on ``RequestThreads``."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.threads = RequestThreads(threads)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        executor = self.threads.borrow() if scope["type"] == "http" else None
        if executor is None:  # all busy (or not HTTP: Django's own error)
            await super().__call__(scope, receive, send)
            return
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(executor)


def close_request_connections(**kwargs: Any) -> None:
    """At ``request_finished``, in the request's thread: a thread made for one request takes
    its connections with it (closed here; left open they stayed until a garbage collection,
    and about 50 requests used up PostgreSQL's 100 connections, docs/OPERATIONS.md). A pooled
    thread keeps them. A connection inside a transaction (a test's) is left alone."""
    if getattr(_pooled, "yes", False):
        return
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
