"""The Redis channel layer that receives many messages per round trip (portal/channel_layer.py),
against real Redis."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from portal.channel_layer import _POP_BATCH, RECEIVE_BATCH, BatchReceiveRedisChannelLayer

REDIS_URL = os.environ.get("REDIS_URL", "")

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not REDIS_URL, reason="needs Redis: set REDIS_URL"),
]


def _layer(prefix: str) -> BatchReceiveRedisChannelLayer:
    return BatchReceiveRedisChannelLayer(hosts=[REDIS_URL], prefix=prefix, capacity=1000)


@pytest.fixture
def prefix():
    return f"test-batch-{uuid.uuid4().hex[:8]}"


async def _count_round_trips(layer, monkeypatch) -> list[str]:
    """Record each script call and blocking pop the layer makes."""
    calls: list[str] = []
    connection = layer.connection(0)
    original_eval, original_bzpopmin = connection.eval, connection.bzpopmin

    async def counted_eval(*args, **kwargs):
        calls.append("eval")
        return await original_eval(*args, **kwargs)

    async def counted_bzpopmin(*args, **kwargs):
        calls.append("bzpopmin")
        return await original_bzpopmin(*args, **kwargs)

    monkeypatch.setattr(connection, "eval", counted_eval)
    monkeypatch.setattr(connection, "bzpopmin", counted_bzpopmin)
    monkeypatch.setattr(layer, "connection", lambda index: connection)
    return calls


async def test_a_burst_to_many_channels_is_received_in_one_round_trip(prefix, monkeypatch):
    sender, receiver = _layer(prefix), _layer(prefix)  # two processes
    try:
        channels = [await receiver.new_channel() for _ in range(60)]
        for n in range(3):
            await asyncio.gather(*(sender.send(c, {"type": "x", "n": n}) for c in channels))
        calls = await _count_round_trips(receiver, monkeypatch)
        got = {
            c: [(await asyncio.wait_for(receiver.receive(c), 5))["n"] for _ in range(3)]
            for c in channels
        }
        # Every message on its own channel, in the order it was sent.
        assert got == {c: [0, 1, 2] for c in channels}
        # 180 messages: two batches (100 + 80), no blocking pop (the library makes four
        # round trips per message).
        assert calls == ["eval", "eval"]
        assert RECEIVE_BATCH == 100
    finally:
        await receiver.flush()


async def test_waits_for_a_message_sent_later(prefix):
    sender, receiver = _layer(prefix), _layer(prefix)
    try:
        channel = await receiver.new_channel()
        waiting = asyncio.ensure_future(receiver.receive(channel))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await sender.send(channel, {"type": "x", "n": 7})
        assert (await asyncio.wait_for(waiting, 5))["n"] == 7
    finally:
        await receiver.flush()


async def test_group_messages_reach_each_member(prefix):
    sender, receiver = _layer(prefix), _layer(prefix)
    try:
        members = [await receiver.new_channel() for _ in range(5)]
        for m in members:
            await receiver.group_add("station-1", m)
        await sender.group_send("station-1", {"type": "x", "n": 1})
        got = [await asyncio.wait_for(receiver.receive(m), 5) for m in members]
        assert [g["n"] for g in got] == [1] * 5
    finally:
        await receiver.flush()


async def test_a_batch_popped_by_a_cancelled_call_comes_back(prefix):
    """The script ran in Redis but its answer never reached the process (the receiving
    task was cancelled): the batch waits in the backup queue and is received next time."""
    sender, receiver = _layer(prefix), _layer(prefix)
    try:
        channels = [await receiver.new_channel() for _ in range(3)]
        for c in channels:
            await sender.send(c, {"type": "x", "to": c})
        key = receiver.prefix + receiver.non_local_name(channels[0])
        connection = receiver.connection(receiver.consistent_hash(key[len(receiver.prefix) :]))
        lost = await connection.eval(
            _POP_BATCH, 0, key, receiver._backup_channel_name(key), RECEIVE_BATCH, "0"
        )
        assert len(lost) == 6  # three (message, score) pairs, now only in the backup
        got = [await asyncio.wait_for(receiver.receive(c), 5) for c in channels]
        assert [g["to"] for g in got] == channels
    finally:
        await receiver.flush()


async def test_a_received_batch_is_not_received_again(prefix):
    sender, receiver = _layer(prefix), _layer(prefix)
    try:
        channels = [await receiver.new_channel() for _ in range(4)]
        for c in channels:
            await sender.send(c, {"type": "x", "first": True})
        for c in channels:
            assert (await asyncio.wait_for(receiver.receive(c), 5))["first"]
        await sender.send(channels[0], {"type": "x", "first": False})
        assert not (await asyncio.wait_for(receiver.receive(channels[0]), 5))["first"]
        for c in channels[1:]:  # nothing came back from the backup queue
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(receiver.receive(c), 0.3)
        key = receiver.prefix + receiver.non_local_name(channels[0])
        connection = receiver.connection(0)
        # The next script call dropped the acknowledged batch's backup.
        assert await connection.zcard(receiver._backup_channel_name(key)) == 0
    finally:
        await receiver.flush()


async def test_normal_channels_are_received_as_the_library_does(prefix):
    sender, receiver = _layer(prefix), _layer(prefix)
    try:
        await sender.send("shared-work", {"type": "x", "n": 1})
        assert (await asyncio.wait_for(receiver.receive("shared-work"), 5))["n"] == 1
        assert not receiver._prefetched
    finally:
        await receiver.flush()


async def test_group_send_many_reaches_every_member_in_order(prefix, monkeypatch):
    sender, process_a, process_b = _layer(prefix), _layer(prefix), _layer(prefix)
    try:
        a = [await process_a.new_channel() for _ in range(30)]
        b = [await process_b.new_channel() for _ in range(30)]
        for i in range(30):  # a station's group: its connection in one of the processes
            await process_a.group_add(f"station-{i}", a[i] if i % 2 else b[i])
        await process_a.group_add("browsers", a[0])
        await process_a.group_add("browsers", b[0])
        messages = [(f"station-{i}", {"type": "x", "n": n}) for n in range(3) for i in range(30)]
        messages += [("browsers", {"type": "x", "n": 9}), ("nobody-joined", {"type": "x"})]
        calls = await _count_round_trips(sender, monkeypatch)
        pipelines = []
        real_pipeline = sender.connection(0).pipeline

        def counted_pipeline(*args, **kwargs):
            pipelines.append(1)
            return real_pipeline(*args, **kwargs)

        monkeypatch.setattr(sender.connection(0), "pipeline", counted_pipeline)
        await sender.group_send_many(messages)
        assert pipelines == [1] and calls == ["eval"]  # two round trips in all
        for i in range(30):
            layer, channel = (process_a, a[i]) if i % 2 else (process_b, b[i])
            got = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(3)]
            assert got == [0, 1, 2], (i, got)
        assert (await asyncio.wait_for(process_a.receive(a[0]), 5))["n"] == 9
        # b[0] had its three station messages and the browsers' one, in the order sent.
    finally:
        await process_a.flush()


async def test_group_send_many_drops_what_is_over_capacity(prefix):
    sender = BatchReceiveRedisChannelLayer(hosts=[REDIS_URL], prefix=prefix, capacity=2)
    receiver = _layer(prefix)
    try:
        channel = await receiver.new_channel()
        await receiver.group_add("g", channel)
        await sender.group_send_many([("g", {"type": "x", "n": n}) for n in range(5)])
        got = [(await asyncio.wait_for(receiver.receive(channel), 5))["n"] for _ in range(2)]
        assert got == [0, 1]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(receiver.receive(channel), 0.3)
    finally:
        await receiver.flush()


async def test_a_full_connection_pool_makes_commands_wait_instead_of_failing(prefix):
    """Two connections for 40 concurrent group operations: each waits for a free one (the
    library's pool raised MaxConnectionsError for every command over the limit)."""
    layer = BatchReceiveRedisChannelLayer(
        hosts=[{"address": REDIS_URL, "max_connections": 2}], prefix=prefix
    )
    receiver = _layer(prefix)
    try:
        channels = [await receiver.new_channel() for _ in range(40)]
        await asyncio.gather(*(layer.group_add(f"g{i}", c) for i, c in enumerate(channels)))
        await asyncio.gather(*(layer.group_send(f"g{i}", {"type": "x"}) for i in range(40)))
        for c in channels:
            await asyncio.wait_for(receiver.receive(c), 5)
    finally:
        await receiver.flush()
