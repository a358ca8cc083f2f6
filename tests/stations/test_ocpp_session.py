"""Boot → status → authorize → start → meter values → stop, against the real ASGI app."""

from __future__ import annotations

import pytest

from stations.models import ChargingSession, Connector, MeterSample, Station
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]


async def connected(identity: str = "ALPHA-1", boot: bool = True) -> FakeStation:
    cp = FakeStation(f"/ocpp/{identity}", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    if boot:
        answer = await cp.call("BootNotification", BOOT)
        assert answer[2]["status"] == "Accepted"
    return cp


def start_tx(meter_start, at, connector=1, id_tag="DEADBEEF"):
    return {"connectorId": connector, "idTag": id_tag, "meterStart": meter_start, "timestamp": at}


def mv(tx, ts, wh, power=None, currents=None):
    values = [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
    if power is not None:
        values.append(
            {"value": str(power / 1000), "measurand": "Power.Active.Import", "unit": "kW"}
        )
    for phase, amps in zip(("L1", "L2", "L3"), currents or [], strict=False):
        values.append(
            {"value": str(amps), "measurand": "Current.Import", "phase": phase, "unit": "A"}
        )
    payload = {"connectorId": 1, "meterValue": [{"timestamp": ts, "sampledValue": values}]}
    if tx is not None:
        payload["transactionId"] = tx
    return payload


async def test_whole_session_energy_to_the_wh(station, card):
    cp = await connected()
    st = await Station.objects.aget(pk=station.pk)
    assert (st.vendor, st.model, st.serial_number, st.firmware_version) == (
        "Acme",
        "Wallbox 22",
        "SN-1",
        "1.2.3",
    )
    assert st.registration_status == "Accepted"

    answer = await cp.call(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}
    )
    assert answer == [3, answer[1], {}]
    assert (await Connector.objects.aget(station=station, connector_id=1)).status == "Preparing"

    answer = await cp.call("Authorize", {"idTag": "deadbeef"})
    assert answer[2]["idTagInfo"]["status"] == "Accepted"

    start = await cp.call(
        "StartTransaction",
        start_tx(1000, "2026-03-01T10:00:00Z"),
    )
    tx = start[2]["transactionId"]
    assert tx > 0 and start[2]["idTagInfo"]["status"] == "Accepted"

    await cp.call("MeterValues", mv(tx, "2026-03-01T10:15:00Z", 3750.5, 11000, [16, 16, 15.5]))
    await cp.call("MeterValues", mv(tx, "2026-03-01T10:30:00Z", 6500, 11000))
    session = await ChargingSession.objects.aget(pk=tx)
    assert session.energy_wh == 5500 and session.power_w == 11000

    stop = await cp.call(
        "StopTransaction",
        {
            "transactionId": tx,
            "meterStop": 8234,
            "timestamp": "2026-03-01T10:45:00Z",
            "reason": "EVDisconnected",
            "idTag": "DEADBEEF",
        },
    )
    assert stop[2]["idTagInfo"]["status"] == "Accepted"
    session = await ChargingSession.objects.aget(pk=tx)
    assert session.status == "completed"
    assert (session.meter_start, session.meter_stop, session.energy_wh) == (1000, 8234, 7234)
    assert session.stop_reason == "EVDisconnected"
    assert session.user_id_ref is not None and session.card_id_ref is not None
    samples = [s async for s in MeterSample.objects.filter(session_id=tx).order_by("time")]
    assert [s.energy_wh for s in samples] == [3750.5, 6500]
    assert (samples[0].current_l1, samples[0].current_l3, samples[0].power_w) == (16, 15.5, 11000)
    await cp.disconnect()


async def test_start_is_idempotent_and_stop_not_counted_twice(station, card):
    cp = await connected()
    start = start_tx(50, "2026-03-01T08:00:00Z", connector=2)
    tx = (await cp.call("StartTransaction", start))[2]["transactionId"]
    await cp.disconnect()
    cp = await connected(boot=False)  # reconnect and replay
    assert (await cp.call("StartTransaction", start))[2]["transactionId"] == tx
    stop = {"transactionId": tx, "meterStop": 1050, "timestamp": "2026-03-01T09:00:00Z"}
    await cp.call("StopTransaction", stop)
    again = await cp.call("StopTransaction", {**stop, "meterStop": 99999})
    assert again[0] == 3
    session = await ChargingSession.objects.aget(pk=tx)
    assert session.energy_wh == 1000 and session.meter_stop == 1050
    assert await ChargingSession.objects.acount() == 1
    await cp.disconnect()


async def test_unknown_transaction_stop_is_answered(station):
    cp = await connected()
    answer = await cp.call(
        "StopTransaction",
        {"transactionId": 424242, "meterStop": 10, "timestamp": "2026-03-01T09:00:00Z"},
    )
    assert answer[0] == 3 and answer[2] == {}
    await cp.disconnect()


async def test_transaction_id_minus_one(station, card):
    cp = await connected()
    tx = (
        await cp.call(
            "StartTransaction",
            start_tx(0, "2026-03-01T08:00:00Z"),
        )
    )[2]["transactionId"]
    # The station never saw our answer: its later messages say -1.
    await cp.call("MeterValues", mv(-1, "2026-03-01T08:30:00Z", 400))
    assert (await ChargingSession.objects.aget(pk=tx)).energy_wh == 400
    await cp.call(
        "StopTransaction",
        {
            "transactionId": -1,
            "meterStop": 900,
            "idTag": "DEADBEEF",
            "timestamp": "2026-03-01T09:00:00Z",
        },
    )
    session = await ChargingSession.objects.aget(pk=tx)
    assert session.status == "completed" and session.energy_wh == 900
    await cp.disconnect()


async def test_unknown_card_gets_invalid_but_a_transaction(station, tenants):
    cp = await connected()
    assert (await cp.call("Authorize", {"idTag": "00000000"}))[2]["idTagInfo"] == {
        "status": "Invalid"
    }
    start = await cp.call(
        "StartTransaction",
        start_tx(0, "2026-03-01T08:00:00Z", id_tag="00000000"),
    )
    assert start[2]["transactionId"] > 0 and start[2]["idTagInfo"]["status"] == "Invalid"
    await cp.disconnect()


async def test_1970_clock_uses_receive_time_and_keeps_station_time(station, card):
    cp = await connected()
    tx = (
        await cp.call(
            "StartTransaction",
            start_tx(0, "1970-01-01T00:00:05Z"),
        )
    )[2]["transactionId"]
    session = await ChargingSession.objects.aget(pk=tx)
    assert session.station_started_at.year == 1970
    assert session.started_at.year >= 2025
    assert abs((session.started_at - session.start_received_at).total_seconds()) < 1
    await cp.disconnect()


async def test_late_offline_transaction_accepted(station, card):
    cp = await connected()
    tx = (
        await cp.call(
            "StartTransaction",
            start_tx(10, "2025-01-02T03:04:05Z"),
        )
    )[2]["transactionId"]
    await cp.call(
        "StopTransaction",
        {"transactionId": tx, "meterStop": 20, "timestamp": "2025-01-02T04:04:05Z"},
    )
    session = await ChargingSession.objects.aget(pk=tx)
    assert session.started_at.isoformat().startswith("2025-01-02T03:04:05")
    assert session.energy_wh == 10
    await cp.disconnect()


async def test_heartbeat_and_other_notifications(station):
    cp = await connected()
    assert "currentTime" in (await cp.call("Heartbeat", {}))[2]
    assert (await cp.call("FirmwareStatusNotification", {"status": "Idle"}))[0] == 3
    assert (await cp.call("DiagnosticsStatusNotification", {"status": "Idle"}))[0] == 3
    answer = await cp.call("DataTransfer", {"vendorId": "com.other"})
    assert answer[2] == {"status": "UnknownVendorId"}
    await cp.disconnect()


async def test_disabled_station_boot_rejected(station):
    await Station.objects.filter(pk=station.pk).aupdate(enabled=False)
    cp = await connected(boot=False)
    assert (await cp.call("BootNotification", BOOT))[2]["status"] == "Rejected"
    await cp.disconnect()


async def test_a_new_start_closes_a_session_that_lost_its_stop(station, card):
    """Power cut: T1's StopTransaction never came. T2 on the same connector closes T1 at the
    energy its meter values showed; a late StopTransaction for T1 still completes it."""
    cp = await connected()
    start = start_tx(1000, "2026-03-01T10:00:00Z")
    t1 = (await cp.call("StartTransaction", start))[2]["transactionId"]
    await cp.call("MeterValues", mv(t1, "2026-03-01T10:30:00Z", 4000))
    start2 = {**start, "meterStart": 4200, "timestamp": "2026-03-01T12:00:00Z"}
    t2 = (await cp.call("StartTransaction", start2))[2]["transactionId"]
    assert t2 != t1
    first = await ChargingSession.objects.aget(pk=t1)
    assert (first.status, first.energy_wh, first.stop_reason) == (
        "abandoned",
        3000,
        "NoStopTransaction",
    )
    assert (await ChargingSession.objects.aget(pk=t2)).status == "active"
    # Sessions on other connectors are untouched.
    other = (await cp.call("StartTransaction", {**start2, "connectorId": 2}))[2]["transactionId"]
    assert (await ChargingSession.objects.aget(pk=other)).status == "active"
    assert (await ChargingSession.objects.aget(pk=t2)).status == "active"

    late = await cp.call(
        "StopTransaction",
        {
            "transactionId": t1,
            "meterStop": 4100,
            "timestamp": "2026-03-01T11:00:00Z",
            "reason": "PowerLoss",
        },
    )
    assert late[0] == 3
    first = await ChargingSession.objects.aget(pk=t1)
    assert (first.status, first.energy_wh, first.meter_stop) == ("completed", 3100, 4100)
    # And a repeat of that stop counts nothing twice.
    await cp.call(
        "StopTransaction",
        {"transactionId": t1, "meterStop": 9999, "timestamp": "2026-03-01T11:00:00Z"},
    )
    assert (await ChargingSession.objects.aget(pk=t1)).energy_wh == 3100
    await cp.disconnect()


async def test_meter_values_sent_again_are_stored_once(station, card):
    """Our answer to a MeterValues (or a StopTransaction with transactionData) was lost in a
    restart: the station sends it again on its new connection. Nothing counts twice."""
    cp = await connected()
    start = start_tx(1000, "2026-03-01T10:00:00Z")
    tx = (await cp.call("StartTransaction", start))[2]["transactionId"]
    reading = mv(tx, "2026-03-01T10:15:00Z", 3750.5, 11000, [16, 16, 15.5])
    await cp.call("MeterValues", reading)
    await cp.disconnect()
    cp = await connected(boot=False)
    assert (await cp.call("MeterValues", reading))[0] == 3
    samples = [s async for s in MeterSample.objects.filter(session_id=tx)]
    assert [(s.energy_wh, s.power_w, s.current_l3) for s in samples] == [(3750.5, 11000, 15.5)]
    assert (await ChargingSession.objects.aget(pk=tx)).energy_wh == 2750

    stop = {
        "transactionId": tx,
        "meterStop": 6000,
        "timestamp": "2026-03-01T10:30:00Z",
        "reason": "EVDisconnected",
        "transactionData": [
            {
                "timestamp": "2026-03-01T10:30:00Z",
                "sampledValue": [{"value": "6000", "context": "Transaction.End"}],
            }
        ],
    }
    assert (await cp.call("StopTransaction", stop))[0] == 3
    assert (await cp.call("StopTransaction", stop))[0] == 3
    ends = [s async for s in MeterSample.objects.filter(session_id=tx, context="Transaction.End")]
    assert [s.energy_wh for s in ends] == [6000]
    assert await MeterSample.objects.filter(session_id=tx).acount() == 2
    session = await ChargingSession.objects.aget(pk=tx)
    assert (session.status, session.energy_wh) == ("completed", 5000)
    await cp.disconnect()


async def test_measurands_of_one_instant_sent_apart_make_one_sample(station, card):
    """Some stations send each measurand of a sampling instant in its own MeterValues: they
    merge into one row, and a later message never erases a value with its absence."""
    cp = await connected()
    start = start_tx(0, "2026-03-01T10:00:00Z")
    tx = (await cp.call("StartTransaction", start))[2]["transactionId"]
    at = "2026-03-01T10:15:00Z"
    energy = {"value": "2500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
    power = {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"}
    for value in (energy, power):
        payload = {
            "connectorId": 1,
            "transactionId": tx,
            "meterValue": [{"timestamp": at, "sampledValue": [value]}],
        }
        assert (await cp.call("MeterValues", payload))[0] == 3
    samples = [s async for s in MeterSample.objects.filter(session_id=tx)]
    assert [(s.energy_wh, s.power_w) for s in samples] == [(2500, 7400)]
    await cp.disconnect()
