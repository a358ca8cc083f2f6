"""``stations.dbcalls``: calls from many station connections share their worker thread's
cache client instead of each connection keeping one (and a Redis connection) of its own."""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches

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
