"""Running synchronous code from async consumers in its worker thread's own context."""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_thread = threading.local()


def in_thread_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` in its worker thread's own (lasting) context, not in the copy of the
    calling connection's that ``sync_to_async`` enters. Django keeps its cache clients per
    context (asgiref ``Local``), each with a Redis connection of its own that nothing closes
    on a websocket: in each connection's context, every station held a Redis client (10,000
    stations: Redis's default limit of clients). Per thread, a process holds a few."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        context = getattr(_thread, "context", None)
        if context is None:
            context = _thread.context = contextvars.Context()
        return context.run(fn, *args, **kwargs)

    return run
