"""Channel-layer sends from synchronous code (portal/layer.py)."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from channels.layers import channel_layers, get_channel_layer

from portal import layer as sync_layer

REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.fixture
def redis_layer(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "portal.channel_layer.BatchReceiveRedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"test-{uuid.uuid4().hex[:8]}"},
        }
    }
    channel_layers.backends.clear()
    yield get_channel_layer()
    channel_layers.backends.clear()


async def _receive_all(layer, channel: str, count: int) -> list[dict]:
    return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(count)]


@pytest.mark.services
@pytest.mark.skipif(not REDIS_URL, reason="needs Redis: set REDIS_URL")
def test_sends_from_sync_code_reach_group_members_and_keep_one_loop(redis_layer):
    async def join() -> str:
        channel = await redis_layer.new_channel()
        for group in ("g-a", "g-b"):
            await redis_layer.group_add(group, channel)
        return channel

    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(join())
        sync_layer.group_send_many([("g-a", {"type": "x", "n": 1}), ("g-b", {"type": "x", "n": 2})])
        first_loop = sync_layer._loop
        sync_layer.group_send("g-a", {"type": "x", "n": 3})
        # The sender loop (and with it channels_redis' connections) is kept between calls.
        assert sync_layer._loop is first_loop and first_loop.is_running()
        got = loop.run_until_complete(_receive_all(redis_layer, channel, 3))
    finally:
        loop.close()
    assert sorted(m["n"] for m in got) == [1, 2, 3]


def test_in_memory_layer_is_driven_in_the_callers_loop(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    layer = get_channel_layer()

    async def scenario() -> dict:
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        # From a worker thread, as after-commit hooks of sync views run.
        await asyncio.to_thread(sync_layer.group_send, "g", {"type": "x", "n": 7})
        return await asyncio.wait_for(layer.receive(channel), 2)

    try:
        assert asyncio.run(scenario())["n"] == 7
    finally:
        channel_layers.backends.clear()


def test_refuses_to_block_a_running_event_loop():
    async def inside_a_loop() -> None:
        sync_layer.group_send("g", {"type": "x"})

    with pytest.raises(RuntimeError, match="synchronous code"):
        asyncio.run(inside_a_loop())
