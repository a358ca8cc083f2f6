"""The Redis channel layer: many messages per Redis round trip, and a pool that waits.

channels_redis (4.3) receives the messages of a process's channels one at a time, and each
costs four round trips to Redis, one after the other: a clean-up script, BZPOPMIN, a ZADD to
a backup queue and, before the next message may be received, a ZPOPMIN from it. A recompute
that sends 83 setpoints to stations held by one process therefore queued them behind each
other in that process's receive loop: measured 0.7 ms a message on a quiet machine and about
2 ms with the portal busy, 80 to 110 ms between the first and the last command being claimed
(the load-management benchmark's slowest event, docs/BENCHMARKS.md).

Here one Lua script pops up to ``RECEIVE_BATCH`` messages at once; they wait in the process
and are handed out without touching Redis. Only an empty queue falls back to the library's
blocking receive. The guarantee stays the library's: the popped batch is copied to the
channel's backup queue in the same script, and the next script call drops it (the batch has
then reached the process) or, when the call that popped it was cancelled before its answer
arrived, puts it back in front of the queue. Messages the process holds when it dies are lost,
as those already in channels' per-channel buffers always were; the database is the truth
(``stations.commands``) and every consumer recovers from a lost message.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool

log = logging.getLogger(__name__)

#: Messages popped per round trip. A recompute sends one per station whose setpoint changes.
RECEIVE_BATCH = 100

# KEYS: none (the layer's other scripts pass names as ARGV as well).
# ARGV: channel key, backup key, batch size, "1" when the last batch reached the process.
_POP_BATCH = """
if ARGV[4] == '1' then
    redis.call('DEL', ARGV[2])
else
    local backed_up = redis.call('ZRANGE', ARGV[2], 0, -1, 'WITHSCORES')
    for i = #backed_up, 1, -2 do
        redis.call('ZADD', ARGV[1], backed_up[i], backed_up[i - 1])
    end
    redis.call('DEL', ARGV[2])
end
local popped = redis.call('ZPOPMIN', ARGV[1], ARGV[3])
for i = 1, #popped, 2 do
    redis.call('ZADD', ARGV[2], popped[i + 1], popped[i])
end
return popped
"""


#: Seconds a Redis command waits for a free connection of the pool before it fails.
POOL_WAIT_SECONDS = 20.0

#: Messages per script call of ``group_send_many`` (Redis runs a script without a break).
SEND_BATCH = 500

# KEYS: n channel keys (one may repeat: a process's channels share one key).
# ARGV: n messages, n capacities, n scores, the expiry cut-off, the expiry.
_SEND_MANY = """
local n = #KEYS
local cutoff, expiry = ARGV[3 * n + 1], ARGV[3 * n + 2]
local over = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], ARGV[2 * n + i], ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over = over + 1
    end
end
return over
"""


class BatchReceiveRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._prefetched: defaultdict[str, deque[bytes]] = defaultdict(deque)
        # Channel keys whose last popped batch is held here: its backup is dropped next time.
        self._batch_held: set[str] = set()

    def create_pool(self, index: int):
        """A pool that makes a command wait for a free connection when all
        ``max_connections`` are in use, instead of raising MaxConnectionsError at once. In
        the 10,000-station reconnect storm a process's 2,000 connections were all busy with
        handshakes' group_add and group_send, and each one over the limit failed its
        station's handshake (34 tracebacks in one process); now it waits its turn."""
        host = dict(self.hosts[index])
        if "address" not in host:
            return super().create_pool(index)
        address = host.pop("address")
        return BlockingConnectionPool.from_url(address, timeout=POOL_WAIT_SECONDS, **host)

    async def receive_single(self, channel: str) -> tuple[str, dict]:
        if "!" not in channel:  # a normal channel: shared by processes, never prefetched
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        assert channel.endswith("!")
        key = self.prefix + channel
        held = self._prefetched[key]
        while not held:
            connection = self.connection(self.consistent_hash(channel))
            # Cleared before the call: if it is cancelled after Redis ran it, the batch it
            # popped stays in the backup and comes back next time (at least once, as in the
            # library), rather than being dropped as acknowledged.
            acknowledged = key in self._batch_held
            self._batch_held.discard(key)
            popped = await connection.eval(
                _POP_BATCH,
                0,
                key,
                self._backup_channel_name(key),
                RECEIVE_BATCH,
                "1" if acknowledged else "0",
            )
            # No await between the script's answer and here: the batch is now held.
            if popped:
                held.extend(popped[0::2])
                self._batch_held.add(key)
                break
            # Nothing waiting: block for the next message as the library does (one at a time).
            result = await connection.bzpopmin(key, timeout=self.brpop_timeout)
            if result is not None:
                held.append(result[1])
        message = self.deserialize(held.popleft())
        if "__asgi_channel__" in message:
            channel = message.pop("__asgi_channel__")
        return channel, message

    async def group_send_many(self, messages: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """``group_send`` of each ``(group, message)``, in two round trips per Redis server
        instead of four per group: the members of every group in one pipeline, then every
        message in one script. Concurrent ``group_send`` calls (as before) needed a
        connection each, and a recompute that changed 41 setpoints at once opened 30 new ones
        first (41 sends: 9 ms with warm connections, 35-150 ms when opening them).
        Messages to one channel keep their order (rising scores)."""
        messages = list(messages)
        if not messages:
            return
        for group, message in messages:
            assert self.require_valid_group_name(group), "Group name not valid"
            assert "__asgi_channel__" not in message
        groups_by_index: defaultdict[int, list[str]] = defaultdict(list)
        for group in dict.fromkeys(group for group, _ in messages):
            groups_by_index[self.consistent_hash(group)].append(group)
        members: dict[str, list[str]] = {}
        cutoff = int(time.time()) - self.group_expiry
        for index, groups in groups_by_index.items():
            pipe = self.connection(index).pipeline(transaction=False)
            for group in groups:
                key = self._group_key(group)
                pipe.zremrangebyscore(key, min=0, max=cutoff)
                pipe.zrange(key, 0, -1)
            found = await pipe.execute()
            for group, names in zip(groups, found[1::2], strict=True):
                members[group] = [name.decode("utf8") for name in names]
        # (channel key, serialized message, capacity) per connection, in the order given.
        sends: defaultdict[int, list[tuple[str, bytes, int]]] = defaultdict(list)
        for group, message in messages:
            by_index, key_message, key_capacity = self._map_channel_keys_to_connection(
                members[group], message
            )
            for index, keys in by_index.items():
                sends[index].extend((k, key_message[k], key_capacity[k]) for k in keys)
        now = time.time()
        expiry = int(self.expiry)
        for index, items in sends.items():
            connection = self.connection(index)
            for start in range(0, len(items), SEND_BATCH):
                chunk = items[start : start + SEND_BATCH]
                # 1 µs apart: ZPOPMIN then hands out a channel's messages in this order.
                scores = [repr(now + (start + i) * 1e-6) for i in range(len(chunk))]
                over = await connection.eval(
                    _SEND_MANY,
                    len(chunk),
                    *(key for key, _, _ in chunk),
                    *(body for _, body, _ in chunk),
                    *(capacity for _, _, capacity in chunk),
                    *scores,
                    int(now) - expiry,
                    expiry,
                )
                if over:
                    log.info("%s of %s messages dropped: channels over capacity", over, len(chunk))

    async def flush(self) -> None:
        self._prefetched.clear()
        self._batch_held.clear()
        await super().flush()
