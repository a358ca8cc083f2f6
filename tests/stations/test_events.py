"""Station events reach the configured receiver after commit, one narrow entry point; the
load-shedding inputs arrive by DataTransfer."""

from __future__ import annotations

import pytest

from stations import events
from stations.conf import VENDOR_ID
from stations.models import Station
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT, until
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]


def explode(event: events.StationEvent) -> None:
    raise RuntimeError("receiver bug")


def kinds(received, station):
    return [(e.kind, e.connector_id) for e in received if e.station_id == station.pk]


async def test_a_whole_session_emits_every_event(station, card, receiver):
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call("BootNotification", BOOT)
    await cp.call(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}
    )
    start = await cp.call(
        "StartTransaction",
        {
            "connectorId": 1,
            "idTag": "DEADBEEF",
            "meterStart": 0,
            "timestamp": "2026-01-01T10:00:00Z",
        },
    )
    tx = start[2]["transactionId"]
    await cp.call(
        "StopTransaction",
        {"transactionId": tx, "meterStop": 10, "timestamp": "2026-01-01T11:00:00Z"},
    )
    await cp.disconnect()
    # No ONLINE: the accepted boot's BOOT event tells load management all it would.
    assert kinds(receiver, station) == [
        ("boot", None),
        ("status", 1),
        ("session_started", 1),
        ("session_stopped", 1),
        ("offline", None),
    ]
    started = next(e for e in receiver if e.kind == "session_started")
    assert started.data == {"transaction_id": tx, "accepted": True}
    assert started.organization_id == station.organization_id


async def test_a_reconnect_without_a_boot_is_an_online_event(station, receiver):
    """OCPP lets a station reconnect without booting: load management hears ONLINE, once,
    after its first message, or after the boot wait (OCPP_BOOT_WAIT) if it sends none."""
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call("Heartbeat", {})
    await until(lambda: kinds(receiver, station) == [("online", None)])
    await cp.disconnect()
    receiver.clear()
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await until(lambda: kinds(receiver, station) == [("online", None)])  # silent: 0.3 s
    await cp.disconnect()
    assert kinds(receiver, station) == [("online", None), ("offline", None)]


async def test_a_refused_boot_is_an_online_event(station, receiver):
    """No BOOT for a boot that is not accepted (no fail-safe profile for a station that may
    not charge), yet the station is connected: load management hears ONLINE."""
    await Station.objects.filter(pk=station.pk).aupdate(enabled=False)
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    assert (await cp.call("BootNotification", BOOT))[2]["status"] == "Rejected"
    await until(lambda: kinds(receiver, station) == [("online", None)])
    await cp.disconnect()


async def test_a_status_is_an_event_only_when_it_changes(station, receiver):
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call("BootNotification", BOOT)
    for status in ("Available", "Available", "Preparing", "Preparing", "Available"):
        await cp.call(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": status}
        )
    statuses = [e.data["status"] for e in receiver if e.kind == "status"]
    assert statuses == ["Available", "Preparing", "Available"]
    await cp.disconnect()
    # A reconnect re-reporting the same status is no event either (a fleet reconnecting at
    # once would ask load management for a recompute per connector).
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    )
    assert [e.data["status"] for e in receiver if e.kind == "status"] == statuses
    await cp.disconnect()


async def test_the_station_status_is_an_event_only_when_it_changes(station, receiver):
    """Connector 0 (the station as a whole) too: a reconnecting station re-reports it."""
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call("BootNotification", BOOT)
    for status, error in (
        ("Available", "NoError"),
        ("Available", "NoError"),
        ("Faulted", "GroundFailure"),
        ("Faulted", "OverVoltage"),  # the same status with another error: a change
        ("Faulted", "OverVoltage"),
        ("Available", "NoError"),
    ):
        await cp.call(
            "StatusNotification", {"connectorId": 0, "errorCode": error, "status": status}
        )
    statuses = [e.data["status"] for e in receiver if e.kind == "status" and e.connector_id == 0]
    assert statuses == ["Available", "Faulted", "Faulted", "Available"]
    await station.arefresh_from_db()
    assert (station.status, station.error_code) == ("Available", "NoError")
    await cp.disconnect()


