"""Third-party relay: a station in mode ocpp_third_party, connected to the portal through the
real ASGI app, is relayed to a small central system started in the test (``websockets.serve``
+ the ``ocpp`` library's v16 ChargePoint)."""
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
from asgiref.sync import sync_to_async
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from billing.services import session_price, station_auth_mode_set
from portal.errors import DomainError
from stations import commands
from stations.models import ChargingSession, Connector, MeterSample, Station, StationCommand
from stations.relay import relay_url, shown_url
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]

BACKEND_INTERVAL = 123  # the portal's own would be OCPP_HEARTBEAT_INTERVAL (300)
BACKEND_TX = 777


class OtherCentralSystem(ChargePoint):
    """The other backend: accepts everything; its own transaction ids and interval."""

    @on(Action.boot_notification)
    async def on_boot(self, charge_point_vendor, charge_point_model, **kw):
        return call_result.BootNotification(
            current_time=datetime.now(UTC).isoformat(),
            interval=BACKEND_INTERVAL,
            status=RegistrationStatus.accepted,
        )

    @on(Action.status_notification)
    async def on_status(self, **kw):
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag):
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    async def on_start(self, **kw):
        return call_result.StartTransaction(
            transaction_id=BACKEND_TX, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.meter_values)
    async def on_meter_values(self, **kw):
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    async def on_stop(self, **kw):
        return call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.heartbeat)
    async def on_heartbeat(self):
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())


class Backend:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.authorization: list[str | None] = []
        self.charge_points: dict[str, OtherCentralSystem] = {}
        self.closed: list[str] = []
        self.url = ""

    async def handler(self, ws) -> None:
        path = ws.request.path
        self.paths.append(path)
        self.authorization.append(ws.request.headers.get("Authorization"))
        cp = OtherCentralSystem(unquote(path.rsplit("/", 1)[-1]), ws)
        self.charge_points[cp.id] = cp
        with contextlib.suppress(ConnectionClosed):
            await cp.start()
        self.closed.append(cp.id)


@pytest.fixture
async def backend():
    other = Backend()
    async with serve(other.handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        other.url = f"ws://127.0.0.1:{port}/ocpp"
        yield other


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def third_party(station, url: str) -> None:
    await Station.objects.filter(pk=station.pk).aupdate(
        auth_mode="ocpp_third_party", third_party_url=url
    )


async def connect() -> FakeStation:
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert await cp.handshake() == (True, "ocpp1.6")
    return cp


async def eventually(check, timeout: float = 3.0):
    for _ in range(int(timeout / 0.02)):
        if result := await check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def session_where(**filters):
    return await ChargingSession.objects.filter(**filters).afirst()


def mv(tx, ts, wh, power=None):
    values = [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
    if power is not None:
        values.append({"value": str(power), "measurand": "Power.Active.Import", "unit": "W"})
    return {
        "connectorId": 1,
        "transactionId": tx,
        "meterValue": [{"timestamp": ts, "sampledValue": values}],
    }


async def test_a_whole_session_is_relayed_and_recorded_read_only(station, backend, receiver):
    await third_party(station, backend.url)
    cp = await connect()
    assert backend.paths == ["/ocpp/ALPHA-1"]
    # The other backend answers the boot (no BOOT event here): ONLINE at the connection.
    assert [e.kind for e in receiver if e.station_id == station.pk] == ["online"]

    boot = await cp.call("BootNotification", BOOT)
    assert boot[2]["status"] == "Accepted"
    assert boot[2]["interval"] == BACKEND_INTERVAL  # answered by the other backend
    st = await eventually(
        lambda: Station.objects.filter(pk=station.pk, vendor="Acme", online=True).afirst()
    )
    assert (st.model, st.firmware_version, st.registration_status) == (
        "Wallbox 22",
        "1.2.3",
        "Accepted",
    )
    assert st.heartbeat_interval == BACKEND_INTERVAL and st.relay_error == ""

    status = {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}
    assert (await cp.call("StatusNotification", status))[0] == 3
    await eventually(
        lambda: Connector.objects.filter(
            station=station, connector_id=1, status="Preparing"
        ).aexists()
    )
    # The portal itself would answer Invalid in this mode: the other backend decides.
    answer = await cp.call("Authorize", {"idTag": "UNKNOWN1"})
    assert answer[2]["idTagInfo"]["status"] == "Accepted"
    assert (await cp.call("Heartbeat", {}))[0] == 3

    start = {
        "connectorId": 1,
        "idTag": "UNKNOWN1",
        "meterStart": 1000,
        "timestamp": "2026-03-01T10:00:00Z",
    }
    answer = await cp.call("StartTransaction", start)
    assert answer[2]["transactionId"] == BACKEND_TX
    session = await eventually(lambda: session_where(external_transaction_id=BACKEND_TX))
    assert (session.station_id, session.connector_id, session.id_tag) == (station.pk, 1, "UNKNOWN1")
    assert session.auth_status == "Accepted" and session.status == "active"
    assert session.tariff_snapshot is None and session.user_id_ref is None
    assert session.card_id_ref is None

    await cp.call("MeterValues", mv(BACKEND_TX, "2026-03-01T10:15:00Z", 3500, 11000))
    await eventually(lambda: session_where(pk=session.pk, energy_wh=2500, power_w=11000), timeout=3)
    sample = await MeterSample.objects.aget(station=station)
    assert (sample.session_id, sample.energy_wh) == (session.pk, 3500)

    # A re-sent start (reconnect) is the same session.
    assert (await cp.call("StartTransaction", start))[2]["transactionId"] == BACKEND_TX

    # The other backend calls the station; the station's answer reaches it.
    other = backend.charge_points["ALPHA-1"]
    asked = asyncio.ensure_future(other.call(call.GetConfiguration(key=["HeartbeatInterval"])))
    request = await cp.expect_call()
    assert request[2:] == ["GetConfiguration", {"key": ["HeartbeatInterval"]}]
    await cp.answer(
        request, {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False}]}
    )
    result = await asyncio.wait_for(asked, 3)
    assert result.configuration_key == [{"key": "HeartbeatInterval", "readonly": False}]

    stop = {
        "transactionId": BACKEND_TX,
        "meterStop": 8234,
        "timestamp": "2026-03-01T10:45:00Z",
        "reason": "EVDisconnected",
    }
    assert (await cp.call("StopTransaction", stop))[2]["idTagInfo"]["status"] == "Accepted"
    session = await eventually(lambda: session_where(pk=session.pk, status="completed"))
    assert (session.meter_start, session.meter_stop, session.energy_wh) == (1000, 8234, 7234)
    assert session.stop_reason == "EVDisconnected"
    assert await ChargingSession.objects.acount() == 1
    price = await sync_to_async(session_price)(session)
    assert price.price.total == 0  # never priced here

    await cp.disconnect()
    await eventually(lambda: asyncio.sleep(0, result=backend.closed == ["ALPHA-1"]))
    await eventually(lambda: Station.objects.filter(pk=station.pk, online=False).aexists())


