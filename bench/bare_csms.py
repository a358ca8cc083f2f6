"""A bare OCPP 1.6J central system for benchmarks: `websockets` + the `ocpp` library, nothing
persisted, no authentication work. It answers what the simulator sends, so the portal's
figures can be compared with the cost of the protocol stack alone.

    python bench/bare_csms.py --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

_tx_ids = itertools.count(1)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class BareCentral(ChargePoint):
    @on(Action.boot_notification)
    def on_boot(self, **_: Any):
        return call_result.BootNotification(current_time=_now(), interval=300, status="Accepted")

    @on(Action.heartbeat)
    def on_heartbeat(self):
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    def on_status(self, **_: Any):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, **_: Any):
        return call_result.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action.start_transaction)
    def on_start(self, **_: Any):
        return call_result.StartTransaction(
            transaction_id=next(_tx_ids), id_tag_info={"status": "Accepted"}
        )

    @on(Action.stop_transaction)
    def on_stop(self, **_: Any):
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any):
        return call_result.MeterValues()


async def handler(ws: Any) -> None:
    cp_id = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
    if ws.subprotocol != "ocpp1.6":
        await ws.close(1002, "subprotocol ocpp1.6 required")
        return
    with contextlib.suppress(websockets.ConnectionClosed):
        await BareCentral(cp_id, ws).start()


async def main(host: str, port: int) -> None:
    async with websockets.serve(
        handler,
        host,
        port,
        subprotocols=["ocpp1.6"],
        ping_interval=None,
        compression=None,
        backlog=4096,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main(args.host, args.port))
    else:
        uvloop.run(main(args.host, args.port))
