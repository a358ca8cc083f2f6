"""Live load management end to end: 20 simulated stations on a 32 A line, a real portal
process, a Celery worker and beat, PostgreSQL and Redis. The stations' real draw is sampled
all along and must never exceed the line's limit on any phase (nor, under a metered house
connection, the connection's limit with the other loads)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from ocpp.v16 import call

from loadmgmt.models import ConnectorSetpoint, LoadGroup, StationLimits
from stations.conf import VENDOR_ID
from stations.models import StationCommand
from stations.simulator import Car, SimStation
from tests.loadmgmt.factories import METER_TOKEN, MeterFactory, TreeNodeFactory
from tests.loadmgmt.lines import grid_draw, line_of_stations
from tests.stations.factories import STATION_PASSWORD

LINE_A = 32
N = 20
ENV = {
    "LOADMGMT_CYCLE_SECONDS": "2",
    "LOADMGMT_LEASE_SECONDS": "12",
    "LOADMGMT_DEBOUNCE_SECONDS": "0.05",
}


@pytest.fixture
def line(tenants):
    group, stations = line_of_stations(tenants.a, "LM", N, LINE_A)
    # Station 20's inputs are wired to shed the line (IN1+IN2: no charging).
    StationLimits.objects.filter(station=stations[-1]).update(shedding_inputs="in1_in2")
    return group, stations


class Draw:
    """Samples the simulated stations' real per-grid-phase draw."""

    def __init__(self, sims: list[SimStation]) -> None:
        self.sims = sims
        self.worst = [0.0, 0.0, 0.0]
        self.samples = 0

    def now(self) -> list[float]:
        return grid_draw(self.sims)

    async def run(self) -> None:
        while True:
            load = self.now()
            self.samples += 1
            self.worst = [max(w, x) for w, x in zip(self.worst, load, strict=True)]
            await asyncio.sleep(0.02)


async def wait_until(predicate, seconds: float = 20):
    async with asyncio.timeout(seconds):
        while not (value := await predicate()):  # noqa: ASYNC110 - polling other processes
            await asyncio.sleep(0.1)
    return value


async def states():
    return [s async for s in ConnectorSetpoint.objects.order_by("station__charge_point_id")]


def fail_safes_accepted_and_planned(stations: int):
    """Every one of ``stations`` accepted its fail-safe profile (stack level 0) and has a
    plan: the state before any car comes."""

    async def check():
        safe = await StationCommand.objects.filter(
            action="SetChargingProfile",
            status="accepted",
            payload__csChargingProfiles__stackLevel=0,
        ).acount()
        planned = await ConnectorSetpoint.objects.exclude(decision="").acount()
        return safe >= stations and planned == stations

    return check


def settled(station_index: int, stations):
    """The car at this station has a decision, and a charging one was accepted."""

    async def check():
        state = await ConnectorSetpoint.objects.filter(station=stations[station_index]).afirst()
        if state is None or state.decision not in ("charge", "queued"):
            return None
        if state.decision == "charge" and (state.accepted_current, state.accepted_phases) != (
            state.target_current,
            state.target_phases,
        ):
            return None
        return state

    return check


@pytest.fixture
async def fleet(portal_processes, celery_processes, line):
    _, stations = line
    (portal,) = portal_processes(1, **ENV)
    workers = celery_processes(**ENV)
    sims = [
        SimStation(
            s.charge_point_id,
            f"{portal.ws_url}/ocpp/",
            STATION_PASSWORD,
            connectors=1,
            meter_interval=2,
        )
        for s in stations
    ]
    await asyncio.gather(*(sim.start() for sim in sims))
    draw = Draw(sims)
    monitor = asyncio.create_task(draw.run())
    try:
        # Every station accepted its fail-safe profile and was planned before any car comes.
        await wait_until(fail_safes_accepted_and_planned(N), 30)
        yield sims, stations, draw, [portal, *workers]
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        await asyncio.gather(*(sim.stop() for sim in sims), return_exceptions=True)
        await sync_to_async(connections.close_all)()


