# ruff: noqa: ASYNC109
"""OCPP fuzzing, short version (bench/fuzz_ocpp.py runs 100,000 frames).

Frames generated from the OCPP 1.6 schemas and mutated (tests/fuzz/frames.py) go to one
station's connection while a neighbouring station keeps charging. Properties: every frame
gets the answer docs/OCPP.md owes it (a CALLRESULT matching the response schema, the CALLERROR
of the mapping table, or nothing for CALLRESULT/CALLERROR frames); the server logs no
traceback; the connection stays open; the neighbour's answers are all CALLRESULTs; and refused
frames write nothing to the database.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps

from tests.fuzz.driver import Closed, Tally, TracebackCatcher, exchange, summary
from tests.fuzz.frames import generate
from tests.stations.factories import STATION_PASSWORD, StationFactory
from tests.stations.helpers import BOOT
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]

FRAMES = int(os.environ.get("FUZZ_FRAMES", "2500"))
SEED = int(os.environ.get("FUZZ_SEED", "20260601"))
BLOCK = 100


class CommunicatorTransport:
    """The driver's transport over Channels' in-process communicator."""

    def __init__(self, station: FakeStation) -> None:
        self.station = station

    async def send(self, text: str) -> None:
        await self.station.send_to(text_data=text)

    async def recv(self, timeout: float) -> str | None:
        try:
            message = await self.station.receive_output(timeout)
        except TimeoutError:
            return None
        if message["type"] == "websocket.close":
            raise Closed(message.get("code"), message.get("reason"))
        return message["text"]


# Columns that change on any frame the station sends (liveness), not data from the frame.
VOLATILE = {"last_seen", "online", "connected_at", "channel_name", "updated_at"}
APPEND_ONLY = {"MeterSample", "UnknownChargePoint", "MeterReading"}


def fingerprint() -> dict[str, Any]:
    """Every row of every app model (append-only tables: count and last id)."""
    out: dict[str, Any] = {}
    for model in apps.get_models():
        if model._meta.app_label not in ("portal", "stations", "billing", "loadmgmt"):
            continue
        queryset = model.objects.order_by("pk")
        if model.__name__ == "MeterSample":  # the neighbour keeps adding its own
            queryset = queryset.exclude(station__charge_point_id="NEIGHBOUR-1")
        if model.__name__ in APPEND_ONLY:
            out[model.__name__] = (queryset.count(), queryset.values_list("pk").last())
            continue
        fields = [f.attname for f in model._meta.concrete_fields if f.attname not in VOLATILE]
        out[model.__name__] = list(queryset.values_list(*fields))
    return out


async def connect(charge_point_id: str) -> FakeStation:
    cp = FakeStation(f"/ocpp/{charge_point_id}", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    answer = await cp.call("BootNotification", BOOT)
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
    return cp


async def neighbour_charges(cp: FakeStation, stop: asyncio.Event, problems: list[str]) -> int:
    """The neighbour sends MeterValues and Heartbeats throughout; every answer a CALLRESULT."""
    sent = 0
    meter = {
        "connectorId": 1,
        "meterValue": [
            {"timestamp": "2026-06-01T12:00:00Z", "sampledValue": [{"value": "1234.5"}]}
        ],
    }
    while not stop.is_set():
        for action, payload in (("MeterValues", meter), ("Heartbeat", {})):
            try:
                answer = await cp.call(action, payload, timeout=5)
            except Exception as exc:  # a close or a timeout: the neighbour was harmed
                problems.append(f"neighbour {action}: {exc!r}")
                return sent
            sent += 1
            if answer[0] != 3:
                problems.append(f"neighbour {action}: {answer!r:.300}")
        await asyncio.sleep(0.02)
    return sent


async def test_fuzzed_frames_are_answered_as_the_spec_says(tenants):
    frames = generate(FRAMES, seed=SEED)
    await sync_to_async(StationFactory)(organization=tenants.a, charge_point_id="FUZZ-1")
    await sync_to_async(StationFactory)(organization=tenants.a, charge_point_id="NEIGHBOUR-1")
    tally = Tally()
    neighbour_problems: list[str] = []
    started = time.monotonic()
    with TracebackCatcher() as logs:
        cp = await connect("FUZZ-1")
        neighbour = await connect("NEIGHBOUR-1")
        stop = asyncio.Event()
        neighbour_task = asyncio.create_task(neighbour_charges(neighbour, stop, neighbour_problems))
        transport = CommunicatorTransport(cp)
        try:
            for start in range(0, len(frames), BLOCK):
                block = frames[start : start + BLOCK]
                # Refused frames first, between two fingerprints: none of them may write.
                refused = [f for f in block if f.refused]
                before = await sync_to_async(fingerprint)()
                for frame in refused:
                    await exchange(transport, frame, tally, timeout=5)
                after = await sync_to_async(fingerprint)()
                changed = sorted(k for k in before if before[k] != after[k])
                if changed:
                    tally.failures.append(f"refused frames of block {start} wrote to {changed}")
                for frame in block:
                    if not frame.refused:
                        await exchange(transport, frame, tally, timeout=5)
        except Closed as exc:
            tally.failures.append(f"connection closed after {tally.frames} frames: {exc}")
        stop.set()
        sent = await neighbour_task
        if not any("connection closed" in f for f in tally.failures):
            assert (await cp.call("Heartbeat", {}))[0] == 3  # still open, still answering
        await cp.disconnect()
        await neighbour.disconnect()
    elapsed = time.monotonic() - started
    report = {
        "frames": tally.frames,
        "frames_per_s": round(tally.frames / elapsed),
        "neighbour_calls": sent,
        "answers": summary(tally),
    }
    print(json.dumps(report, indent=1))
    assert not logs.tracebacks, "\n\n".join(logs.tracebacks[:5])
    assert not neighbour_problems, neighbour_problems[:5]
    assert not tally.failures, f"{len(tally.failures)} failures:\n" + "\n".join(tally.failures[:15])
    assert sent > 10


@pytest.mark.parametrize(
    ("frame", "code"),
    [({"text_data": "[" + " " * 70_000 + "]"}, 1009), ({"bytes_data": b"\x00\x01"}, 1003)],
)
async def test_documented_closes_leave_the_neighbour_alone(tenants, frame, code):
    """Frames over 64 KiB and binary frames close that connection only."""
    await sync_to_async(StationFactory)(organization=tenants.a, charge_point_id="FUZZ-1")
    await sync_to_async(StationFactory)(organization=tenants.a, charge_point_id="NEIGHBOUR-1")
    cp = await connect("FUZZ-1")
    neighbour = await connect("NEIGHBOUR-1")
    await cp.send_to(**frame)
    close = await cp.receive_output(2)
    assert close["type"] == "websocket.close" and close["code"] == code
    assert (await neighbour.call("Heartbeat", {}))[0] == 3
    await neighbour.disconnect()
