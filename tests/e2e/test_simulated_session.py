"""The simulator against a real portal process on PostgreSQL and Redis: a whole session
(boot, status, authorize, start, meter values, stop) with the energy right to the Wh."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from stations.models import ChargingSession, Connector, MeterSample, Station
from stations.simulator import Car, FakeClock, SimStation
from tests.stations.factories import STATION_PASSWORD, RfidCardFactory, StationFactory


async def wait_until(predicate):
    async with asyncio.timeout(15):
        while not (value := await predicate()):  # noqa: ASYNC110 - polling another process's writes
            await asyncio.sleep(0.1)
    return value


@pytest.fixture
def station(tenants):
    # The owner's card: the owner may charge at the organization's private connectors.
    RfidCardFactory(organization=tenants.a, uid="CAFE0001", user=tenants.owner_a)
    return StationFactory(organization=tenants.a, charge_point_id="SIM-E2E-1", connectors=2)


async def test_simulated_station_charges_a_car_to_the_wh(portal_processes, station):
    (portal,) = portal_processes(1)
    clock = FakeClock()
    sim = SimStation(
        "SIM-E2E-1",
        f"{portal.ws_url}/ocpp/",
        STATION_PASSWORD,
        connectors=2,
        clock=clock,
        meter_start_wh=1000,
    )
    await sim.start()
    try:
        booted = await Station.objects.aget(pk=station.pk)
        assert booted.online and booted.registration_status == "Accepted"

        car = Car(battery_kwh=60, soc=20, phases=3, max_current_a=16)
        tx = await sim.plug_in(1, car, id_tag="CAFE0001")
        transaction_id = await tx.wait_started()
        session = await ChargingSession.objects.aget(pk=transaction_id)
        assert (session.meter_start, session.auth_status) == (1000, "Accepted")

        await clock.advance(1800)  # half an hour at 3 x 16 A = 5,520 Wh
        await sim.unplug(1)
        await tx.wait_stopped()

        async def stopped():
            s = await ChargingSession.objects.aget(pk=transaction_id)
            return s if s.status == "completed" else None

        session = await wait_until(stopped)
        register = sim.connector(1).energy_register_wh
        assert session.meter_stop == round(register)
        assert session.energy_wh == round(register) - 1000 == 5520
        assert session.stop_reason == "EVDisconnected"
        assert await MeterSample.objects.filter(session_id=transaction_id).acount() >= 25

        async def available():
            c = await Connector.objects.aget(station=station, connector_id=1)
            return c.status == "Available"

        await wait_until(available)
    finally:
        await sim.stop()
        # The ORM calls above ran on asgiref's thread: close its connection, or it keeps the
        # test database from being dropped at the end of the run.
        await sync_to_async(connections.close_all)()
