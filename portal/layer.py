"""Channel-layer sends from synchronous code (Celery tasks, after-commit hooks, views).

``async_to_sync(layer.group_send)`` called outside an event loop (a Celery worker) starts a
new loop for the call, and channels_redis keeps its Redis connections per loop: every call
connects afresh. Measured on this machine: 4 ms for one message, 32 ms for 35 (a load
recompute's setpoints). Here each process keeps one sender loop in a daemon thread, and its
connections with it: 0.3 ms and 4 ms.

The in-memory layer (embedded default, tests) keeps asyncio queues that belong to the loop
that receives; it is driven through ``async_to_sync`` as before, which hands the call to
that loop when there is one.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

#: A send that Redis does not answer in this time raises instead of blocking the caller.
SEND_TIMEOUT_SECONDS = 10.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _sender_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _lock:
        # After a fork (Celery's prefork pool) the thread is gone: start another.
        if _loop is None or _loop_pid != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="layer-sender", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


async def _send_all(layer: Any, messages: list[tuple[str, dict[str, Any]]]) -> None:
    if len(messages) > 1 and hasattr(layer, "group_send_many"):  # portal/channel_layer.py
        await layer.group_send_many(messages)
        return
    # Concurrently: each group_send is a few Redis round trips.
    await asyncio.gather(*(layer.group_send(group, message) for group, message in messages))


def group_send_many(messages: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Send each ``(group, message)``; returns once all are with the layer."""
    messages = list(messages)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # blocking here would stall that loop: async code awaits layer.group_send itself
        raise RuntimeError("group_send_many() is for synchronous code")
    layer = get_channel_layer()
    if layer is None or not messages:
        return
    if isinstance(layer, InMemoryChannelLayer):
        async_to_sync(_send_all)(layer, messages)
        return
    future = asyncio.run_coroutine_threadsafe(_send_all(layer, messages), _sender_loop())
    future.result(timeout=SEND_TIMEOUT_SECONDS)


def group_send(group: str, message: dict[str, Any]) -> None:
    group_send_many([(group, message)])
