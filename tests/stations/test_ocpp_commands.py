"""Command channel, reconnect replacement, resume, offline detection."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from stations import commands, tasks
from stations.models import ConfigurationKey, Station, StationCommand
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]


async def booted() -> FakeStation:
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    assert (await cp.call("BootNotification", BOOT))[2]["status"] == "Accepted"
    return cp


async def send(station, action, payload, user=None):
    fresh = await Station.objects.aget(pk=station.pk)
    return await sync_to_async(commands.command_send)(
        station=fresh, action=action, payload=payload, requested_by=user
    )


async def wait_status(command_id, timeout=3.0):  # noqa: ASYNC109
    import asyncio

    for _ in range(int(timeout / 0.05)):
        command = await StationCommand.objects.aget(pk=command_id)
        if command.status != "pending":
            return command
        await asyncio.sleep(0.05)
    return command


async def test_command_accepted_rejected_and_not_supported(station, tenants):
    cp = await booted()
    command = await send(station, "Reset", {"type": "Soft"}, tenants.owner_a)
    call = await cp.expect_call()
    assert call[2:] == ["Reset", {"type": "Soft"}]
    await cp.answer(call, {"status": "Accepted"})
    assert (await wait_status(command.pk)).status == "accepted"

    command = await send(station, "UnlockConnector", {"connectorId": 1})
    call = await cp.expect_call()
    await cp.answer(call, {"status": "UnlockFailed"})
    assert (await wait_status(command.pk)).status == "rejected"

    command = await send(station, "GetConfiguration", {})
    call = await cp.expect_call()
    await cp.send_json_to([4, call[1], "NotImplemented", "no", {}])
    assert (await wait_status(command.pk)).status == "not_supported"
    # The station's own CALLs still work while our calls are outstanding.
    assert (await cp.call("Heartbeat", {}))[0] == 3
    await cp.disconnect()


async def test_command_timeout(station):
    cp = await booted()
    command = await send(station, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    await cp.expect_call()  # never answered; OCPP_CALL_TIMEOUT is 1 s in tests
    assert (await wait_status(command.pk, 3)).status == "timed_out"
    await cp.disconnect()


async def test_command_to_offline_station(station):
    command = await send(station, "Reset", {"type": "Hard"})
    assert command.status == "offline"


async def test_invalid_command_payload_refused(station):
    from portal.errors import DomainError

    with pytest.raises(DomainError):
        await send(station, "Reset", {"type": "Sideways"})
    with pytest.raises(DomainError):
        await send(station, "UpdateFirmware", {})


async def test_new_connection_replaces_old_and_keeps_station_online(station):
    old = await booted()
    new = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await new.handshake())[0]
    close = await old.receive_output(2)
    assert close["type"] == "websocket.close" and close["code"] == 4000
    await old.disconnect()
    assert (await Station.objects.aget(pk=station.pk)).online
    # Commands reach the new connection.
    command = await send(station, "Reset", {"type": "Soft"})
    call = await new.expect_call()
    while call[2] != "Reset":  # the resume's TriggerMessage may come first
        call = await new.expect_call()
    await new.answer(call, {"status": "Accepted"})
    assert (await wait_status(command.pk)).status == "accepted"
    await new.disconnect()
    assert not (await Station.objects.aget(pk=station.pk)).online


async def test_reconnect_without_boot_triggers_status_and_resends_config(station):
    await Station.objects.filter(pk=station.pk).aupdate(registration_status="Accepted")
    await ConfigurationKey.objects.acreate(station=station, key="HeartbeatInterval", value="120")
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    seen = {}
    for _ in range(2):
        call = await cp.expect_call(3)
        seen[call[2]] = call[3]
        await cp.answer(call, {"status": "Accepted"})
    assert seen == {
        "TriggerMessage": {"requestedMessage": "StatusNotification"},
        "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "120"},
    }
    import asyncio

    await asyncio.sleep(0.2)
    key = await ConfigurationKey.objects.aget(station=station)
    assert key.applied_value == "120" and key.last_result == "Accepted"
    await cp.disconnect()


async def test_no_commands_before_boot_accepted(station):
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    command = await send(station, "Reset", {"type": "Soft"})
    assert await cp.receive_nothing(0.5)
    assert (await StationCommand.objects.aget(pk=command.pk)).status == "pending"
    await cp.send_json_to([2, "b1", "BootNotification", BOOT])
    assert (await cp.receive_json_from())[1] == "b1"
    call = await cp.expect_call()
    assert call[2] == "Reset"
    await cp.answer(call, {"status": "Accepted"})
    assert (await wait_status(command.pk)).status == "accepted"
    await cp.disconnect()


def test_offline_detection(station, db):
    now = timezone.now()
    Station.objects.filter(pk=station.pk).update(
        online=True, heartbeat_interval=60, last_seen=now - timedelta(seconds=150)
    )
    assert tasks.mark_offline(now) == []  # 150 s < 2 × 60 + 60
    Station.objects.filter(pk=station.pk).update(last_seen=now - timedelta(seconds=181))
    assert tasks.mark_offline(now) == [station.pk]
    assert not Station.objects.get(pk=station.pk).online
    old = StationCommand.objects.create(
        station=station, action="Reset", payload={}, created_at=now - timedelta(minutes=5)
    )
    tasks.stations_mark_offline()
    assert StationCommand.objects.get(pk=old.pk).status == "offline"


def test_a_command_sent_by_a_process_that_died_is_recorded_as_lost(station, db, settings):
    """Claimed and sent, but the process holding the connection was killed before it recorded
    the answer: after the time-out and the retry time it is an error, not pending for good."""
    settings.OCPP_CALL_TIMEOUT = 30
    now = timezone.now()

    def command(**fields):
        return StationCommand.objects.create(station=station, action="Reset", payload={}, **fields)

    lost = command(sent_at=now - timedelta(seconds=121))
    in_flight = command(sent_at=now - timedelta(seconds=100))  # its answer may still be recorded
    answered = command(sent_at=now - timedelta(minutes=5), status="accepted", finished_at=now)
    tasks.stations_mark_offline()
    statuses = dict(StationCommand.objects.values_list("pk", "status"))
    assert statuses == {lost.pk: "error", in_flight.pk: "pending", answered.pk: "accepted"}
    assert "lost" in StationCommand.objects.get(pk=lost.pk).error


async def test_calls_of_a_dead_connection_are_recorded_as_lost_when_the_station_reconnects(
    station, tenants
):
    """A process killed while its calls waited for answers records nothing; the station
    reconnects elsewhere and can no longer answer them (OCPP-J answers on the connection
    that carried the call). They are errors at once, not "sent" until the periodic sweep."""
    await Station.objects.filter(pk=station.pk).aupdate(
        online=True, channel_name="specific.dead-process!1", registration_status="Accepted"
    )
    sent = timezone.now() - timedelta(seconds=3)
    reset = await StationCommand.objects.acreate(
        station=station, action="Reset", payload={"type": "Soft"}, sent_at=sent,
        requested_by=tenants.owner_a,
    )  # fmt: skip
    waiting = await StationCommand.objects.acreate(
        station=station, action="Reset", payload={"type": "Soft"}
    )  # never sent: the new connection delivers it
    answered = await StationCommand.objects.acreate(
        station=station, action="Reset", payload={}, sent_at=sent, status="accepted",
        finished_at=sent,
    )  # fmt: skip
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    lost = await StationCommand.objects.aget(pk=reset.pk)
    assert (lost.status, lost.error) == ("error", commands.LOST_ON_RECONNECT)
    assert lost.finished_at is not None
    assert (await StationCommand.objects.aget(pk=answered.pk)).status == "accepted"
    calls = {}
    for _ in range(2):  # the resume's TriggerMessage and the waiting Reset, in any order
        call = await cp.expect_call()
        calls[call[2]] = call
        await cp.answer(call, {"status": "Accepted"})
    assert set(calls) == {"TriggerMessage", "Reset"}
    assert (await wait_status(waiting.pk)).status == "accepted"
    assert (await StationCommand.objects.aget(pk=reset.pk)).status == "error"
    await cp.disconnect()


async def test_a_call_in_flight_on_a_replaced_connection_ends_as_an_error(station):
    """The old connection is alive (same process here): the new one records its call as
    lost, the old one's own outcome (closed before the answer) replaces that; never pending."""
    old = await booted()
    command = await send(station, "Reset", {"type": "Soft"})
    call = await old.expect_call()
    assert call[2] == "Reset"  # never answered on the old connection
    new = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await new.handshake())[0]
    close = await old.receive_output(2)
    assert close["type"] == "websocket.close" and close["code"] == 4000
    await old.disconnect()
    finished = await wait_status(command.pk)
    assert finished.status == "error" and finished.finished_at is not None
    await new.disconnect()


