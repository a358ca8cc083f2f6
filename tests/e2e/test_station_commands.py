"""The station page's commands across processes on PostgreSQL and Redis: the simulator holds
its socket on one portal process; the commands come from this test process (as from any web
process) through the Redis channel layer; the deletion closes the socket held elsewhere."""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import sync_to_async

from stations import services
from stations.display_image import design_image
from stations.models import Station, StationCommand
from stations.simulator import SimStation
from tests.stations.factories import STATION_PASSWORD, StationFactory


async def finished(command, timeout: float = 15) -> StationCommand:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while True:
            row = await StationCommand.objects.aget(pk=command.pk)
            if row.status != "pending":
                return row
            await asyncio.sleep(0.1)


async def test_display_meter_setting_and_delete_across_processes(portal_processes, tenants):
    station = await sync_to_async(StationFactory)(
        organization=tenants.a, charge_point_id="E2E-PAGE-1", name="Garage", connectors=2
    )
    (portal,) = portal_processes(1)
    sim = SimStation("E2E-PAGE-1", f"{portal.ws_url}/ocpp/", STATION_PASSWORD, meter_start_wh=777)
    await sim.start()
    try:
        fresh = await Station.objects.aget(pk=station.pk)
        image = design_image("heart")
        display = await sync_to_async(services.display_set)(
            station=fresh, image=image, source="design:heart"
        )
        assert (await finished(display)).status == "accepted"
        assert sim.display_frames == [f.tobytes() for f in image.frames]

        meter = await sync_to_async(services.show_meter)(station=fresh, connector_id=1)
        row = await finished(meter)
        assert json.loads(row.response["data"])["energyWh"] == 777

        fresh = await Station.objects.aget(pk=station.pk)
        lock = await sync_to_async(services.cable_lock_set)(station=fresh, fixed=True)
        assert (await finished(lock)).status == "accepted"
        assert sim.cfg("UnlockConnectorOnEVSideDisconnect") == "false"

        await sync_to_async(services.station_delete_confirmed)(station=fresh, typed_name="Garage")
        async with asyncio.timeout(15):
            while sim.online:  # noqa: ASYNC110 - the portal process closes the socket
                await asyncio.sleep(0.1)
        assert not await Station.objects.filter(pk=station.pk).aexists()
    finally:
        await sim.stop()
