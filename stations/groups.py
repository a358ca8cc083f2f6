"""Station connections stay in their channel-layer groups when Redis forgets them.

Commands and setpoints reach a station through its group (``commands.station_group``), and
group membership lives in Redis: a Redis restart, or a failover to an empty replica, forgets
every member while the connections live on, and everything sent to the groups would reach
nobody until the stations reconnect. channels_redis also drops members after its
``group_expiry`` (a day).

Each connection used to join its group again every 30 s: at 10,000 stations, 333 Redis
writes a second for an event that happens a few times a year (7 % of an ASGI process's CPU
in the steady state, docs/BENCHMARKS.md). Instead, one watcher per process reads a marker
key in each Redis of the layer every ``OCPP_GROUP_CHECK_SECONDS`` (2 s). The first process
to find it missing writes a new random token; a process that finds a token other than the one
it saw last knows that Redis lost its data, and every connection of the process joins its
group again. Besides, each connection joins again every ``OCPP_GROUP_REFRESH_SECONDS``
(an hour) against the expiry; joining is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import OrderedDict
from typing import Any

from portal.batching import Batcher
from stations import conf

log = logging.getLogger(__name__)

#: Joins sent at once when every connection of a process joins again.
REJOIN_CONCURRENCY = 100
#: Group leaves sent in one pipeline, and pipelines under way at once.
LEAVES_MOST = 500
LEAVES_AT_ONCE = 2


class Membership:
    """The groups of this process's station connections (one instance per process)."""

    def __init__(self) -> None:
        # channel name -> (group, when it last joined), oldest join first.
        self.members: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.tokens: dict[int, bytes] = {}  # Redis (shard) index -> the marker last seen
        self.rejoined = 0  # times Redis was found to have forgotten (for tests, logs)
        self._watcher: asyncio.Task | None = None
        self._layer: Any = None
        self._leave_batcher: tuple[asyncio.AbstractEventLoop, Any, Batcher] | None = None

    async def join(self, layer: Any, group: str, channel: str) -> None:
        await layer.group_add(group, channel)
        self._watch(layer)
        self.members[channel] = (group, time.monotonic())
        self.members.move_to_end(channel)

    async def leave(self, layer: Any, group: str, channel: str) -> None:
        self.members.pop(channel, None)
        if not hasattr(layer, "connection") or not hasattr(layer, "_group_key"):
            await layer.group_discard(group, channel)  # the in-memory layer
            return
        await self._leaves(layer).add((group, channel))

    def _leaves(self, layer: Any) -> Batcher[tuple[str, str], None]:
        """Leaves that come together go to Redis in one pipeline per shard (a stopping
        process's thousands of teardowns each opened a Redis connection of the layer's pool
        for its one ZREM, docs/BENCHMARKS.md, session 13). Per loop and layer."""
        loop = asyncio.get_running_loop()
        found = self._leave_batcher
        if found is None or found[0] is not loop or found[1] is not layer:

            async def discard(leaves: list[tuple[str, str]]) -> list[None]:
                await _group_discard_many(layer, leaves)
                return [None] * len(leaves)

            found = self._leave_batcher = (
                loop,
                layer,
                Batcher(discard, most=LEAVES_MOST, at_once=LEAVES_AT_ONCE),
            )
        return found[2]

    def _watch(self, layer: Any) -> None:
        """Start the process's watcher with its first member (on the layer's loop)."""
        if not hasattr(layer, "connection") or not hasattr(layer, "ring_size"):
            return  # the in-memory layer forgets nothing while the process lives
        loop = asyncio.get_running_loop()
        watcher = self._watcher
        if watcher is not None and not watcher.done() and watcher.get_loop() is loop:
            if self._layer is layer:
                return
            watcher.cancel()
        if watcher is not None and watcher.get_loop() is not loop:
            # A new event loop (only tests run several in one process): the members were
            # connections of the old one.
            self.members.clear()
        self._layer = layer
        self._watcher = loop.create_task(self._run(layer))

    async def _run(self, layer: Any) -> None:
        while True:
            try:
                known = bool(self.tokens)
                if await self.forgotten(layer):
                    self.rejoined += 1
                    log.log(
                        logging.WARNING if known else logging.INFO,
                        "Redis %s the channel groups: %d connections join theirs again",
                        "lost" if known else "may have lost",
                        len(self.members),
                    )
                    await self._join_again(layer, list(self.members))
                await self._refresh_old(layer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next round looks again
                log.info("channel groups not checked: %r", exc)
            await asyncio.sleep(conf.group_check_seconds())

    async def forgotten(self, layer: Any) -> bool:
        """Whether any Redis of the layer lost its data since the last look."""
        key = f"{layer.prefix}:groups-epoch"
        lost = False
        for index in range(layer.ring_size):
            redis = layer.connection(index)
            token = await redis.get(key)
            if token is None:
                # Missing: a new Redis (or a first start). One process writes the token;
                # the others read it.
                await redis.set(key, secrets.token_hex(8), nx=True)
                token = await redis.get(key)
            seen = self.tokens.get(index)
            self.tokens[index] = token
            # The first look counts as a change only when there were members already
            # (they may have joined before the data was lost).
            if token != seen and (seen is not None or self.members):
                lost = True
        return lost

    async def _refresh_old(self, layer: Any) -> None:
        cutoff = time.monotonic() - conf.group_refresh_seconds()
        old = []
        for channel, (_group, joined) in self.members.items():
            if joined > cutoff:
                break
            old.append(channel)
        if old:
            await self._join_again(layer, old)

    async def _join_again(self, layer: Any, channels: list[str]) -> None:
        failed = 0
        for start in range(0, len(channels), REJOIN_CONCURRENCY):
            batch = [c for c in channels[start : start + REJOIN_CONCURRENCY] if c in self.members]
            results = await asyncio.gather(
                *(layer.group_add(self.members[c][0], c) for c in batch), return_exceptions=True
            )
            now = time.monotonic()
            for channel, result in zip(batch, results, strict=True):
                if channel not in self.members:  # it left meanwhile
                    continue
                group = self.members[channel][0]
                if isinstance(result, BaseException):
                    # Not joined (Redis still starting, say): first in line for the next
                    # round's refresh, rather than an hour later.
                    failed += 1
                    self.members[channel] = (group, -math.inf)
                    self.members.move_to_end(channel, last=False)
                else:
                    self.members[channel] = (group, now)
                    self.members.move_to_end(channel)
        if failed:
            log.warning("%d connections did not join their group again; retrying", failed)

    async def stop(self) -> None:
        """Stop the watcher (tests; a process's watcher otherwise lives as long as it)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        self._watcher = None


async def _group_discard_many(layer: Any, leaves: list[tuple[str, str]]) -> None:
    """channels_redis's ``group_discard`` (a ZREM of the channel from the group's key on
    the group's shard) for many at once: one pipeline per shard."""
    by_shard: dict[int, list[tuple[bytes, str]]] = {}
    for group, channel in leaves:
        by_shard.setdefault(layer.consistent_hash(group), []).append(
            (layer._group_key(group), channel)
        )
    for index, removals in by_shard.items():
        pipe = layer.connection(index).pipeline(transaction=False)
        for key, channel in removals:
            pipe.zrem(key, channel)
        await pipe.execute()


membership = Membership()
