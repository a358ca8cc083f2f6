"""One ASGI process of the portal: Uvicorn on a listening socket that a second process may
share while it takes over (``python -m portal.serve --port 8001``).

Why not ``uvicorn portal.asgi:application --port 8001``: a restart would then stop the old
process before the new one can listen on the port, and for those seconds (4-20 s on the
2-core benchmark machine: the old process's 5 s grace, then the new one's start) every
browser gets a 503 and every station a refused reconnect. Here the port is bound with
``SO_REUSEPORT``, so ``deploy/topology restart-asgi`` starts the new process beside the old
one, waits until it answers, and only then stops the old one: the stations it closes
reconnect at once to a process that is up, warm and has its connections open.

Each process also listens on a socket of its own in Linux's abstract namespace,
``control_address(pid)``: a health check through the shared port may reach either process,
this one only the process it names.

The options are the production ones (docs/OPERATIONS.md explains each); the systemd unit
and ``deploy/topology`` both run this module.
"""

from __future__ import annotations

import argparse
import os
import socket

import uvicorn

#: A reconnect storm of thousands of stations queues here, not refused.
BACKLOG = 4096


def control_address(pid: int) -> str:
    """The abstract unix socket of process ``pid`` (no file: nothing to clean up after a
    crash, no path length to mind)."""
    return f"\0portal-asgi-{pid}"


def shared_listener(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A TCP listener that the next process of this port can bind as well (SO_REUSEPORT):
    the kernel spreads new connections over both until the old one closes its listener.
    Only sockets of the same user that all set SO_REUSEPORT share; a port held by anything
    else still fails with 'Address already in use'."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def control_listener(pid: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(control_address(pid))
    sock.listen(16)
    return sock


def config(args: argparse.Namespace) -> uvicorn.Config:
    return uvicorn.Config(
        "portal.asgi:application",
        # nginx on loopback is the only client: trust its X-Forwarded-For/-Proto.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        ws_max_size=65536,
        # Some chargers ignore websocket pings; OCPP Heartbeats tell us who is alive.
        ws_ping_interval=0.0,
        backlog=args.backlog,
        # A stopping process closes its stations' sockets and has this long to record them
        # offline (stations/disconnects.py).
        timeout_graceful_shutdown=5,
        access_log=False,
        log_level=args.log_level,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m portal.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=BACKLOG)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    server_config = config(args)
    # The application is imported before the port is bound: the kernel hands a listening
    # socket its share of new connections at once, and those would wait in its queue for the
    # seconds Django takes to start while the old process could have served them.
    server_config.load()
    sockets = [shared_listener(args.host, args.port, args.backlog), control_listener(os.getpid())]
    uvicorn.Server(server_config).run(sockets=sockets)


if __name__ == "__main__":
    main()
