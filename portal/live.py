"""Pushing live updates to browsers: one small helper, used only after commit.

Browsers join the group of the organization they look at (``org-<id>``) and their own user
group (``user-<id>``) through portal.consumers.LiveConsumer. A message carries an event name,
optional data, and optional HTML fragments that the page swaps in by element id
(static/portal/live.js).
"""

from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from portal.layer import group_send


def org_group(organization_id: int) -> str:
    return f"org-{organization_id}"


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


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