async def test_inputs_by_data_transfer(station, receiver):
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.call("BootNotification", BOOT)
    ok = await cp.call(
        "DataTransfer",
        {"vendorId": VENDOR_ID, "messageId": "Inputs", "data": '{"in1": true, "in2": true}'},
    )
    assert ok[2] == {"status": "Accepted"}
    inputs = [e for e in receiver if e.kind == "inputs"]
    assert len(inputs) == 1 and (inputs[0].data["in1"], inputs[0].data["in2"]) == (True, True)
    for bad in ("not json", '{"in1": true}', '{"in1": 1, "in2": 0}', "[]"):
        answer = await cp.call(
            "DataTransfer", {"vendorId": VENDOR_ID, "messageId": "Inputs", "data": bad}
        )
        assert answer[2]["status"] == "Rejected" and answer[2]["data"], bad
    unknown = await cp.call("DataTransfer", {"vendorId": VENDOR_ID, "messageId": "Nope"})
    assert unknown[2] == {"status": "UnknownMessageId"}
    assert len([e for e in receiver if e.kind == "inputs"]) == 1
    await cp.disconnect()


async def test_a_failing_receiver_never_breaks_the_station(station, card, settings):
    settings.OCPP_EVENT_HOOK = "tests.stations.test_events.explode"
    events.reset_receiver_cache()
    try:
        cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
        assert (await cp.handshake())[0]
        assert (await cp.call("BootNotification", BOOT))[2]["status"] == "Accepted"
        answer = await cp.call(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        )
        assert answer[0] == 3
        await cp.disconnect()
    finally:
        events.reset_receiver_cache()


def test_missing_receiver_module_is_a_no_op(settings):
    settings.OCPP_EVENT_HOOK = "nosuchapp.hooks.station_event"
    events.reset_receiver_cache()
    try:
        assert events._receiver() is events._noop
        events.station_event_emit(events.BOOT, 1)  # outside a transaction: delivered at once
    finally:
        events.reset_receiver_cache()


received_batches: list = []


def single_only(event: events.StationEvent) -> None:
    received_batches.append(("one", event.kind, event.station_id))


def with_many(event: events.StationEvent) -> None:
    received_batches.append(("one", event.kind, event.station_id))


with_many.many = lambda batch: received_batches.append(  # type: ignore[attr-defined]
    ("many", batch[0].kind, [e.station_id for e in batch])
)


@pytest.mark.parametrize(
    ("hook", "delivered"),
    [
        ("with_many", [("many", "offline", [3, 4, 5])]),  # one call for all
        ("single_only", [("one", "offline", 3), ("one", "offline", 4), ("one", "offline", 5)]),
    ],
)
def test_events_that_come_together_are_delivered_together(settings, hook, delivered):
    settings.OCPP_EVENT_HOOK = f"tests.stations.test_events.{hook}"
    events.reset_receiver_cache()
    received_batches.clear()
    try:
        events.station_events_emit(events.OFFLINE, [3, 4, 5], data={"reason": "disconnected"})
        events.station_events_emit(events.OFFLINE, [])  # nothing: no call
    finally:
        events.reset_receiver_cache()
    assert received_batches == delivered


def test_a_failing_batch_receiver_is_logged_not_raised(settings, caplog):
    settings.OCPP_EVENT_HOOK = "tests.stations.test_events.explode"
    events.reset_receiver_cache()
    explode.many = explode  # type: ignore[attr-defined]
    try:
        events.station_events_emit(events.OFFLINE, [1, 2])
    finally:
        del explode.many
        events.reset_receiver_cache()
    assert "receiver failed for 2 offline events" in caplog.text
