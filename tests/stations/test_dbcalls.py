"""``stations.dbcalls``: calls from many station connections share their worker thread's
cache client instead of each connection keeping one (and a Redis connection) of its own;
calls wait for a thread in order of priority."""

from __future__ import annotations

import asyncio
import contextvars
import operator
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches

from stations import dbcalls
from stations.dbcalls import in_thread_context


def _cache_client():
    return caches["default"]


async def _gather(fn, count: int, executor: ThreadPoolExecutor) -> list:
    call = sync_to_async(fn, thread_sensitive=False, executor=executor)
    return await asyncio.gather(*(asyncio.create_task(call()) for _ in range(count)))


def _from_connections(fn, count: int, executor: ThreadPoolExecutor) -> list:
    """``count`` station connections (each its own task, so its own context) call ``fn``,
    starting, as the server's connections do, from a context that never used the cache."""
    return contextvars.Context().run(asyncio.run, _gather(fn, count, executor))


def test_connections_share_the_threads_cache_client():
    with ThreadPoolExecutor(max_workers=1) as executor:
        clients = _from_connections(in_thread_context(_cache_client), 20, executor)
    assert len({id(c) for c in clients}) == 1


def test_without_it_every_connection_makes_its_own():
    # What in_thread_context prevents (asgiref keeps Django's cache handler per context).
    with ThreadPoolExecutor(max_workers=1) as executor:
        clients = _from_connections(_cache_client, 20, executor)
    assert len({id(c) for c in clients}) == 20


def test_connections_are_checked_once_a_second_per_thread_and_after_a_failure(monkeypatch):
    """With CONN_HEALTH_CHECKS every check makes the next query ping the database first: a
    thread checks at most once a second, and at once after a call that failed."""
    from django.db import OperationalError

    from stations import dbcalls

    checks = []
    monkeypatch.setattr(dbcalls, "close_old_connections", lambda: checks.append(1))
    monkeypatch.setattr(dbcalls._thread, "checked_at", -1e9, raising=False)
    ok = dbcalls._with_fresh_connection(lambda: "ok")
    for _ in range(5):
        assert ok() == "ok"
    assert len(checks) == 1

    def broken():
        raise OperationalError("server closed the connection unexpectedly")

    with pytest.raises(OperationalError):
        dbcalls._with_fresh_connection(broken)()
    assert len(checks) == 2  # the failed call drops its connection
    assert ok() == "ok"
    assert len(checks) == 3  # and the next call checks again


# --- priorities: connected stations' messages first, the portal's own commands last -------


def test_calls_wait_in_order_of_priority_then_of_arrival():
    pool = dbcalls._PriorityPool(threads=1)
    gate, ran = threading.Event(), []
    busy = pool.submit(dbcalls.MESSAGES, gate.wait, (5,), {})  # the only thread is busy
    futures = [
        pool.submit(priority, ran.append, (name,), {})
        for priority, name in [
            (dbcalls.COMMANDS, "claim"),
            (dbcalls.HANDSHAKES, "handshake"),
            (dbcalls.MESSAGES, "meter values"),
            (dbcalls.COMMANDS, "finish"),
            (dbcalls.MESSAGES, "heartbeat"),
        ]
    ]
    assert pool.backlog() == 5
    gate.set()
    for future in [busy, *futures]:
        future.result(5)
    assert ran == ["meter values", "heartbeat", "handshake", "claim", "finish"]
    assert pool.backlog() == 0


def test_an_error_reaches_the_caller_and_the_thread_lives_on():
    pool = dbcalls._PriorityPool(threads=1)
    failed = pool.submit(dbcalls.MESSAGES, operator.truediv, (1, 0), {})
    with pytest.raises(ZeroDivisionError):
        failed.result(5)
    assert pool.submit(dbcalls.MESSAGES, operator.add, (1, 2), {}).result(5) == 3


async def test_db_runs_on_the_pool_at_the_priority_asked(monkeypatch):
    monkeypatch.setattr(dbcalls, "connection", types.SimpleNamespace(vendor="postgresql"))
    monkeypatch.setattr(dbcalls.conf, "db_threads", lambda: 2)
    seen = []
    real = dbcalls._PriorityPool.submit
    monkeypatch.setattr(
        dbcalls._PriorityPool,
        "submit",
        lambda self, priority, fn, args, kwargs: (
            seen.append(priority) or real(self, priority, fn, args, kwargs)
        ),
    )
    monkeypatch.setattr(dbcalls, "_shared_pool", None)
    monkeypatch.setattr(dbcalls, "_lanes", {})
    assert await dbcalls.db(lambda: threading.current_thread().name, dbcalls.COMMANDS)() == (
        "ocpp-db-1"
    )
    await dbcalls.db(lambda: None)()
    assert seen == [dbcalls.COMMANDS, dbcalls.MESSAGES]