def test_an_outcome_recorded_late_replaces_the_provisional_lost_one(station, db):
    """The old connection may be alive elsewhere and have the answer in hand when the station
    reconnects (writing it, retrying while the database is away): its outcome wins. A real
    outcome is still recorded only once."""
    now = timezone.now()
    command = StationCommand.objects.create(
        station=station, action="ChangeConfiguration", payload={"key": "K", "value": "1"},
        sent_at=now - timedelta(seconds=1),
    )  # fmt: skip
    ConfigurationKey.objects.create(station=station, key="K", value="1")
    assert commands.commands_lost_on_reconnect(station.pk, now)  # the command log changed
    command.refresh_from_db()
    assert (command.status, command.error) == ("error", commands.LOST_ON_RECONNECT)
    commands.command_finish(command.pk, "accepted", {"status": "Accepted"})
    command.refresh_from_db()
    assert (command.status, command.error, command.response) == (
        "accepted",
        "",
        {"status": "Accepted"},
    )
    assert ConfigurationKey.objects.get(station=station, key="K").applied_value == "1"
    commands.command_finish(command.pk, "error", None, "The connection closed.")
    assert StationCommand.objects.get(pk=command.pk).status == "accepted"
    # Sent after the reconnect (by the new connection): not the old connection's.
    later = StationCommand.objects.create(
        station=station, action="Reset", payload={}, sent_at=now + timedelta(seconds=1)
    )
    lease = StationCommand.objects.create(
        station=station, action="SetChargingProfile", payload={}, sent_at=now
    )
    # Only load management's lease was lost: no page shows it, nothing to push.
    assert not commands.commands_lost_on_reconnect(station.pk, now)
    assert StationCommand.objects.get(pk=lease.pk).status == "error"
    assert StationCommand.objects.get(pk=later.pk).status == "pending"


