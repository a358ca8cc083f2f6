"""Gathering the calls that arrive together into one.

A stopping ASGI process closes thousands of station connections at once, and each one's
teardown makes the same calls (record the station offline, leave its channel group); one by
one they did not finish within the shutdown's grace (docs/BENCHMARKS.md, session 13). A
``Batcher`` makes the first call at once, as before, and gathers the calls that arrive while
it is under way into the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``await add(item)`` returns ``flush(items)[i]`` for its item; ``flush`` takes up to
    ``most`` items and returns one result per item, in order, or raises (then every item of
    that call gets the exception). Up to ``at_once`` flushes run at the same time. One per
    event loop: its futures belong to the loop that created it."""

    def __init__(
        self, flush: Callable[[list[T]], Awaitable[list[R]]], *, most: int, at_once: int
    ) -> None:
        self.flush, self.most, self.at_once = flush, most, at_once
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushes: set[asyncio.Task] = set()

    async def add(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._flushes) < self.at_once:
            task = loop.create_task(self._run())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        # A caller cancelled meanwhile (a shutdown's grace ran out) cancels only its wait:
        # its item is still flushed with the others.
        return await future

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.most], self._pending[self.most :]
            try:
                results = await self.flush([item for item, _future in batch])
            except Exception as exc:
                for _item, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_item, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