def car() -> Car:
    return Car(battery_kwh=80, soc=10, phases=3, max_current_a=32)


async def test_cars_share_the_line_switch_to_one_phase_queue_and_are_released(fleet):
    sims, stations, draw, _processes = fleet
    for i in range(16):
        await sims[i].plug_in(1, car(), id_tag="FREEVEND")
        state = await wait_until(settled(i, stations))
        rows = await states()
        charging = [r for r in rows if r.decision == "charge"]
        if i < 5:  # 3-phase sharing while the 6 A minimums fit: 32 // (i+1) per car
            assert state.decision == "charge" and {r.target_phases for r in charging} == {3}
        elif i < 15:  # then everyone on 1 phase, balanced over the grid phases by rotation
            assert state.decision == "charge" and {r.target_phases for r in charging} == {1}
        else:  # 5 cars per grid phase at 6 A: the 16th waits
            assert state.decision == "queued", state.reason
            assert len(charging) == 15
    assert draw.worst[0] <= LINE_A and draw.worst[1] <= LINE_A and draw.worst[2] <= LINE_A

    # The first car leaves: the waiting car is released.
    await sims[0].unplug(1)

    async def released():
        state = await settled(15, stations)()
        return state if state is not None and state.decision == "charge" else None

    await wait_until(released)

    # Station 20's shedding inputs (IN1+IN2 wired) shed the whole group to 0 A.
    await sims[N - 1]._request(
        call.DataTransfer(
            vendor_id=VENDOR_ID, message_id="Inputs", data='{"in1": true, "in2": true}'
        )
    )

    async def shed():
        return sum(draw.now()) == 0

    await wait_until(shed)
    assert draw.samples > 100
    assert max(draw.worst) <= LINE_A, draw.worst


async def test_every_station_falls_back_to_its_fail_safe_when_the_portal_is_gone(fleet):
    sims, stations, draw, processes = fleet
    for i in range(4):
        await sims[i].plug_in(1, car(), id_tag="FREEVEND")
        await wait_until(settled(i, stations))
    assert sum(draw.now()) > 0
    # Stop every process of the portal: the ASGI process, the worker and beat.
    for process in processes:
        process.stop()
    # Once the leases (12 s) end every station offers its fail-safe: station 0 6 A, others 0.
    await asyncio.sleep(14)
    offered = []
    for sim in sims[:4]:
        sim._update()
        offered.append(sim.connector(1).offered_a)
    assert offered == [6.0, 0.0, 0.0, 0.0], offered
    assert max(draw.worst) <= LINE_A


# --- a metered house connection -----------------------------------------------------------

HOUSE_A, MARGIN_A, FALLBACK_A, STALE_S = 40, 3, 12, 4


@pytest.fixture
def house(line, tenants):
    """The car park's line below a 40 A house connection with a reference meter."""
    group, _ = line
    node = TreeNodeFactory(
        organization=tenants.a,
        name="House",
        limit_l1=HOUSE_A,
        limit_l2=HOUSE_A,
        limit_l3=HOUSE_A,
        safety_margin=MARGIN_A,
        fallback_limit=FALLBACK_A,
    )
    LoadGroup.objects.filter(pk=group.pk).update(node=node)
    return MeterFactory(node=node, stale_after=STALE_S)


