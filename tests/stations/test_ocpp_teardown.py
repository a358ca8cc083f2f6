"""A connection that closes while one of its handlers is still at work: the handler is stopped
before the connection forgets its station (found by the fleet benchmark's reconnect storm,
where a slow channel layer at teardown left handlers running without a station)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from channels.layers import get_channel_layer

from stations import services
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]


async def test_close_during_boot_stops_the_handler_first(station, monkeypatch, caplog):
    storing = threading.Event()
    real_boot = services.boot

    def slow_boot(*args, **kwargs):
        storing.set()
        time.sleep(0.3)
        return real_boot(*args, **kwargs)

    monkeypatch.setattr(services, "boot", slow_boot)
    cp = FakeStation(f"/ocpp/{station.charge_point_id}", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    layer = get_channel_layer()
    real_discard = layer.group_discard

    async def slow_discard(*args, **kwargs):
        await asyncio.sleep(0.6)  # Redis under a reconnect storm
        return await real_discard(*args, **kwargs)

    monkeypatch.setattr(layer, "group_discard", slow_discard)
    await cp.send_json_to([2, "boot-1", "BootNotification", BOOT])
    assert await asyncio.to_thread(storing.wait, 2)
    with caplog.at_level(logging.ERROR):
        await cp.disconnect(timeout=5)
        await asyncio.sleep(0.5)  # the boot's database call returns meanwhile
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await station.arefresh_from_db()
    assert not station.online


async def test_a_disconnect_takes_no_hop_through_channels_sync_thread(station, monkeypatch):
    """Channels' websocket_disconnect closes stale database connections in its one sync
    thread: a stopping process's thousands of disconnects queued there one after the other
    and did not finish within the shutdown's grace. The station's own teardown is all a
    disconnect runs; the station is offline afterwards."""
    import channels.generic.websocket

    from stations.models import Station

    hops = []

    async def counted():
        hops.append(1)

    monkeypatch.setattr(channels.generic.websocket, "aclose_old_connections", counted)
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call("BootNotification", BOOT)
    assert (await Station.objects.aget(pk=station.pk)).online
    await cp.disconnect()
    assert not (await Station.objects.aget(pk=station.pk)).online
    assert hops == []
