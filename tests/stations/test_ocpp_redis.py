"""Two processes sharing Redis: a command sent through one channel-layer instance reaches a
station connected to another (each instance is what one ASGI process holds)."""

from __future__ import annotations

import os
import uuid

import pytest
from asgiref.sync import sync_to_async

from stations import commands
from stations.models import StationCommand
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT
from tests.stations.helpers import Station as FakeStation

REDIS_URL = os.environ.get("REDIS_URL", "")

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("ocpp_settings"),
    pytest.mark.skipif(not REDIS_URL, reason="needs Redis: set REDIS_URL"),
]


def _redis_layer(settings) -> str:
    """This process's channel layer on Redis, with a prefix of its own (returned)."""
    from channels.layers import channel_layers

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "portal.channel_layer.BatchReceiveRedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": prefix},
        }
    }
    channel_layers.backends.clear()
    return prefix


async def _booted() -> FakeStation:
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)  # "process B"
    assert (await cp.handshake())[0]
    assert (await cp.call("BootNotification", BOOT))[2]["status"] == "Accepted"
    return cp


async def _reset_from_process_a(station, cp: FakeStation, prefix: str) -> StationCommand:
    """A Reset sent through another channel-layer instance ("process A") reaches the
    station, which accepts it."""
    from portal.channel_layer import BatchReceiveRedisChannelLayer

    command = await StationCommand.objects.acreate(
        station=station, action="Reset", payload={"type": "Soft"}
    )
    process_a = BatchReceiveRedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        await process_a.group_send(
            commands.station_group(station.pk), {"type": "ocpp.command", "command_id": command.pk}
        )
        call = await cp.expect_call(5)
        assert call[2] == "Reset"
        await cp.answer(call, {"status": "Accepted"})
    finally:
        await process_a.flush()
    return command


async def test_command_from_process_a_reaches_station_on_process_b(station, settings):
    import asyncio

    from channels.layers import channel_layers

    prefix = _redis_layer(settings)
    cp = await _booted()
    command = await _reset_from_process_a(station, cp, prefix)
    for _ in range(60):
        await asyncio.sleep(0.05)
        if (await StationCommand.objects.aget(pk=command.pk)).status == "accepted":
            break
    assert (await StationCommand.objects.aget(pk=command.pk)).status == "accepted"
    await cp.disconnect()
    await sync_to_async(channel_layers.backends.clear)()


async def test_commands_reach_the_station_again_after_redis_lost_its_groups(station, settings):
    """Redis restarted empty while the station stayed connected: its process's watcher
    sees the marker gone and the connection joins its group again, without waiting for the
    hourly refresh (stations/groups.py)."""
    import asyncio

    import redis.asyncio as aioredis
    from channels.layers import channel_layers

    from stations.groups import membership

    settings.OCPP_GROUP_CHECK_SECONDS = 0.1
    settings.OCPP_GROUP_REFRESH_SECONDS = 3600
    prefix = _redis_layer(settings)
    cp = await _booted()
    for _ in range(50):  # the watcher has seen the marker
        if membership.tokens:
            break
        await asyncio.sleep(0.05)
    group_key = f"{prefix}:group:{commands.station_group(station.pk)}"
    direct = aioredis.from_url(REDIS_URL)
    try:
        assert await direct.exists(group_key)
        # What a restart of an empty Redis does to this prefix: every key gone.
        await direct.delete(*[k async for k in direct.scan_iter(f"{prefix}*")])
        for _ in range(60):
            if await direct.exists(group_key):
                break
            await asyncio.sleep(0.05)
        assert await direct.exists(group_key), "the connection did not join its group again"
    finally:
        await direct.aclose()
    await _reset_from_process_a(station, cp, prefix)
    await cp.disconnect()
    await membership.stop()
    await sync_to_async(channel_layers.backends.clear)()


async def test_many_connections_leave_their_groups_in_few_round_trips(settings, monkeypatch):
    """A stopping process's teardowns leave their groups together: one pipeline for many
    (each used to take a Redis connection of its own for its one ZREM)."""
    import asyncio

    from channels.layers import channel_layers, get_channel_layer

    from stations.groups import Membership

    _redis_layer(settings)
    layer = get_channel_layer()
    members = Membership()
    channels = [await layer.new_channel() for _ in range(40)]
    for i, channel in enumerate(channels):
        await members.join(layer, f"station-{i}", channel)
    await members.stop()
    pipelines = []
    real_pipeline = type(layer.connection(0)).pipeline

    def counting_pipeline(redis, *args, **kwargs):
        pipelines.append(1)
        return real_pipeline(redis, *args, **kwargs)

    monkeypatch.setattr(type(layer.connection(0)), "pipeline", counting_pipeline)
    discards = []
    monkeypatch.setattr(layer, "group_discard", lambda *a: discards.append(a))
    await asyncio.gather(*(members.leave(layer, f"station-{i}", c) for i, c in enumerate(channels)))
    assert discards == [] and 1 <= len(pipelines) <= 2
    for i, channel in enumerate(channels):
        key = layer._group_key(f"station-{i}")
        assert (
            await layer.connection(layer.consistent_hash(f"station-{i}")).zscore(key, channel)
            is None
        )
    assert members.members == {}
    await layer.flush()
    await sync_to_async(channel_layers.backends.clear)()
