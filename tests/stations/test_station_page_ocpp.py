"""The station page's commands and settings end to end: the real ASGI app served by Uvicorn in
the test's event loop, the charge-point simulator connected over a real websocket, commands
created by the same services the pages call. Acceptance, rejection, timeout, offline and the
disconnect of a deleted station."""
# ruff: noqa: ASYNC109, ASYNC110

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from stations import commands, services
from stations.display_image import design_image, name_image
from stations.models import ConfigurationKey, Station, StationCommand
from stations.simulator import SimStation
from tests.stations.factories import STATION_PASSWORD, StationFactory
from tests.stations.helpers import BOOT, portal_served
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]


@pytest.fixture
def station(tenants):
    return StationFactory(organization=tenants.a, charge_point_id="SIMPAGE-1", name="Garage")


@pytest.fixture
async def portal_url():
    async with portal_served() as port:
        yield f"ws://127.0.0.1:{port}/ocpp/"


@pytest.fixture
async def sim(portal_url, station):
    sim = SimStation("SIMPAGE-1", portal_url, STATION_PASSWORD, connectors=2, meter_start_wh=12_345)
    await sim.start()
    yield sim
    await sim.stop()


async def fresh(station) -> Station:
    return await Station.objects.aget(pk=station.pk)


async def finished(command, timeout=5.0) -> StationCommand:
    async with asyncio.timeout(timeout):
        while True:
            row = await StationCommand.objects.aget(pk=command.pk)
            if row.status != "pending":
                return row
            await asyncio.sleep(0.03)


async def test_display_image_pushed_and_accepted(sim, station):
    image = design_image("battery")
    command = await sync_to_async(services.display_set)(
        station=await fresh(station), image=image, source="design:battery"
    )
    assert (await finished(command)).status == "accepted"
    assert sim.display_frames == [f.tobytes() for f in image.frames]


async def test_long_name_animation_fits_and_is_accepted(sim, station):
    image = name_image("A station with a very long name indeed")
    command = await sync_to_async(services.display_set)(
        station=await fresh(station), image=image, source="name"
    )
    assert (await finished(command)).status == "accepted"
    assert len(sim.display_frames) == len(image.frames) > 1


async def test_malformed_display_image_is_rejected_with_a_reason(sim, station):
    payload = design_image("bolt").station_payload()
    payload["frames"] = ["AAAA"]  # 3 bytes, not 32 x 32 x 3
    command = await sync_to_async(commands.command_send)(
        station=await fresh(station),
        action="DataTransfer",
        payload={
            "vendorId": "org.chargeportal",
            "messageId": "DisplayImage",
            "data": json.dumps(payload),
        },
    )
    row = await finished(command)
    assert row.status == "rejected" and "3 bytes" in row.response["data"]
    assert sim.display_frames == []


async def test_show_meter_answers_the_register(sim, station):
    command = await sync_to_async(services.show_meter)(station=await fresh(station), connector_id=2)
    row = await finished(command)
    assert row.status == "accepted"
    assert json.loads(row.response["data"]) == {"connectorId": 2, "energyWh": 12_345}
    assert sim.display_meter == (2, 12_345)


async def test_unlock_and_restart(sim, station):
    unlock = await sync_to_async(commands.command_send)(
        station=await fresh(station), action="UnlockConnector", payload={"connectorId": 1}
    )
    assert (await finished(unlock)).status == "accepted"
    reset = await sync_to_async(commands.command_send)(
        station=await fresh(station), action="Reset", payload={"type": "Hard"}
    )
    assert (await finished(reset)).status == "accepted"
    async with asyncio.timeout(10):
        while sim.boots < 2:  # it rebooted and came back
            await asyncio.sleep(0.05)


async def test_advanced_settings_reach_the_station(sim, station):
    modbus = await sync_to_async(services.modbus_tcp_set)(
        station=await fresh(station), enabled=True
    )
    car = await sync_to_async(services.auto_car_detection_set)(
        station=await fresh(station), enabled=True
    )
    lock = await sync_to_async(services.cable_lock_set)(station=await fresh(station), fixed=True)
    for command in (modbus, car, lock):
        assert (await finished(command)).status == "accepted"
    assert sim.cfg_bool("ModbusTcpEnabled") and sim.cfg_bool("AutoCarDetection")
    assert sim.cfg("UnlockConnectorOnEVSideDisconnect") == "false"
    keys = {k.key: k async for k in ConfigurationKey.objects.filter(station_id=station.pk)}
    assert all(k.applied_value == k.value and k.last_result == "Accepted" for k in keys.values())


async def test_setting_the_station_rejects_is_shown_and_resent(sim, station):
    sim.config["ModbusTcpEnabled"].readonly = True  # this firmware refuses the change
    command = await sync_to_async(services.modbus_tcp_set)(
        station=await fresh(station), enabled=True
    )
    assert (await finished(command)).status == "rejected"
    key = await ConfigurationKey.objects.aget(station_id=station.pk, key="ModbusTcpEnabled")
    assert key.last_result == "Rejected" and key.applied_value is None
    # Still wanted: re-sent after a reconnect, accepted once the station allows it.
    sim.config["ModbusTcpEnabled"].readonly = False
    await sim.drop_connection()
    await sim.reconnect()  # no new boot: the portal resumes and re-sends what is unapplied
    async with asyncio.timeout(5):
        while (await ConfigurationKey.objects.aget(pk=key.pk)).applied_value != "true":
            await asyncio.sleep(0.05)


async def test_fix_cable_lock_refused_when_a_car_is_plugged(sim, station):
    from portal.errors import DomainError
    from stations.simulator import Car

    await sim.plug_in(1, Car(), id_tag=None)
    async with asyncio.timeout(5):
        while not await station.connectors.filter(status="Preparing").aexists():
            await asyncio.sleep(0.05)
    with pytest.raises(DomainError, match="A car is plugged in"):
        await sync_to_async(services.cable_lock_set)(station=await fresh(station), fixed=True)
    assert not await ConfigurationKey.objects.filter(station_id=station.pk).aexists()


async def test_command_to_an_offline_station(station):
    command = await sync_to_async(services.show_meter)(station=await fresh(station), connector_id=1)
    assert command.status == "offline" and command.error == "The station is not connected."


async def test_show_meter_times_out(station):
    cp = FakeStation("/ocpp/SIMPAGE-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    assert (await cp.call("BootNotification", BOOT))[2]["status"] == "Accepted"
    command = await sync_to_async(services.show_meter)(station=await fresh(station), connector_id=1)
    call = await cp.expect_call()
    assert call[2] == "DataTransfer" and call[3]["messageId"] == "ShowMeter"
    # never answered; OCPP_CALL_TIMEOUT is 1 s in tests
    assert (await finished(command, 4)).status == "timed_out"
    await cp.disconnect()


async def test_deleting_the_station_disconnects_it(station):
    cp = FakeStation("/ocpp/SIMPAGE-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    assert (await cp.call("BootNotification", BOOT))[2]["status"] == "Accepted"
    await sync_to_async(services.station_delete_confirmed)(
        station=await fresh(station), typed_name="Garage"
    )
    while True:
        message = await cp.receive_output(3)
        if message["type"] == "websocket.close":
            break
    assert message["code"] == 4001
    assert not await Station.objects.filter(pk=station.pk).aexists()
    # Reconnecting now meets an unknown identity.
    again = FakeStation("/ocpp/SIMPAGE-1", password=STATION_PASSWORD)
    assert await again.handshake() == (False, 404)
