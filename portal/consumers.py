"""The browsers' live channel: ``/ws/live/?org=<slug>``.

Authenticates in ``connect()`` from the session; joins the user's group and, when ``org``
names an organization the user belongs to, that organization's group. Anything else is
refused before accept.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from portal.live import org_group, user_group, watching
from portal.models import Membership
from portal.thread_context import in_thread_context

# In the worker thread's own context: a cache client per thread, not one per browser.
_watching = database_sync_to_async(in_thread_context(watching))


class LiveConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: list[str]
    org_id: int | None = None

    async def connect(self) -> None:
        self.groups_joined = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        groups = [user_group(user.id)]
        slug = parse_qs(self.scope.get("query_string", b"").decode()).get("org", [""])[0]
        if slug:
            org_id = await self._org_id(user.id, slug)
            if org_id is None:
                await self.close(code=4404)
                return
            groups.append(org_group(org_id))
            self.org_id = org_id
            await _watching(org_id)
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = groups
        await self.accept()
        await self.send_json({"event": "live.hello", "data": {"groups": len(groups)}})

    @database_sync_to_async
    def _org_id(self, user_id: int, slug: str) -> int | None:
        return (
            Membership.objects.filter(user_id=user_id, organization__slug=slug)
            .values_list("organization_id", flat=True)
            .first()
        )

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The live channel is one-way; a ping keeps proxies from closing an idle socket.
        if isinstance(content, dict) and content.get("event") == "ping":
            if self.org_id is not None:
                await _watching(self.org_id)  # still looking: keep the fragments coming
            await self.send_json({"event": "pong"})

    async def live_event(self, message: dict[str, Any]) -> None:
        await self.send_json(
            {
                "event": message["event"],
                "data": message.get("data", {}),
                "fragments": message.get("fragments", {}),
            }
        )
