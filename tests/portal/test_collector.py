"""Garbage-collector settings of the long-running processes (portal/collector.py)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from portal import collector


@pytest.fixture
def restored_collector():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    if collector.full_collection_watch in gc.callbacks:
        gc.callbacks.remove(collector.full_collection_watch)


def test_freezes_what_is_loaded_and_raises_the_young_threshold(restored_collector, monkeypatch):
    monkeypatch.delenv("GC_THRESHOLD0", raising=False)
    _, t1, t2 = gc.get_threshold()
    assert collector.collector_tune() == (collector.DEFAULT_THRESHOLD0, t1, t2)
    assert gc.get_threshold()[0] == 50_000
    assert gc.get_freeze_count() > 10_000  # the test process's modules, Django and all


def test_a_slow_full_collection_is_logged(restored_collector, monkeypatch, caplog):
    monkeypatch.delenv("GC_THRESHOLD0", raising=False)
    collector.collector_tune()
    assert collector.full_collection_watch in gc.callbacks
    collector.collector_tune()  # tuned twice (tests), watched once
    assert gc.callbacks.count(collector.full_collection_watch) == 1
    monkeypatch.setattr(collector, "SLOW_FULL_COLLECTION_MS", 1_000_000.0)
    with caplog.at_level("WARNING", logger="portal.collector"):
        gc.collect(1)
        gc.collect(2)
    assert caplog.records == []  # a young collection is not watched; this one was quick
    monkeypatch.setattr(collector, "SLOW_FULL_COLLECTION_MS", -1.0)
    with caplog.at_level("WARNING", logger="portal.collector"):
        gc.collect(1)
        assert caplog.records == []
        gc.collect(2)
    assert [r.getMessage().startswith("full garbage collection took") for r in caplog.records] == [
        True
    ]


def test_the_threshold_is_configurable_and_zero_leaves_cpython_s(restored_collector, monkeypatch):
    monkeypatch.setenv("GC_THRESHOLD0", "20000")
    assert collector.collector_tune()[0] == 20_000
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    monkeypatch.setenv("GC_THRESHOLD0", "0")
    assert collector.collector_tune() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_the_asgi_server_s_startup_tunes_the_collector(monkeypatch, settings):
    from portal import asgi

    settings.PERIODIC_IN_PROCESS = False  # no periodic runner started by this test

    called = []
    monkeypatch.setattr(collector, "collector_tune", lambda: called.append(1))
    sent = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message["type"])

    asyncio.run(asgi.application({"type": "lifespan"}, receive, send))
    assert called == [1]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
