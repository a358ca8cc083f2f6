"""``/healthz``: does every part this deployment needs answer?

Database always; the channel layer always (a message round trip through it); the Celery
broker only when one is configured (``REDIS_URL``). HTTP 200 only when all needed parts answer,
503 otherwise, with a JSON body naming each part.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

TIMEOUT_S = 2.0


def _check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "engine": connection.vendor}


async def _layer_round_trip() -> None:
    layer = get_channel_layer()
    # The default prefix: channels_redis receives a process's channels through one reader
    # per prefix, and once station consumers receive on "specific." a reader for another
    # prefix never gets its turn (the round trip timed out on every process with stations).
    channel = await layer.new_channel()
    token = uuid.uuid4().hex
    await layer.send(channel, {"type": "healthz", "token": token})
    message = await asyncio.wait_for(layer.receive(channel), TIMEOUT_S)
    if message.get("token") != token:
        raise RuntimeError("channel layer returned another message")


async def _check_channel_layer() -> dict[str, Any]:
    await _layer_round_trip()
    return {"ok": True, "backend": settings.CHANNEL_LAYERS["default"]["BACKEND"].split(".")[-1]}


def _check_broker() -> dict[str, Any]:
    if not settings.REDIS_URL:
        return {"ok": True, "needed": False, "detail": "no broker: periodic work runs in-process"}
    from portal.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=TIMEOUT_S)
    return {"ok": True, "needed": True}


CHECKS = {
    "database": _check_database,
    "channel_layer": _check_channel_layer,
    "broker": _check_broker,
}


@never_cache
@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    """An async view: the channel-layer round trip runs on the loop that receives for the
    stations' consumers, without a thread in between."""
    parts: dict[str, Any] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            if asyncio.iscoroutinefunction(check):
                parts[name] = await check()
            else:
                parts[name] = await sync_to_async(check)()
        except Exception as exc:  # a health check reports failures; it must not raise
            parts[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}
        parts[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    healthy = all(part["ok"] for part in parts.values())
    return JsonResponse({"ok": healthy, "parts": parts}, status=200 if healthy else 503)
