"""Websocket routes of the whole project. Apps add theirs here (stations adds /ocpp/)."""

from __future__ import annotations

from django.urls import path

from portal.consumers import LiveConsumer

browser_websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
]


def station_websocket_urlpatterns() -> list:
    """The OCPP endpoint, when the stations app provides one."""
    try:
        from stations.routing import websocket_urlpatterns
    except ModuleNotFoundError as exc:
        # Only a missing stations.routing means "no OCPP endpoint"; an import error inside
        # it is a bug and must not silently turn every station away with 404.
        if exc.name != "stations.routing":
            raise
        return []
    return list(websocket_urlpatterns)


__all__ = ["browser_websocket_urlpatterns", "station_websocket_urlpatterns"]