async def test_portal_commands_are_refused_clearly(station, backend):
    await third_party(station, backend.url)
    cp = await connect()
    await cp.call("BootNotification", BOOT)
    fresh = await Station.objects.aget(pk=station.pk)
    command = await sync_to_async(commands.command_send)(
        station=fresh, action="Reset", payload={"type": "Soft"}
    )

    async def finished():
        found = await StationCommand.objects.aget(pk=command.pk)
        return found if found.status != "pending" else None

    refused = await eventually(finished)
    assert refused.status == "error"
    assert "managed by another backend" in refused.error
    assert await cp.receive_nothing(0.2)  # nothing reached the station
    await cp.disconnect()


async def test_an_unreachable_backend_closes_with_1013_and_is_recorded(station):
    url = f"ws://127.0.0.1:{free_port()}/ocpp"
    await third_party(station, url)
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    closed = await cp.receive_output(3)
    assert closed["type"] == "websocket.close" and closed["code"] == 1013
    assert "127.0.0.1" in closed["reason"] and "does not answer" in closed["reason"]
    st = await Station.objects.aget(pk=station.pk)
    assert "does not answer: connection refused" in st.relay_error
    assert st.relay_error_at is not None and not st.online


async def test_a_silent_backend_times_out(station, settings):
    settings.OCPP_RELAY_OPEN_TIMEOUT = 0.3
    writers = []
    silent = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    await third_party(station, f"ws://127.0.0.1:{port}/ocpp")
    try:
        cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
        assert (await cp.handshake())[0]
        closed = await cp.receive_output(3)
        assert closed["code"] == 1013
        st = await Station.objects.aget(pk=station.pk)
        assert "no answer within 0.3 s" in st.relay_error
    finally:
        for writer in writers:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_backend_closing_closes_the_station_and_a_reconnect_clears_the_error(
    station, backend
):
    await Station.objects.filter(pk=station.pk).aupdate(relay_error="old", relay_error_at=None)
    await third_party(station, backend.url)
    cp = await connect()
    assert (await Station.objects.aget(pk=station.pk)).relay_error == ""
    await cp.call("BootNotification", BOOT)
    await backend.charge_points["ALPHA-1"]._connection.close()
    closed = await cp.receive_output(3)
    assert closed["type"] == "websocket.close" and closed["code"] == 1013
    await eventually(lambda: Station.objects.filter(pk=station.pk, online=False).aexists())
    cp = await connect()  # the station reconnects: so does the relay
    assert (await cp.call("BootNotification", BOOT))[2]["interval"] == BACKEND_INTERVAL
    assert len(backend.paths) == 2
    await cp.disconnect()