def post_reading(url: str, meter_id: int, current: list[float]) -> int:
    request = urllib.request.Request(
        f"{url}/api/v1/meters/{meter_id}/readings",
        data=json.dumps({"current": [round(c, 2) for c in current]}).encode(),
        headers={"Authorization": f"Bearer {METER_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


async def test_a_rising_house_load_and_then_a_stale_meter(house, fleet):
    """The meter sees the cars and the house's other loads, which rise by 1 A/s to 28 A: the
    cars give way so that the connection never carries more than 40 A on any phase. Then the
    meter goes silent: after its 4 s the node is stale and the cars share the 12 A fallback."""
    sims, stations, draw, (portal, *_workers) = fleet
    for i in range(3):
        await sims[i].plug_in(1, car(), id_tag="FREEVEND")
        await wait_until(settled(i, stations))
    started = time.monotonic()
    other = 0.0
    worst_total = [0.0, 0.0, 0.0]
    largest_step = 0.0
    while other < 28:
        previous, other = other, min(28.0, time.monotonic() - started)
        largest_step = max(largest_step, other - previous)
        cars_now = draw.now()
        # What the house connection carries at this moment: never above its limit.
        worst_total = [max(w, c + other) for w, c in zip(worst_total, cars_now, strict=True)]
        status = await asyncio.to_thread(
            post_reading, portal.url, house.pk, [c + other for c in cars_now]
        )
        assert status == 201
        await asyncio.sleep(0.2)
    # Hold the last load for a few more readings; the cars' budget is 40 - 28 - 3 = 9 A.
    for _ in range(15):
        cars_now = draw.now()
        worst_total = [max(w, c + other) for w, c in zip(worst_total, cars_now, strict=True)]
        await asyncio.to_thread(post_reading, portal.url, house.pk, [c + other for c in cars_now])
        await asyncio.sleep(0.2)
    # The meter told a gradual rise (a reading at least every 2 s, so at least 14), not one
    # jump; how many readings fit into the 28 s depends on the host's speed.
    assert largest_step < 2, largest_step
    assert max(worst_total) <= HOUSE_A, worst_total
    assert 0 < max(draw.now()) <= HOUSE_A - MARGIN_A - 28, draw.now()
    assert max(draw.worst) <= LINE_A

    # The meter goes silent: once stale (4 s), the cars get the 12 A fallback, not 9 A plus
    # whatever the house stopped telling.
    async def on_fallback():
        # More than the 9 A the stale reading left, never more than the fallback.
        return HOUSE_A - MARGIN_A - 28 < max(draw.now()) <= FALLBACK_A

    await wait_until(on_fallback, STALE_S + 15)
    await asyncio.sleep(2)
    assert max(draw.now()) <= FALLBACK_A


# --- a station that rejects profiles ------------------------------------------------------


async def test_a_station_that_rejects_profiles_is_counted_at_what_it_last_accepted(fleet):
    """Station 1 stops accepting profiles while it charges at ~10 A: the portal counts it at
    its last accepted current until its lease ends (then at its fail-safe), so the fourth car gets
    only what is left and the line is never overloaded; when it accepts again it takes part."""
    sims, stations, draw, _processes = fleet
    for i in range(3):
        await sims[i].plug_in(1, car(), id_tag="FREEVEND")
        await wait_until(settled(i, stations))
    state = await ConnectorSetpoint.objects.aget(station=stations[1])
    held = state.accepted_current
    assert state.accepted_phases == 3 and held in (10, 11)  # 32 A shared by three

    rejecting = sims[1]
    accepting = rejecting._set_profile
    rejecting._set_profile = lambda connector_id, data: "Rejected"
    await sims[3].plug_in(1, car(), id_tag="FREEVEND")

    async def counted_safely():
        state = await ConnectorSetpoint.objects.aget(station=stations[1])
        fourth = await ConnectorSetpoint.objects.aget(station=stations[3])
        if state.unresponsive_since is None or fourth.decision != "charge":
            return None
        return fourth if fourth.accepted_current == fourth.target_current else None

    fourth = await wait_until(counted_safely)
    # The rejecting station still applies what it accepted: the others share what is left.
    assert fourth.target_current <= (LINE_A - held) // 3
    assert max(draw.worst) <= LINE_A, draw.worst

    # It accepts again: offered its fail-safe first, then planned with the others.
    rejecting._set_profile = accepting

    async def back():
        state = await ConnectorSetpoint.objects.aget(station=stations[1])
        return (
            state.unresponsive_since is None
            and state.decision == "charge"
            and state.accepted_current == state.target_current
            and state.accepted_current > 0
        )

    await wait_until(back, 30)
    assert max(draw.worst) <= LINE_A, draw.worst
