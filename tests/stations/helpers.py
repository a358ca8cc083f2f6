"""Helpers for OCPP tests: a communicator that understands the websocket denial response."""
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from channels.testing import WebsocketCommunicator

from portal.asgi import application

_ids = itertools.count(1)


async def until(predicate, seconds: float = 2.0) -> None:
    """Wait until ``predicate()`` holds (an effect of another task or thread)."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - polling another task's effect
            await asyncio.sleep(0.01)


def basic(identity: str, password: str) -> tuple[bytes, bytes]:
    token = base64.b64encode(f"{identity}:{password}".encode()).decode()
    return (b"authorization", f"Basic {token}".encode())


class Station(WebsocketCommunicator):
    """A fake charge point speaking raw OCPP-J frames to the real ASGI application."""

    def __init__(
        self,
        path: str,
        *,
        identity: str | None = None,
        password: str | None = None,
        subprotocols: list[str] | None = None,
        denial: bool = True,
    ) -> None:
        headers = []
        if password is not None:
            headers.append(basic(identity or path.rsplit("/", 1)[-1], password))
        super().__init__(
            application,
            path,
            headers=headers,
            subprotocols=["ocpp1.6"] if subprotocols is None else subprotocols,
        )
        if denial:
            self.scope["extensions"] = {"websocket.http.response": {}}
        self.scope["client"] = ("10.0.0.7", 50000)
        self.server_calls: list[list] = []

    async def handshake(self, timeout: float = 3) -> tuple[bool, Any]:
        """(True, subprotocol) or (False, HTTP status) or (False, close code)."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.http.response.start":
            body = await self.receive_output(timeout)
            self.denial_body = body.get("body", b"")
            return False, response["status"]
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        return True, response.get("subprotocol")

    async def call(self, action: str, payload: dict, timeout: float = 3) -> list:
        unique_id = f"m{next(_ids)}"
        await self.send_json_to([2, unique_id, action, payload])
        while True:
            answer = await self.receive_json_from(timeout)
            if answer[0] == 2:  # the central system's own CALL, interleaved: keep it
                self.server_calls.append(answer)
                continue
            assert answer[1] == unique_id, answer
            return answer

    async def raw(self, text: str, timeout: float = 3) -> list:
        await self.send_to(text_data=text)
        return await self.receive_json_from(timeout)

    async def expect_call(self, timeout: float = 3) -> list:
        if self.server_calls:
            return self.server_calls.pop(0)
        message = await self.receive_json_from(timeout)
        assert message[0] == 2, message
        return message

    async def answer(self, call: list, payload: dict) -> None:
        await self.send_to(text_data=json.dumps([3, call[1], payload]))


BOOT = {
    "chargePointVendor": "Acme",
    "chargePointModel": "Wallbox 22",
    "chargePointSerialNumber": "SN-1",
    "firmwareVersion": "1.2.3",
}


@contextlib.contextmanager
def answering_backend() -> Iterator[str]:
    """A websocket server speaking ocpp1.6 that accepts every connection (the reachability
    check of the third-party mode, billing.services.station_auth_mode_set); yields its
    ``ws://127.0.0.1:<port>/ocpp`` URL. Runs in a thread: usable from synchronous tests."""
    import threading

    from websockets.sync.server import serve

    def handler(ws) -> None:
        for _ in ws:
            pass

    with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ocpp"
        finally:
            server.shutdown()
            thread.join(5)


#: Station events delivered to ``record`` (OCPP_EVENT_HOOK of the ``receiver`` fixture).
RECEIVED: list = []


def record(event) -> None:
    RECEIVED.append(event)


@contextlib.asynccontextmanager
async def portal_served() -> AsyncIterator[int]:
    """The real ASGI application served by Uvicorn in this event loop (the in-memory channel
    layer then reaches the consumers from services run through sync_to_async: asgiref hands
    their async calls back to this loop); yields its port. On leaving, Uvicorn has stopped
    and every connection's application has returned."""
    import asyncio
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            application, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (Uvicorn offers no event)
                await asyncio.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        await task
        # Without lifespan: close the request threads' database connections (they would
        # keep the test database from being dropped at the end of the run).
        from portal.asgi import django_asgi_app

        await asyncio.to_thread(django_asgi_app.threads.close_connections)
