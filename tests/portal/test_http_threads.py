"""portal/http_threads.py: HTTP requests borrow long-lived threads (and their database
connections); a request beyond them gets a thread of its own. The served-process check is
tests/e2e/test_http_connections.py."""

from __future__ import annotations

import asyncio
import threading

from asgiref.sync import sync_to_async

from portal.http_threads import PooledThreadsASGIHandler, RequestThreads, _pooled


async def test_threads_are_reused_most_recent_first_and_bounded():
    threads = RequestThreads(most=2)
    first, second = threads.borrow(), threads.borrow()
    assert first is not None and second is not None and first is not second
    assert threads.borrow() is None  # all lent: the caller makes its own
    threads.give_back(first)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if threads._idle:
            break
    assert threads.borrow() is first and threads.created == 2


async def test_a_thread_is_lent_again_only_when_idle():
    """A cancelled request may leave its synchronous part running: the thread is not lent
    to the next request before that ends."""
    threads = RequestThreads(most=1)
    executor = threads.borrow()
    release = threading.Event()
    executor.submit(release.wait)  # the cancelled request's view, still running
    threads.give_back(executor)
    await asyncio.sleep(0.1)
    assert threads.borrow() is None
    release.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if threads._idle:
            break
    assert threads.borrow() is executor


async def test_a_request_runs_its_synchronous_parts_on_a_pooled_thread(settings):
    seen: list[tuple[str, bool]] = []

    def view_part() -> None:
        seen.append((threading.current_thread().name, getattr(_pooled, "yes", False)))

    handler = PooledThreadsASGIHandler(threads=1)

    async def handle(scope, receive, send):  # what Django's handle() does with a view
        await sync_to_async(view_part)()
        await sync_to_async(view_part)()

    handler.handle = handle
    await handler({"type": "http"}, None, None)
    for _ in range(50):  # given back once idle
        await asyncio.sleep(0.01)
        if handler.threads._idle:
            break
    await handler({"type": "http"}, None, None)
    names = {name for name, _pooled_flag in seen}
    assert len(seen) == 4 and len(names) == 1 and all(flag for _name, flag in seen)
    assert names.pop().startswith("http-1")


async def test_closing_closes_each_idle_threads_connections(monkeypatch):
    """At lifespan shutdown (and after a test's in-process server) the pooled threads'
    database connections are closed, each in its own thread."""
    threads = RequestThreads(most=2)
    lent = [threads.borrow(), threads.borrow()]
    for executor in lent:
        threads.give_back(executor)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if len(threads._idle) == 2:
            break
    closed_in: list[str] = []
    monkeypatch.setattr(
        "portal.http_threads.connections.close_all",
        lambda: closed_in.append(threading.current_thread().name),
    )
    await asyncio.to_thread(threads.close_connections)
    assert sorted(name.split("_")[0] for name in closed_in) == ["http-1", "http-2"]
