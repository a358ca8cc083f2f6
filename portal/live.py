"""Pushing live updates to browsers: one small helper, used only after commit.

Browsers join the group of the organization they look at (``org-<id>``) and their own user
group (``user-<id>``) through portal.consumers.LiveConsumer. A message carries an event name,
optional data, and optional HTML fragments that the page swaps in by element id
(static/portal/live.js).

Rendering fragments costs more than anything else on the OCPP path, and most of the time no
browser looks: an organization's fragments are rendered only while it is *watched*, i.e. a
browser joined its group within ``WATCH_SECONDS`` (live.js pings every 30 s and each ping
renews the mark). Each process remembers the answer for ``WATCHED_MEMO_SECONDS``, so a browser
that has just connected may miss the changes of its first second (its page was rendered a
moment before, so it shows the state of that moment either way).

Only browsers join an organization's group, and each one marks it watched: an organization
nobody watches has an empty group, and station events are not sent to it at all
(``push_org_async``, ``stations.live.station_event``). A group send costs several Redis
commands even to nobody: in a reconnect storm, five of the eight group sends a station
caused were such sends (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import transaction

from portal.layer import group_send
from portal.thread_context import in_thread_context


def org_group(organization_id: int) -> str:
    return f"org-{organization_id}"


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


WATCH_SECONDS = 75
WATCHED_MEMO_SECONDS = 1.0
_watched_memo: dict[int, tuple[float, bool]] = {}


def _watch_key(organization_id: int) -> str:
    return f"live:watched:{organization_id}"


def watching(organization_id: int) -> None:
    """A browser looks at the organization (on connect and on every ping of live.js)."""
    cache.set(_watch_key(organization_id), 1, timeout=WATCH_SECONDS)
    _watched_memo.pop(organization_id, None)


def _remembered(organization_id: int) -> bool | None:
    """This process's answer of the last ``WATCHED_MEMO_SECONDS``, if any."""
    memo = _watched_memo.get(organization_id)
    return memo[1] if memo is not None and memo[0] > time.monotonic() else None


def watched(organization_id: int | None) -> bool:
    """Whether any browser looks at the organization's pages (so fragments are worth it)."""
    if organization_id is None:
        return False
    remembered = _remembered(organization_id)
    if remembered is not None:
        return remembered
    value = bool(cache.get(_watch_key(organization_id)))
    _watched_memo[organization_id] = (time.monotonic() + WATCHED_MEMO_SECONDS, value)
    return value


# A look in the cache runs in a worker thread (in its own context: one cache client per
# thread): a Redis that is slow or away must not stall the event loop.
_watched_off_loop = sync_to_async(in_thread_context(watched), thread_sensitive=False)


async def watched_async(organization_id: int) -> bool:
    """``watched`` for async code: the memo without a thread hop, the cache in a thread."""
    remembered = _remembered(organization_id)
    if remembered is not None:
        return remembered
    return await _watched_off_loop(organization_id)


def _message(
    event: str, data: dict[str, Any] | None, fragments: dict[str, str] | None
) -> dict[str, Any]:
    return {"type": "live.event", "event": event, "data": data or {}, "fragments": fragments or {}}


def push(
    group: str,
    event: str,
    *,
    data: dict[str, Any] | None = None,
    fragments: dict[str, str] | None = None,
) -> None:
    """Send after the current transaction commits (immediately when none is open)."""
    message = _message(event, data, fragments)

    def send() -> None:
        group_send(group, message)

    transaction.on_commit(send)


async def push_async(
    group: str,
    event: str,
    *,
    data: dict[str, Any] | None = None,
    fragments: dict[str, str] | None = None,
) -> None:
    """From async code (consumers) that has already committed its writes."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, _message(event, data, fragments))


async def push_org_async(
    organization_id: int,
    event: str,
    *,
    data: dict[str, Any] | None = None,
    fragments: dict[str, str] | None = None,
) -> None:
    """``push_async`` to the organization's group, and nothing while no browser watches it."""
    if await watched_async(organization_id):
        await push_async(org_group(organization_id), event, data=data, fragments=fragments)
