"""``stations.groups``: connections join their channel group again when Redis lost it (one
watcher per process reading a marker), and once an hour against channels_redis's expiry."""

from __future__ import annotations

import asyncio

import pytest

from stations.groups import Membership
from tests.stations.helpers import until


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: str, nx: bool = False) -> None:
        if not (nx and key in self.data):
            self.data[key] = value.encode()


class FakeLayer:
    """What the watcher uses of channels_redis: prefix, ring_size, connection, group_add."""

    prefix = "test"
    ring_size = 1

    def __init__(self) -> None:
        self.redis = FakeRedis()
        self.groups: dict[str, set[str]] = {}
        self.adds = 0

    def connection(self, index: int) -> FakeRedis:
        return self.redis

    async def group_add(self, group: str, channel: str) -> None:
        self.adds += 1
        self.groups.setdefault(group, set()).add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.groups.get(group, set()).discard(channel)

    def restart(self) -> None:
        """Redis restarted empty: groups and marker gone."""
        self.groups.clear()
        self.redis.data.clear()


@pytest.fixture
def fast(settings):
    settings.OCPP_GROUP_CHECK_SECONDS = 0.02
    settings.OCPP_GROUP_REFRESH_SECONDS = 3600


async def test_after_redis_lost_the_groups_every_connection_joins_again(fast):
    layer, members = FakeLayer(), Membership()
    await members.join(layer, "station-1", "chan!a")
    await members.join(layer, "station-2", "chan!b")
    await until(lambda: members.tokens)
    await asyncio.sleep(0.1)
    adds = layer.adds  # a quiet Redis: nothing joined again, however many rounds
    assert members.rejoined <= 1 and adds <= 4
    await asyncio.sleep(0.1)
    assert layer.adds == adds

    layer.restart()
    await until(lambda: layer.groups.get("station-1") and layer.groups.get("station-2"))
    assert layer.groups == {"station-1": {"chan!a"}, "station-2": {"chan!b"}}
    await members.stop()


async def test_a_connection_that_left_is_not_joined_again(fast):
    layer, members = FakeLayer(), Membership()
    await members.join(layer, "station-1", "chan!a")
    await members.join(layer, "station-2", "chan!b")
    await members.leave(layer, "station-2", "chan!b")
    await until(lambda: members.tokens)
    rejoined = members.rejoined
    layer.restart()
    await until(lambda: members.rejoined > rejoined and layer.groups)
    assert layer.groups == {"station-1": {"chan!a"}}
    await members.stop()


async def test_each_connection_joins_again_after_the_refresh_interval(fast, settings):
    settings.OCPP_GROUP_REFRESH_SECONDS = 0.2
    layer, members = FakeLayer(), Membership()
    await members.join(layer, "station-1", "chan!a")
    layer.groups.clear()  # expired (the marker stays: Redis did not restart)
    await until(lambda: layer.groups.get("station-1"), 3)
    await members.stop()


async def test_redis_away_the_watcher_keeps_looking(fast):
    layer, members = FakeLayer(), Membership()

    async def refused(key):
        raise ConnectionError("Redis is restarting")

    await members.join(layer, "station-1", "chan!a")
    await until(lambda: members.tokens)
    real_get, layer.redis.get = layer.redis.get, refused
    layer.restart()
    await asyncio.sleep(0.1)
    assert layer.groups == {}
    layer.redis.get = real_get  # back, empty
    await until(lambda: layer.groups.get("station-1"))
    await members.stop()


async def test_the_in_memory_layer_needs_no_watcher():
    from channels.layers import InMemoryChannelLayer

    members = Membership()
    await members.join(InMemoryChannelLayer(), "station-1", "chan!a")
    assert members._watcher is None


async def test_a_join_that_fails_is_tried_again_next_round(fast):
    layer, members = FakeLayer(), Membership()
    await members.join(layer, "station-1", "chan!a")
    await until(lambda: members.tokens)
    real_add, refusals = layer.group_add, []

    async def loading(group, channel):  # Redis answers, but refuses writes for a moment
        if len(refusals) < 3:
            refusals.append(channel)
            raise ConnectionError("LOADING Redis is loading the dataset in memory")
        await real_add(group, channel)

    layer.group_add = loading
    layer.restart()
    await until(lambda: layer.groups.get("station-1"))
    assert refusals == ["chan!a"] * 3  # not left out until the hourly refresh
    await members.stop()
