"""Django's Redis cache with one client per pool (portal/redis_cache.py)."""

from __future__ import annotations

import os
import threading

import pytest
from django.core.cache import caches

pytestmark = pytest.mark.services


@pytest.fixture
def shared(settings):
    """The production cache backend on the real Redis, under a key prefix of its own (the
    test settings use a local-memory cache), removed afterwards."""
    import redis

    prefix = f"test-cache-{os.getpid()}"
    settings.CACHES = {
        "default": {
            "BACKEND": "portal.redis_cache.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    }
    # One object for all threads here (each thread would otherwise get its own, per context).
    yield caches["default"]
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def test_every_call_uses_the_same_client(shared):
    client = shared._cache.get_client(write=True)
    assert shared._cache.get_client(write=True) is client
    assert shared._cache.get_client("key") is client  # one server: reads use it too


def test_one_cache_object_serves_several_threads_at_once(shared):
    client = shared._cache.get_client(write=True)
    errors = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                shared.set(f"t{n}-{i}", i, timeout=30)
                assert shared.get(f"t{n}-{i}") == i
                assert shared.add(f"t{n}-{i}", -1, timeout=30) is False
                assert shared.get_many([f"t{n}-{i}"]) == {f"t{n}-{i}": i}
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert shared._cache.get_client(write=True) is client


def test_requests_in_contexts_of_their_own_share_their_threads_pool(shared):
    """Django keeps a cache object per context and each HTTP request has a context of its
    own: requests on one thread (portal/http_threads.py) share its client and pool, not a
    new Redis connection each."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    def request():  # in an empty context, as a request's (nothing inherited)
        cache = caches["default"]
        cache.get("anything")
        return cache, cache._cache

    for threads_count in (1, 2):
        with ThreadPoolExecutor(threads_count) as threads:
            futures = [threads.submit(contextvars.Context().run, request) for _ in range(6)]
            results = [future.result() for future in futures]
        assert len({id(cache) for cache, _client in results}) == 6  # Django made six...
        clients = {id(client) for _cache, client in results}
        assert len(clients) <= threads_count  # ...sharing their thread's client and pools
        assert all(len(client._pools) == 1 for _cache, client in results)
