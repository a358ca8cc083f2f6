"""The command channel's rules in the database (stations/commands.py); the OCPP side is in
test_ocpp_commands.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loadmgmt import profiles
from stations import commands
from stations.models import StationCommand

pytestmark = pytest.mark.django_db

UNTIL = datetime(2030, 1, 1, tzinfo=UTC)


def lease(station, connector_id: int, current: int, requested_by=None) -> StationCommand:
    payload = profiles.lease_payload(profiles.Lease(connector_id, current, 3, UNTIL))
    return StationCommand.objects.create(
        station=station,
        action="SetChargingProfile",
        payload=payload,
        requested_by=requested_by,
    )


def test_a_lease_replaced_by_a_newer_one_of_its_profile_is_never_sent(station, tenants):
    """A renewal still waiting for its moment when a change to the same connector is sent:
    delivered after it, it would undo the change (the station back on the old current)."""
    renewal = lease(station, 1, 16)
    # Newer, but not the same profile: the fail-safe layer, another connector, a person's.
    StationCommand.objects.create(
        station=station,
        action="SetChargingProfile",
        payload=profiles.fail_safe_payload(1, 6),
    )
    lease(station, 2, 10)
    lease(station, 1, 32, requested_by=tenants.owner_a)
    action, payload = commands.command_claim(renewal.pk, station.pk)
    assert action == "SetChargingProfile" and payload == renewal.payload

    waiting = lease(station, 1, 16)
    change = lease(station, 1, 6)
    assert commands.command_claim(change.pk, station.pk) is not None
    assert commands.command_claim(waiting.pk, station.pk) is None
    waiting.refresh_from_db()
    assert (waiting.status, waiting.sent_at) == ("error", None)
    assert waiting.error == "Not sent: a newer charging profile replaced it."
    assert waiting.finished_at is not None


def test_a_command_another_connection_took_is_left_as_it_is(station):
    command = lease(station, 1, 16)
    assert commands.command_claim(command.pk, station.pk) is not None
    assert commands.command_claim(command.pk, station.pk) is None  # the second connection
    command.refresh_from_db()
    assert command.status == "pending" and command.sent_at is not None


def test_after_a_boot_the_connection_sends_the_profiles_its_boot_made_and_no_older(station):
    """Load management's profiles are re-sent by their sender, so a connection leaves those
    of earlier connections alone; the fail-safe profiles made by its own boot (newer than the
    station's newest command at the handshake) it sends itself, unnotified."""
    from stations import services

    station.online = True
    station.save()
    old = lease(station, 1, 16)  # an earlier connection's, never sent
    ref, _hash = services.station_for_handshake(station.charge_point_id)
    assert ref.last_command_id == old.pk
    manual = StationCommand.objects.create(
        station=station, action="Reset", payload={"type": "Soft"}
    )
    (fail_safe,) = commands.commands_send_bulk(
        [(station, "SetChargingProfile", profiles.fail_safe_payload(1, 6))],
        schema_checked=True,
        notify=False,
    )
    assert commands.commands_pending(station.pk, "Accepted") == [manual.pk]
    after_boot = commands.commands_pending(station.pk, "Accepted", ref.last_command_id)
    assert after_boot == [manual.pk, fail_safe.pk]
    # Not while the boot is pending or refused: nothing but what OCPP allows then.
    assert commands.commands_pending(station.pk, "Pending", ref.last_command_id) == []


def test_a_station_without_commands_has_none_newest_at_the_handshake(tenants):
    from stations import services
    from tests.stations.factories import StationFactory

    fresh = StationFactory(organization=tenants.a)
    assert services.station_for_handshake(fresh.charge_point_id)[0].last_command_id == 0


def test_profiles_made_unnotified_send_no_channel_message(
    station, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(commands, "group_send_many", lambda messages: sent.append(list(messages)))
    station.online = True
    station.save()
    with_notice = [(station, "SetChargingProfile", profiles.fail_safe_payload(1, 6))]
    with django_capture_on_commit_callbacks(execute=True):
        commands.commands_send_bulk(with_notice, schema_checked=True, notify=False)
    assert sent == []
    with django_capture_on_commit_callbacks(execute=True):
        commands.commands_send_bulk(with_notice, schema_checked=True)
    assert len(sent) == 1