def test_periodic_entry_registered():
    from portal.schedule import PERIODIC

    assert PERIODIC["stations-mark-offline"].task == "stations.tasks.stations_mark_offline"


# --- unattended commands (load management's profiles) ---------------------------------------


def profile(connector_id: int = 1, limit: int = 16) -> dict:
    return {
        "connectorId": connector_id,
        "csChargingProfiles": {
            "chargingProfileId": 11,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": 3}],
            },
        },
    }


async def test_a_stale_unattended_profile_is_not_delivered_on_reconnect(station, tenants):
    """Load management re-sends what it wants after a reconnect; a lease left pending from
    before (its message lost) must not reach the station after a newer one."""
    await Station.objects.filter(pk=station.pk).aupdate(online=True, registration_status="Accepted")
    fresh = await Station.objects.aget(pk=station.pk)
    stale = await StationCommand.objects.acreate(
        station=fresh, action="SetChargingProfile", payload=profile(1, 32)
    )
    wanted = await StationCommand.objects.acreate(
        station=fresh,
        action="SetChargingProfile",
        payload=profile(0, 10),
        requested_by=tenants.owner_a,
    )
    assert await sync_to_async(commands.commands_pending)(station.pk, "Accepted") == [wanted.pk]
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    actions = []
    for _ in range(2):  # the resume's TriggerMessage and the person's profile, nothing more
        call = await cp.expect_call(3)
        actions.append((call[2], call[3].get("connectorId")))
        await cp.answer(call, {"status": "Accepted"})
    assert sorted(actions) == [("SetChargingProfile", 0), ("TriggerMessage", None)]
    assert await cp.receive_nothing(0.5)
    assert (await StationCommand.objects.aget(pk=stale.pk)).sent_at is None
    await cp.disconnect()


