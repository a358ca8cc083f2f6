"""The handshake: identity, credentials, subprotocol (real ASGI app, WebsocketCommunicator)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from stations.models import Station, UnknownChargePoint
from tests.stations.factories import STATION_PASSWORD, StationFactory
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]


async def test_unknown_identity_is_404_and_recorded(tenants):
    cp = FakeStation("/ocpp/NOPE-9", password="x")
    assert await cp.handshake() == (False, 404)
    unknown = await UnknownChargePoint.objects.aget(identity="NOPE-9")
    assert unknown.attempts == 1 and unknown.remote_addr == "10.0.0.7"
    cp = FakeStation("/ocpp/NOPE-9", password="x")
    assert await cp.handshake() == (False, 404)
    assert (await UnknownChargePoint.objects.aget(identity="NOPE-9")).attempts == 2


async def test_wrong_or_missing_password_is_401(station):
    assert await FakeStation("/ocpp/ALPHA-1", password="wrong").handshake() == (False, 401)
    assert await FakeStation("/ocpp/ALPHA-1").handshake() == (False, 401)
    # Username must be the identity itself.
    other = FakeStation("/ocpp/ALPHA-1", identity="BETA-1", password=STATION_PASSWORD)
    assert await other.handshake() == (False, 401)


async def test_without_denial_extension_refuses_with_403(station):
    cp = FakeStation("/ocpp/ALPHA-1", password="wrong", denial=False)
    assert await cp.handshake() == (False, 1000)  # close before accept = HTTP 403


async def test_right_password_selects_ocpp16(station):
    cp = FakeStation(
        "/ocpp/ALPHA-1", password=STATION_PASSWORD, subprotocols=["ocpp2.0.1", "ocpp1.6"]
    )
    assert await cp.handshake() == (True, "ocpp1.6")
    assert (await Station.objects.aget(pk=station.pk)).online
    await cp.disconnect()
    assert not (await Station.objects.aget(pk=station.pk)).online


async def test_no_subprotocol_match_accepts_then_closes(station):
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD, subprotocols=["ocpp2.0.1"])
    assert await cp.handshake() == (True, None)
    close = await cp.receive_output(2)
    assert close["type"] == "websocket.close" and close["code"] == 1002
    assert not (await Station.objects.aget(pk=station.pk)).online


async def test_percent_encoded_identity(tenants):
    await sync_to_async(StationFactory)(organization=tenants.a, charge_point_id="Hof+Süd")
    cp = FakeStation("/ocpp/Hof%2BS%C3%BCd", identity="Hof+Süd", password=STATION_PASSWORD)
    assert (await cp.handshake())[0] is True
    await cp.disconnect()


async def test_identity_with_slash_is_404(station):
    cp = FakeStation("/ocpp/x/ALPHA-1", identity="ALPHA-1", password=STATION_PASSWORD)
    assert await cp.handshake() == (False, 404)
