"""Django's Redis cache, with one ``redis.Redis`` client per connection pool.

Django's ``RedisCacheClient.get_client`` builds a new ``redis.Redis`` for every cache call
(its response callbacks, its options): 55 µs each on this machine, more than the round trip
to Redis (34 µs). The OCPP path asks the cache at every handshake (failed-password counts)
and at every station event (load management's dirty mark), the recompute a dozen times per
run. A ``redis.Redis`` holds no state of its own between commands (each takes a connection
from the pool), so one per pool serves every call and thread.

And one client per thread, not per context: Django keeps its cache objects per context
(asgiref ``Local``), and every HTTP request runs in a context of its own, so each request
built a new cache object, a new pool and a new Redis connection (the connect, redis-py's
handshake and its look-up of its own version in the package metadata: a third of the CPU of
an API request whose only cache call was the throttle's). HTTP requests now run on a few
long-lived threads (portal/http_threads.py) and reuse their thread's client; the OCPP path's
database threads each keep theirs, as they did in their own lasting contexts
(portal/thread_context.py). One client for the whole process was tried: the API gained the
same, but every interleaved 2,000-station storm cost 4-8 % more CPU per reconnect, for a
reason not found (docs/BENCHMARKS.md, session 20).
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:  # two threads may both build one: either serves
            client = self._clients[index] = self._client(
                connection_pool=self._get_connection_pool(write)
            )
        return client


#: Each thread's cache clients (and so their connection pools), by servers and options.
_per_thread = threading.local()


class RedisCache(DjangoRedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient

    @cached_property
    def _cache(self) -> ReusedClientRedisCacheClient:
        clients = getattr(_per_thread, "clients", None)
        if clients is None:
            clients = _per_thread.clients = {}
        key = repr((self._servers, sorted(self._options.items())))
        client = clients.get(key)
        if client is None:
            client = clients[key] = self._class(self._servers, **self._options)
        return client