async def test_no_call_reaches_a_booting_station_before_the_boot_answer(station, monkeypatch):
    """The boot itself makes load management send the fail-safe profile (an event hook
    during the boot's handler): the station gets the BootNotification answer first."""
    fresh = await Station.objects.aget(pk=station.pk)
    await Station.objects.filter(pk=station.pk).aupdate(registration_status="Accepted")
    from stations import services

    real_boot = services.boot

    def boot_that_sends(station_id, info, now):
        result = real_boot(station_id, info, now)
        commands.commands_send_bulk(
            [(Station.objects.get(pk=fresh.pk), "SetChargingProfile", profile(0, 6))],
            schema_checked=True,
        )
        import time as time_module

        time_module.sleep(0.3)  # the profile's message is with the connection by now
        return result

    monkeypatch.setattr(services, "boot", boot_that_sends)
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.send_json_to([2, "b1", "BootNotification", BOOT])
    first = await cp.receive_json_from(3)
    assert first[:2] == [3, "b1"], first
    call = await cp.expect_call(3)
    assert call[2] == "SetChargingProfile"
    await cp.answer(call, {"status": "Accepted"})
    await cp.disconnect()


async def test_commands_that_may_wait_start_within_their_spread(station, monkeypatch):
    """Load management's renewals come with a spread: the connection starts each at a random
    moment within it (here the latest), and answers the station's own calls meanwhile."""
    import time

    from stations import consumers

    cp = await booted()
    monkeypatch.setattr(consumers.random, "uniform", lambda low, high: high)
    fresh = await Station.objects.aget(pk=station.pk)
    started = time.monotonic()
    # Connector 2: a lease of connector 1 would be replaced by the newer one below and
    # never sent (tests/stations/test_commands.py).
    (spread,) = await sync_to_async(commands.commands_send_bulk)(
        [(fresh, "SetChargingProfile", profile(2, 16))], schema_checked=True, spread_seconds=0.6
    )
    (at_once,) = await sync_to_async(commands.commands_send_bulk)(
        [(fresh, "SetChargingProfile", profile(1, 10))], schema_checked=True
    )
    first = await cp.expect_call(0.5)
    assert (
        first[3]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
        == 10
    ), "the command without a spread goes first"
    await cp.answer(first, {"status": "Accepted"})
    assert (await cp.call("Heartbeat", {}))[0] == 3
    second = await cp.expect_call(2)
    assert time.monotonic() - started >= 0.55
    await cp.answer(second, {"status": "Accepted"})
    assert (await wait_status(spread.pk)).status == "accepted"
    assert (await wait_status(at_once.pk)).status == "accepted"
    await cp.disconnect()


async def test_a_waiting_lease_replaced_by_a_newer_one_is_never_sent(station, monkeypatch):
    """A renewal waits for its moment; meanwhile load management sends the connector a
    change. The renewal must not follow it (the station would be back on the old current)."""
    import asyncio

    from stations import consumers

    cp = await booted()
    monkeypatch.setattr(consumers.random, "uniform", lambda low, high: high)
    fresh = await Station.objects.aget(pk=station.pk)
    (renewal,) = await sync_to_async(commands.commands_send_bulk)(
        [(fresh, "SetChargingProfile", profile(1, 16))], schema_checked=True, spread_seconds=0.3
    )
    (change,) = await sync_to_async(commands.commands_send_bulk)(
        [(fresh, "SetChargingProfile", profile(1, 6))], schema_checked=True
    )
    call = await cp.expect_call(0.5)
    assert (
        call[3]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 6
    )
    await cp.answer(call, {"status": "Accepted"})
    assert (await wait_status(change.pk)).status == "accepted"
    await asyncio.sleep(0.5)  # the renewal's moment has come and gone: nothing more arrives
    assert (
        await wait_status(renewal.pk)
    ).error == "Not sent: a newer charging profile replaced it."
    assert (await cp.call("Heartbeat", {}))[0] == 3  # the next frame is our answer, no call
    await cp.disconnect()
