"""The charge-point simulator against a small fake central system (ocpp + websockets, no DB).

Time inside the stations runs on a `FakeClock`, so an hour of charging takes milliseconds and
the energy register can be checked to the Wh.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import pytest
import websockets
from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from stations.simulator import Car, FakeClock, Fleet, Scenario, SimStation
from stations.simulator.clock import iso

PASSWORD = "s3cret-password-16"


class CentralCP(ChargePoint):
    """Server side of one connection; logs every CALL it receives, camelCase as on the wire."""

    def __init__(self, cp_id: str, ws: Any, csms: FakeCsms) -> None:
        super().__init__(cp_id, ws, response_timeout=5)
        self.csms = csms

    async def route_message(self, raw_msg: str) -> None:
        msg = json.loads(raw_msg)
        if msg[0] == 2:
            self.csms.log.append((self.id, msg[2], msg[3]))
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, **_: Any):
        status, interval = (
            self.csms.boot_answers.pop(0)
            if self.csms.boot_answers
            else (
                "Accepted",
                300,
            )
        )
        return call_result.BootNotification(current_time=_now(), interval=interval, status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self):
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    def on_status(self, **_: Any):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str):
        return call_result.Authorize(id_tag_info={"status": self.csms.tag_status(id_tag)})

    @on(Action.start_transaction)
    async def on_start(self, id_tag: str, **kw: Any):
        if self.csms.hold_start is not None:
            await self.csms.hold_start.wait()  # never answered: the test drops the link
        if self.csms.start_errors > 0:
            self.csms.start_errors -= 1
            raise InternalError(description="database down")
        key = (self.id, kw["connector_id"], id_tag, kw["timestamp"], kw["meter_start"])
        if key not in self.csms.tx_ids:  # a re-sent StartTransaction gets the same id
            self.csms.next_tx += 1
            self.csms.tx_ids[key] = self.csms.next_tx
        return call_result.StartTransaction(
            transaction_id=self.csms.tx_ids[key],
            id_tag_info={"status": self.csms.tag_status(id_tag)},
        )

    @on(Action.stop_transaction)
    def on_stop(self, **_: Any):
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any):
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, **_: Any):
        return call_result.DataTransfer(status="Accepted")

    @on(Action.firmware_status_notification)
    def on_firmware(self, **_: Any):
        return call_result.FirmwareStatusNotification()


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FakeCsms:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, dict[str, Any]]] = []
        self.boot_answers: list[tuple[str, int]] = []
        self.start_errors = 0
        self.hold_start: asyncio.Event | None = None
        self.next_tx = 100
        self.tx_ids: dict[tuple[Any, ...], int] = {}
        self.invalid_tags: set[str] = set()
        self.cps: dict[str, CentralCP] = {}
        self.refused = 0

    def tag_status(self, id_tag: str) -> str:
        return "Invalid" if id_tag in self.invalid_tags else "Accepted"

    async def __aenter__(self) -> FakeCsms:
        self.server = await websockets.serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=["ocpp1.6"],
            process_request=self._check_auth,
        )
        port = next(iter(self.server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ocpp/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), 5)

    def _check_auth(self, connection: Any, request: Any) -> Any:
        cp_id = unquote(request.path.rsplit("/", 1)[-1])
        expected = base64.b64encode(f"{cp_id}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            self.refused += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong password\n")
        return None

    async def _handler(self, ws: Any) -> None:
        cp_id = unquote(ws.request.path.rsplit("/", 1)[-1])
        cp = CentralCP(cp_id, ws, self)
        self.cps[cp_id] = cp
        with contextlib.suppress(websockets.ConnectionClosed):
            await cp.start()

    def calls(self, action: str | None = None, cp_id: str | None = None) -> list[dict[str, Any]]:
        return [p for i, a, p in self.log if (action is None or a == action) and cp_id in (None, i)]

    def actions(self, cp_id: str | None = None) -> list[str]:
        return [a for i, a, _ in self.log if cp_id in (None, i)]

    async def wait_for(self, check: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110 - polling state that many tasks change
                await asyncio.sleep(0.005)

    async def wait_count(self, action: str, count: int, within: float = 5.0) -> None:
        await self.wait_for(lambda: len(self.calls(action)) >= count, within)

    async def call(self, cp_id: str, payload: Any) -> Any:
        return await self.cps[cp_id].call(payload, suppress=False)


@pytest.fixture
async def csms():
    async with FakeCsms() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def station(csms: FakeCsms, clock: FakeClock):
    st = SimStation("CP-1", csms.url, PASSWORD, connectors=2, clock=clock, meter_start_wh=1000)
    await st.start()
    yield st
    await st.stop()


def _sv(meter_values: dict[str, Any], measurand: str, phase: str | None = None) -> float:
    for sample in meter_values["meterValue"][0]["sampledValue"]:
        if sample.get("measurand") == measurand and sample.get("phase") == phase:
            return float(sample["value"])
    raise KeyError((measurand, phase))


def _statuses(csms: FakeCsms, connector_id: int) -> list[str]:
    return [
        p["status"] for p in csms.calls("StatusNotification") if p["connectorId"] == connector_id
    ]


async def test_boot_reports_connectors_and_takes_interval(csms, station):
    await csms.wait_count("StatusNotification", 2)
    assert csms.actions()[0] == "BootNotification"
    boot = csms.calls("BootNotification")[0]
    assert boot["chargePointVendor"] == "ChargePortalSim"
    assert _statuses(csms, 1) == ["Available"] and _statuses(csms, 2) == ["Available"]
    assert station.registration == "Accepted"
    assert station.cfg("HeartbeatInterval") == "300"


async def test_wrong_password_is_refused_at_handshake(csms, clock):
    st = SimStation("CP-X", csms.url, "wrong", clock=clock, reconnect_backoff=(0.05, 0.1))
    await st.start(wait=False)
    await csms.wait_for(lambda: csms.refused >= 1)
    assert not st.online and "401" in (st.last_error or "")
    await st.stop()
    assert csms.log == []


async def test_pending_boot_is_retried_after_the_interval(csms, clock):
    csms.boot_answers = [("Pending", 30), ("Rejected", 60)]
    st = SimStation("CP-P", csms.url, PASSWORD, clock=clock)
    await st.start(wait=False)
    await csms.wait_for(lambda: st.registration == "Pending")
    await clock.advance(29)
    assert len(csms.calls("BootNotification")) == 1
    await clock.advance(1)
    await csms.wait_for(lambda: st.registration == "Rejected")
    await clock.advance(60)
    await st.wait_online(5)
    assert csms.actions() == ["BootNotification"] * 3 + ["StatusNotification"] * 2
    await st.stop()


async def test_heartbeats_follow_the_interval(csms, clock, station):
    await clock.advance(300 * 3)
    await csms.wait_count("Heartbeat", 3)
    assert len(csms.calls("Heartbeat")) == 3


async def test_whole_session_energy_to_the_wh(csms, clock, station):
    car = Car(battery_kwh=60, soc=20, phases=3, max_current_a=16)
    tx = await station.plug_in(1, car, id_tag="CARD-1")
    assert tx is not None
    assert await tx.wait_started() == 101
    start = csms.calls("StartTransaction")[0]
    assert start == {
        "connectorId": 1,
        "idTag": "CARD-1",
        "meterStart": 1000,
        "timestamp": iso(clock.time()),
    }
    assert station.connector(1).status == "Charging"
    await clock.advance(3600)
    await csms.wait_count("MeterValues", 60)
    meter_values = csms.calls("MeterValues")
    assert len(meter_values) == 60
    last = meter_values[-1]
    assert last["transactionId"] == 101
    assert _sv(last, "Energy.Active.Import.Register") == 1000 + 11040
    assert _sv(last, "Power.Active.Import") == 11040.0
    assert [_sv(last, "Current.Import", p) for p in ("L1", "L2", "L3")] == [16.0] * 3
    assert _sv(last, "Voltage", "L1-N") == 230.0
    assert _sv(last, "SoC") == pytest.approx(20 + 11.04 / 60 * 100, abs=0.05)
    assert [_sv(m, "Energy.Active.Import.Register") for m in meter_values[:2]] == [1184, 1368]

    await station.unplug(1)
    await tx.wait_stopped()
    stop = csms.calls("StopTransaction")[0]
    assert stop["transactionId"] == 101
    assert stop["meterStop"] == 1000 + 11040
    assert stop["reason"] == "EVDisconnected"
    await csms.wait_for(lambda: _statuses(csms, 1)[-1] == "Available")
    assert _statuses(csms, 1) == ["Available", "Preparing", "Charging", "Finishing", "Available"], (
        _statuses(csms, 1)
    )
    order = [a for a in csms.actions() if a in ("Authorize", "StartTransaction", "StopTransaction")]
    assert order == ["Authorize", "StartTransaction", "StopTransaction"]


async def test_one_phase_car_gets_full_and_suspends(csms, clock, station):
    car = Car(battery_kwh=10, soc=90, phases=1, max_current_a=32)  # needs exactly 1,000 Wh
    tx = await station.plug_in(2, car, id_tag="CARD-2")
    await tx.wait_started()
    c = station.connector(2)
    assert (c.phases, c.current_a, c.power_w) == (1, 32.0, 7360.0)
    await clock.advance(3600)
    assert c.energy_register_wh == 2000
    assert c.status == "SuspendedEV" and car.soc == 100
    await csms.wait_count("MeterValues", 60)
    assert _statuses(csms, 2)[-1] == "SuspendedEV"
    last = csms.calls("MeterValues")[-1]
    assert [_sv(last, "Current.Import", p) for p in ("L1", "L2", "L3")] == [0.0] * 3


async def test_invalid_card_is_not_started(csms, station):
    csms.invalid_tags.add("STOLEN")
    assert await station.plug_in(1, Car(), id_tag="STOLEN") is None
    assert station.connector(1).status == "Preparing"
    assert csms.calls("StartTransaction") == []


def _profile(
    profile_id: int,
    stack_level: int,
    purpose: str,
    limit: float,
    *,
    valid_to: float | None = None,
    number_phases: int | None = None,
    unit: str = "A",
) -> dict[str, Any]:
    period: dict[str, Any] = {"startPeriod": 0, "limit": limit}
    if number_phases is not None:
        period["numberPhases"] = number_phases
    profile: dict[str, Any] = {
        "chargingProfileId": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Relative",
        "chargingSchedule": {"chargingRateUnit": unit, "chargingSchedulePeriod": [period]},
    }
    if valid_to is not None:
        profile["validTo"] = iso(valid_to)
    return profile


async def _set(csms: FakeCsms, connector_id: int, profile: dict[str, Any]) -> str:
    res = await csms.call(
        "CP-1", call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile)
    )
    return res.status


async def test_profiles_stack_levels_and_validto_fallback(csms, clock, station):
    assert await _set(csms, 0, _profile(1, 0, "TxDefaultProfile", 12)) == "Accepted"
    tx = await station.plug_in(1, Car(battery_kwh=100, soc=10), id_tag="CARD-1")
    await tx.wait_started()
    c = station.connector(1)
    assert (c.offered_a, c.current_a) == (12.0, 12.0)
    # A higher stack level wins; a TxProfile without a transaction is refused.
    assert await _set(csms, 0, _profile(2, 1, "TxDefaultProfile", 8)) == "Accepted"
    assert c.offered_a == 8.0
    assert await _set(csms, 2, _profile(3, 0, "TxProfile", 8)) == "Rejected"
    # A leased TxProfile for ten minutes: 10 A, then the default (8 A) again.
    lease = _profile(4, 0, "TxProfile", 10, valid_to=clock.time() + 600)
    assert await _set(csms, 1, lease) == "Accepted"
    assert (c.offered_a, c.current_a) == (10.0, 10.0)
    before = c.energy_wh
    await clock.advance(1800)
    assert c.offered_a == 8.0
    assert c.energy_wh - before == pytest.approx(10 * 690 * 600 / 3600 + 8 * 690 * 1200 / 3600)
    # Clearing the stack-level-1 default falls back to 12 A.
    res = await csms.call("CP-1", call.ClearChargingProfile(id=2))
    assert res.status == "Accepted"
    assert c.offered_a == 12.0
    res = await csms.call("CP-1", call.ClearChargingProfile(id=99))
    assert res.status == "Unknown"


async def test_profile_number_phases_and_minimum_currents(csms, clock, station):
    tx = await station.plug_in(1, Car(soc=10, min_start_current_a=10), id_tag="CARD-1")
    await tx.wait_started()
    c = station.connector(1)
    assert await _set(csms, 1, _profile(1, 0, "TxProfile", 16, number_phases=1)) == "Accepted"
    assert (c.phases, c.current_a, c.power_w) == (1, 16.0, 3680.0)
    assert await _set(csms, 1, _profile(1, 0, "TxProfile", 4)) == "Accepted"  # same id replaces
    assert (c.phases, c.current_a, c.status) == (3, 0.0, "SuspendedEVSE")
    assert await _set(csms, 1, _profile(1, 0, "TxProfile", 8)) == "Accepted"
    assert c.status == "SuspendedEV"  # the car needs 10 A to start
    assert await _set(csms, 1, _profile(1, 0, "TxProfile", 11040, unit="W")) == "Accepted"
    assert (c.current_a, c.status) == (16.0, "Charging")
    assert await _set(csms, 1, _profile(1, 0, "TxProfile", 8)) == "Accepted"
    assert c.current_a == 8.0  # once drawing it follows the offer down to 6 A


async def test_charge_point_max_profile_is_shared(csms, clock, station):
    assert await _set(csms, 1, _profile(5, 0, "ChargePointMaxProfile", 20)) == "Rejected"
    assert await _set(csms, 0, _profile(5, 0, "ChargePointMaxProfile", 20)) == "Accepted"
    tx1 = await station.plug_in(1, Car(max_current_a=32), id_tag="A")
    tx2 = await station.plug_in(2, Car(max_current_a=32), id_tag="B")
    await tx1.wait_started()
    await tx2.wait_started()
    assert [c.current_a for c in station.connectors] == [10.0, 10.0]


async def test_offline_queue_is_replayed_in_order(csms, clock, station):
    tx = await station.plug_in(1, Car(battery_kwh=100, soc=10), id_tag="CARD-1")
    assert await tx.wait_started() == 101
    await clock.advance(60)
    await station.drain()  # the first sample is answered (else it is legitimately re-sent)
    await station.drop_connection()
    seen = len(csms.log)
    await clock.advance(240)  # four samples while offline
    await station.unplug(1)
    # A second session entirely offline: authorized locally, started and stopped offline.
    tx2 = await station.plug_in(2, Car(battery_kwh=100, soc=10, phases=1), id_tag="CARD-2")
    assert tx2 is not None and tx2.transaction_id is None
    await clock.advance(120)
    await station.swipe(2, "CARD-2")
    assert len(csms.log) == seen and station.queued == 9
    await station.reconnect()
    await csms.wait_count("StopTransaction", 2)
    replay = [
        (a, p.get("transactionId")) for _, a, p in csms.log[seen:] if a != "StatusNotification"
    ]
    assert replay == [("MeterValues", 101)] * 4 + [
        ("StopTransaction", 101),
        ("StartTransaction", None),
        ("MeterValues", 102),
        ("MeterValues", 102),
        ("StopTransaction", 102),
    ]
    stops = csms.calls("StopTransaction")
    assert stops[0]["meterStop"] == 1000 + 11040 * 300 // 3600
    assert csms.calls("StartTransaction")[1]["meterStart"] == 1000
    assert stops[1]["meterStop"] == 1000 + 3680 * 120 // 3600  # 1-phase car at 16 A
    assert stops[1]["reason"] == "Local"
    # Statuses that changed while offline are reported after the reconnect.
    await csms.wait_for(lambda: _statuses(csms, 1)[-1] == "Available")


async def test_unanswered_start_is_resent_after_reconnect(csms, clock, station):
    csms.hold_start = asyncio.Event()
    tx = await station.plug_in(1, Car(), id_tag="CARD-1")
    await csms.wait_count("StartTransaction", 1)
    await station.drop_connection()
    hold, csms.hold_start = csms.hold_start, None
    hold.set()  # the old connection's handler ends (its answer goes nowhere)
    await station.reconnect()
    assert await tx.wait_started() == 101
    first, second = csms.calls("StartTransaction")
    assert first == second


async def test_failed_start_gives_minus_one(csms, clock, station):
    csms.start_errors = 10
    station.config["TransactionMessageAttempts"].value = "2"
    tx = await station.plug_in(1, Car(), id_tag="CARD-1")
    await csms.wait_count("StartTransaction", 1)
    await clock.advance(10)  # TransactionMessageRetryInterval
    assert await tx.wait_started() == -1
    assert len(csms.calls("StartTransaction")) == 2
    await clock.advance(60)
    await station.unplug(1)
    await csms.wait_count("StopTransaction", 1)
    assert csms.calls("MeterValues")[-1]["transactionId"] == -1
    assert csms.calls("StopTransaction")[0]["transactionId"] == -1


async def test_remote_start_and_stop(csms, clock, station):
    res = await csms.call("CP-1", call.RemoteStartTransaction(id_tag="APP-1", connector_id=2))
    assert res.status == "Accepted"
    await asyncio.sleep(0.05)
    assert station.connector(2).status == "Preparing"  # waits for the car
    tx = await station.plug_in(2, Car())
    assert await tx.wait_started() == 101
    assert csms.calls("StartTransaction")[0]["idTag"] == "APP-1"
    res = await csms.call("CP-1", call.RemoteStartTransaction(id_tag="APP-2", connector_id=2))
    assert res.status == "Rejected"
    res = await csms.call("CP-1", call.RemoteStopTransaction(transaction_id=999))
    assert res.status == "Rejected"
    res = await csms.call("CP-1", call.RemoteStopTransaction(transaction_id=101))
    assert res.status == "Accepted"
    await csms.wait_count("StopTransaction", 1)
    assert csms.calls("StopTransaction")[0]["reason"] == "Remote"
    assert station.connector(2).status == "Finishing"


async def test_remote_start_with_profile_and_plugged_car(csms, clock, station):
    await station.plug_in(1, Car())
    profile = _profile(7, 0, "TxProfile", 6)
    res = await csms.call(
        "CP-1", call.RemoteStartTransaction(id_tag="APP-1", charging_profile=profile)
    )
    assert res.status == "Accepted"
    await csms.wait_count("StartTransaction", 1)
    assert csms.calls("StartTransaction")[0]["connectorId"] == 1
    assert station.connector(1).current_a == 6.0


async def test_soft_reset_stops_sessions_and_reboots(csms, clock, station):
    tx = await station.plug_in(1, Car(), id_tag="CARD-1")
    await tx.wait_started()
    res = await csms.call("CP-1", call.Reset(type="Soft"))
    assert res.status == "Accepted"
    await csms.wait_count("BootNotification", 2)
    await station.wait_online()
    stop = csms.calls("StopTransaction")[0]
    assert stop["reason"] == "SoftReset"
    idx = csms.actions()
    assert idx.index("StopTransaction") < len(idx) - 1 - idx[::-1].index("BootNotification")
    assert station.resets == 1
    await csms.wait_for(lambda: _statuses(csms, 1)[-1] == "Preparing")


async def test_configuration_trigger_unlock_and_data_transfer(csms, clock, station):
    res = await csms.call("CP-1", call.GetConfiguration())
    keys = {k["key"]: k for k in res.configuration_key}
    assert keys["UnlockConnectorOnEVSideDisconnect"]["value"] == "true"
    assert keys["ConnectorSwitch3to1PhaseSupported"]["readonly"] is True
    assert "value" not in keys["AuthorizationKey"]  # write-only
    res = await csms.call("CP-1", call.GetConfiguration(key=["HeartbeatInterval", "Nope"]))
    assert res.unknown_key == ["Nope"]

    async def change(key: str, value: str) -> str:
        return (await csms.call("CP-1", call.ChangeConfiguration(key=key, value=value))).status

    assert await change("MeterValueSampleInterval", "30") == "Accepted"
    assert await change("HeartbeatInterval", "soon") == "Rejected"
    assert await change("NumberOfConnectors", "4") == "Rejected"
    assert await change("NoSuchKey", "1") == "NotSupported"
    assert await change("UnlockConnectorOnEVSideDisconnect", "false") == "Accepted"
    assert station.cfg_int("MeterValueSampleInterval") == 30

    before = len(csms.calls("StatusNotification"))
    res = await csms.call("CP-1", call.TriggerMessage(requested_message="StatusNotification"))
    assert res.status == "Accepted"
    await csms.wait_count("StatusNotification", before + 2)
    res = await csms.call(
        "CP-1", call.TriggerMessage(requested_message="MeterValues", connector_id=1)
    )
    assert res.status == "Accepted"
    await csms.wait_count("MeterValues", 1)
    res = await csms.call("CP-1", call.TriggerMessage(requested_message="Heartbeat"))
    await csms.wait_count("Heartbeat", 1)

    tx = await station.plug_in(1, Car(), id_tag="CARD-1")
    await tx.wait_started()
    res = await csms.call("CP-1", call.UnlockConnector(connector_id=1))
    assert res.status == "Unlocked"
    await csms.wait_count("StopTransaction", 1)
    assert csms.calls("StopTransaction")[0]["reason"] == "UnlockCommand"
    res = await csms.call("CP-1", call.UnlockConnector(connector_id=9))
    assert res.status == "NotSupported"

    res = await csms.call("CP-1", call.DataTransfer(vendor_id="com.example"))
    assert res.status == "UnknownVendorId"
    res = await csms.call("CP-1", call.DataTransfer(vendor_id="ChargePortalSim", message_id="ping"))
    assert res.status == "Accepted"


async def test_fleet_runs_a_scenario(csms, clock):
    fleet = Fleet.build(
        20,
        csms.url,
        password=PASSWORD,
        prefix="FLEET-",
        clock=clock,
        seed=1,
        scenario=Scenario(arrivals_per_hour=2, mean_stay_hours=1),
    )
    assert await fleet.start(concurrency=10) == 20
    for _ in range(12):
        await clock.advance(600)
    await csms.wait_for(lambda: len(csms.calls("StartTransaction")) >= 10)
    await clock.advance(1200)  # cars that arrived late in the run charge too
    summary = fleet.summary()
    assert summary["online"] == 20 and summary["energy_kwh"] > 0
    await fleet.stop()
    assert len({i for i, _, _ in csms.log}) == 20


@pytest.fixture(autouse=True)
async def _watchdog():
    """A hung test would hang CI: dump every task's stack and exit after 30 s."""

    async def dog():
        await asyncio.sleep(30)
        for task in asyncio.all_tasks():
            task.print_stack(limit=6, file=sys.stderr)
        print("test_simulator: a test hung for 30 s", file=sys.stderr, flush=True)
        os._exit(3)

    task = asyncio.create_task(dog())
    yield
    task.cancel()
