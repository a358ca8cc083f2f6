"""The one ASGI application: HTTP (Django), browser websockets (session-authenticated) and
station websockets (OCPP, authenticated by the station's own HTTP Basic credentials).

Serve with Uvicorn (``uvicorn portal.asgi:application``): it has no websocket lifetime limit
(Daphne closes every socket after 24 h by default) and supports the websocket denial response
that OCPP's handshake errors (401, 404) need.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django
from django.core.signals import request_finished

django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application

from django.conf import settings  # noqa: E402

from portal.http_threads import (  # noqa: E402
    PooledThreadsASGIHandler,
    close_request_connections,
)

# HTTP requests run on a few long-lived threads that keep their database connections
# (portal/http_threads.py); a request beyond them gets a thread of its own, whose connections
# are closed when it ends. Only for requests that came through this handler (not the test
# clients').
django_asgi_app = PooledThreadsASGIHandler(threads=settings.HTTP_THREADS)
request_finished.connect(close_request_connections, sender=PooledThreadsASGIHandler)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from portal import collector  # noqa: E402
from portal.routing import (  # noqa: E402
    browser_websocket_urlpatterns,
    station_websocket_urlpatterns,
)
from stations.admission import denied_handshake_log_filter_install  # noqa: E402


class _WebsocketRouter:
    """Stations do not send an Origin header and authenticate themselves; browsers do and
    must come from an allowed host, with the session cookie."""

    def __init__(self) -> None:
        self.stations = URLRouter(station_websocket_urlpatterns())
        self.browsers = AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(browser_websocket_urlpatterns))
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"].startswith("/ocpp/"):
            return await self.stations(scope, receive, send)
        return await self.browsers(scope, receive, send)


denied_handshake_log_filter_install()
_router = ProtocolTypeRouter({"http": django_asgi_app, "websocket": _WebsocketRouter()})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Adds the lifespan protocol: starts the in-process periodic runner where configured."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                collector.collector_tune()  # the code is loaded: see portal/collector.py
                if settings.PERIODIC_IN_PROCESS:
                    from portal.periodic import start_in_process_beat

                    start_in_process_beat()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(django_asgi_app.threads.close_connections)
                await send({"type": "lifespan.shutdown.complete"})
                return
    return await _router(scope, receive, send)
