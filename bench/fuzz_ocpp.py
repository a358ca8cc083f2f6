"""OCPP fuzzing, long version: 100,000 generated and mutated frames against a real Uvicorn.

The frames and the answers they are owed come from tests/fuzz/frames.py (the OCPP 1.6
schemas, hypothesis); tests/fuzz/driver.py sends them and checks every answer. Here they go
over real websockets to one Uvicorn process of the portal (PostgreSQL, Redis channel layer,
production settings) from ``--connections`` stations at once, while a neighbouring station
sends MeterValues and Heartbeats and must get a CALLRESULT for each. At the end every fuzzed
connection must still answer, and frames over 64 KiB / binary frames must close only their
own connection. The server's log is scanned for tracebacks.

    .venv/bin/python bench/fuzz_ocpp.py --frames 100000 --json /tmp/fuzz.json

Prints JSON: frames, frames/s, answers by kind, failures (first 20), tracebacks in the
server log, the neighbour's calls and problems. Results: docs/RESILIENCE.md.
"""
# ruff: noqa: ASYNC109

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ocpp_bench  # noqa: E402  (database set-up, server start, helpers)
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from tests.fuzz.driver import Closed, Tally, exchange, summary  # noqa: E402
from tests.fuzz.frames import generate  # noqa: E402


class WebsocketTransport:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise Closed(exc.rcvd.code if exc.rcvd else None, str(exc)) from exc

    async def recv(self, timeout: float) -> str | None:
        try:
            message = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            raise Closed(exc.rcvd.code if exc.rcvd else None, str(exc)) from exc
        return message if isinstance(message, str) else message.decode()


def station_id(n: int) -> str:
    return f"{ocpp_bench.PREFIX}{n:05d}"


async def open_station(url: str, n: int) -> ClientConnection:
    token = base64.b64encode(f"{station_id(n)}:{ocpp_bench.PASSWORD}".encode()).decode()
    ws = await connect(
        f"{url}/{station_id(n)}",
        subprotocols=["ocpp1.6"],
        additional_headers={"Authorization": f"Basic {token}"},
        max_size=None,
        ping_interval=None,
    )
    boot = {"chargePointVendor": "Fuzz", "chargePointModel": "Bench"}
    await ws.send(json.dumps([2, "boot", "BootNotification", boot]))
    while True:  # skip the central system's own calls until our answer
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer[0] != 2:
            break
        await ws.send(json.dumps([3, answer[1], {"status": "Accepted"}]))
    assert answer[0] == 3, answer
    return ws


async def fuzz_connection(url: str, n: int, frames: list, tally: Tally) -> bool:
    """All frames over one connection; True if it is still open and answering at the end."""
    ws = await open_station(url, n)
    transport = WebsocketTransport(ws)
    try:
        for frame in frames:
            await exchange(transport, frame, tally, timeout=10)
        await ws.send(json.dumps([2, "last", "Heartbeat", {}]))
        while True:
            text = await transport.recv(10)
            if text is None or json.loads(text)[0] != 2:
                break
        alive = text is not None and json.loads(text)[1] == "last"
    except Closed as exc:
        tally.failures.append(f"station {n}: connection closed after {tally.frames}: {exc}")
        alive = False
    await ws.close()
    return alive


async def neighbour(url: str, n: int, stop: asyncio.Event, problems: list[str]) -> int:
    ws = await open_station(url, n)
    meter = {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2026-06-01T12:00:00Z", "sampledValue": [{"value": "1"}]}],
    }
    sent = 0
    while not stop.is_set():
        for action, payload in (("MeterValues", meter), ("Heartbeat", {})):
            await ws.send(json.dumps([2, f"n{sent}", action, payload]))
            try:
                answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            except (TimeoutError, ConnectionClosed) as exc:
                problems.append(f"neighbour {action}: {exc!r}")
                return sent
            sent += 1
            if answer[0] != 3:
                problems.append(f"neighbour {action}: {answer!r:.200}")
        await asyncio.sleep(0.05)
    await ws.close()
    return sent


async def documented_closes(url: str, n: int) -> dict[str, Any]:
    """A frame over 64 KiB and a binary frame: 1009 and 1003, for that connection only."""
    out = {}
    for name, data in (("oversize", "[" + " " * 70_000 + "]"), ("binary", b"\x00\x01")):
        ws = await open_station(url, n)
        await ws.send(data)
        try:
            await asyncio.wait_for(ws.recv(), 10)
            out[name] = "not closed"
        except ConnectionClosed as exc:
            out[name] = exc.rcvd.code if exc.rcvd else None
    return out


async def run(args: argparse.Namespace, frames: list) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{args.port}/ocpp"
    tally = Tally()
    problems: list[str] = []
    stop = asyncio.Event()
    neighbour_task = asyncio.create_task(neighbour(url, args.connections + 1, stop, problems))
    started = time.monotonic()
    slices = [frames[i :: args.connections] for i in range(args.connections)]
    alive = await asyncio.gather(
        *(fuzz_connection(url, i + 1, s, tally) for i, s in enumerate(slices))
    )
    elapsed = time.monotonic() - started
    closes = await documented_closes(url, 1)
    stop.set()
    neighbour_calls = await neighbour_task
    return {
        "frames": tally.frames,
        "seconds": round(elapsed, 1),
        "frames_per_s": round(tally.frames / elapsed),
        "connections_alive_at_end": sum(alive),
        "connections": args.connections,
        "documented_closes": closes,
        "neighbour_calls": neighbour_calls,
        "neighbour_problems": problems[:20],
        "server_calls_answered": tally.server_calls,
        "failures": len(tally.failures),
        "first_failures": tally.failures[:20],
        "answers": summary(tally),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20260601)
    parser.add_argument("--connections", type=int, default=4, help="fuzzed stations at once")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--db", default="ocpp_fuzz")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    args.stations = args.connections + 1
    args.portal_log_level = "WARNING"

    t0 = time.monotonic()
    frames = generate(args.frames, seed=args.seed)
    generation = time.monotonic() - t0
    print(f"generated {len(frames)} frames in {generation:.0f} s", file=sys.stderr)

    ocpp_bench.setup_portal_db(args)
    log_path = Path(f"/tmp/fuzz_ocpp_server_{args.port}.log")
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "uvicorn"),
                "portal.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(args.port),
                "--loop",
                "uvloop",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=ocpp_bench.portal_env(args),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            ocpp_bench.wait_port(args.port, server)
            result = asyncio.run(run(args, frames))
        finally:
            server.terminate()
            server.wait(timeout=30)
    server_log = log_path.read_text(errors="replace")
    result.update(
        {
            "tracebacks_in_server_log": server_log.count("Traceback (most recent call last)"),
            "server_log": str(log_path),
            "generation_seconds": round(generation),
            "seed": args.seed,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {ocpp_bench.cpu_model()}, {platform.python_version()}",
        }
    )
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
