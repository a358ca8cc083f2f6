"""``portal.batching.Batcher``: the first call goes at once, the calls that arrive meanwhile
are gathered, each caller gets its own item's result."""

from __future__ import annotations

import asyncio

import pytest

from portal.batching import Batcher


async def test_a_lone_call_goes_at_once_and_those_meanwhile_are_gathered():
    flushed: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        if len(flushed) == 1:
            await gate.wait()  # the first call is under way while others arrive
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(flush, most=3, at_once=1)
    first = asyncio.ensure_future(batcher.add(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert flushed == [[1]]
    rest = [asyncio.ensure_future(batcher.add(n)) for n in range(2, 9)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60, 70, 80]
    assert flushed == [[1], [2, 3, 4], [5, 6, 7], [8]]


async def test_up_to_at_once_flushes_run_together():
    running = 0
    most_running = 0

    async def flush(items: list[int]) -> list[None]:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        await asyncio.sleep(0.01)
        running -= 1
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(flush, most=2, at_once=3)
    await asyncio.gather(*(batcher.add(n) for n in range(20)))
    assert most_running == 3


async def test_a_failed_flush_fails_its_items_only():
    async def flush(items: list[int]) -> list[int]:
        if 2 in items:
            raise ValueError("bad batch")
        return items

    batcher: Batcher[int, int] = Batcher(flush, most=2, at_once=1)
    results = await asyncio.gather(*(batcher.add(n) for n in range(1, 6)), return_exceptions=True)
    # Gathered as [1, 2], [3, 4], [5]: the first batch fails, the others do not.
    assert [str(r) for r in results[:2]] == ["bad batch", "bad batch"]
    assert results[2:] == [3, 4, 5]


async def test_a_cancelled_caller_leaves_its_item_in_the_batch():
    flushed: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        await gate.wait()
        return items

    batcher: Batcher[int, int] = Batcher(flush, most=5, at_once=1)
    waiter = asyncio.ensure_future(batcher.add(7))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiter.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0)
    assert flushed == [[7]]