async def test_basic_auth_from_the_url_and_an_identity_already_in_it(station, backend):
    url = backend.url.replace("ws://", "ws://cs-user:s3cret@") + "/ALPHA-1"
    await third_party(station, url)
    cp = await connect()
    assert backend.paths == ["/ocpp/ALPHA-1"]
    expected = base64.b64encode(b"cs-user:s3cret").decode()
    assert backend.authorization == [f"Basic {expected}"]
    await cp.disconnect()


async def test_saving_the_mode_checks_that_the_backend_answers(station, backend):
    fresh = await Station.objects.aget(pk=station.pk)
    dead = f"ws://u:pw@127.0.0.1:{free_port()}/ocpp"
    with pytest.raises(DomainError) as refused:
        await sync_to_async(station_auth_mode_set)(
            station=fresh, mode="ocpp_third_party", third_party_url=dead
        )
    message = str(refused.value)
    assert message.startswith(f"The backend at {shown_url(dead)} does not answer: ")
    assert "pw" not in message
    st = await Station.objects.aget(pk=station.pk)
    assert (st.auth_mode, st.third_party_url) == ("backend", "")  # nothing half-changed
    assert (fresh.auth_mode, fresh.third_party_url) == ("backend", "")
    await sync_to_async(station_auth_mode_set)(
        station=fresh, mode="ocpp_third_party", third_party_url=backend.url
    )
    st = await Station.objects.aget(pk=station.pk)
    assert (st.auth_mode, st.third_party_url) == ("ocpp_third_party", backend.url)


def test_url_rule():
    assert relay_url("wss://cs.example/ocpp", "ALPHA-1") == "wss://cs.example/ocpp/ALPHA-1"
    assert relay_url("wss://cs.example/ocpp/", "ALPHA-1") == "wss://cs.example/ocpp/ALPHA-1"
    assert relay_url("wss://cs.example/ocpp/ALPHA-1", "ALPHA-1") == (
        "wss://cs.example/ocpp/ALPHA-1"
    )
    assert relay_url("ws://cs.example", "A B") == "ws://cs.example/A%20B"
    assert relay_url("wss://u:p@cs.example/x?k=1", "Z") == "wss://u:p@cs.example/x/Z?k=1"
    assert shown_url("wss://u:p@cs.example/x") == "wss://cs.example/x"


async def test_frames_the_portal_cannot_read_are_still_relayed(station, backend):
    """Observing is read-only and never breaks the relay: bad frames go through verbatim
    (the other backend answers them), nothing is recorded from them, the next frame works."""
    await third_party(station, backend.url)
    cp = await connect()
    answer = await cp.call("StatusNotification", {"connectorId": 1, "status": "Nonsense"})
    assert answer[0] == 4  # the other backend's CALLERROR
    await cp.send_to(text_data="[2, not json")
    answer = await cp.call(
        "StartTransaction",
        {"connectorId": 1, "idTag": "X", "meterStart": -5, "timestamp": "2026-03-01T10:00:00Z"},
    )
    assert answer[2]["transactionId"] == BACKEND_TX  # the backend took it; the portal cannot
    assert (await cp.call("BootNotification", BOOT))[2]["interval"] == BACKEND_INTERVAL
    await eventually(lambda: Station.objects.filter(pk=station.pk, vendor="Acme").aexists())
    assert not await ChargingSession.objects.aexists()
    assert (await Connector.objects.aget(station=station, connector_id=1)).status == "Unknown"
    await cp.disconnect()


def test_the_relay_error_is_shown_to_the_owner(tenants, station):
    from django.urls import reverse
    from django.utils import timezone

    Station.objects.filter(pk=station.pk).update(
        auth_mode="ocpp_third_party",
        third_party_url="wss://cs-user:s3cret@cs.example/ocpp",
        relay_error="The third-party backend at cs.example does not answer: connection refused.",
        relay_error_at=timezone.now(),
    )
    client = tenants.client(tenants.owner_a)
    for url in (
        reverse("stations_detail", kwargs={"org": "alpha", "pk": station.pk}),
        f"/o/alpha/access/stations/{station.pk}/",
    ):
        html = client.get(url).content.decode()
        assert "cs.example does not answer: connection refused" in html, url
        assert (
            "wss://cs-user:***@cs.example/ocpp" in html and "s3cret" not in html.split("<form")[0]
        ), url


async def test_switching_to_third_party_makes_a_connected_station_reconnect(station):
    """A station served here when its owner hands it to another backend is asked to
    reconnect at once (code 1012), so the relay takes over without waiting for a drop."""
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    assert (await cp.call("BootNotification", BOOT))[2]["status"] == "Accepted"
    fresh = await Station.objects.aget(pk=station.pk)
    await sync_to_async(station_auth_mode_set)(
        station=fresh,
        mode="ocpp_third_party",
        third_party_url="ws://127.0.0.1:9/ocpp",
        check_reachable=False,
    )
    closed = await cp.receive_output(3)
    assert closed["type"] == "websocket.close" and closed["code"] == 1012
    assert "mode changed" in closed["reason"]
