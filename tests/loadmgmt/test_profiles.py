"""The charging profiles that carry setpoints: valid OCPP 1.6, and a station falls back to
its fail-safe by itself when the lease ends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.charge_point import camel_to_snake_case

from loadmgmt.profiles import Lease, fail_safe_payload, lease_for, lease_payload
from stations.commands import command_validate
from stations.simulator.profiles import Profile, ProfileStore

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def install(store: ProfileStore, payload: dict) -> None:
    data = camel_to_snake_case(payload["csChargingProfiles"])
    assert store.install(Profile.from_ocpp(payload["connectorId"], data, NOW.timestamp()))


def test_payloads_are_valid_ocpp():
    command_validate("SetChargingProfile", fail_safe_payload(1, 6))
    lease = lease_for(2, 16, 1, NOW, 30)
    payload = lease_payload(lease)
    command_validate("SetChargingProfile", payload)
    profile = payload["csChargingProfiles"]
    assert profile["validTo"] == "2026-12-02T09:00:30Z"
    period = profile["chargingSchedule"]["chargingSchedulePeriod"][0]
    assert (period["limit"], period["numberPhases"]) == (16.0, 1)
    assert profile["chargingSchedule"]["chargingRateUnit"] == "A"


@given(
    connector_id=st.integers(1, 99),
    current=st.integers(0, 32),
    phases=st.integers(1, 3),
    valid_to=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
@settings(max_examples=300, deadline=None)
def test_every_lease_and_fail_safe_payload_is_valid_ocpp(connector_id, current, phases, valid_to):
    """The recompute sends these without validating each (commands_send_bulk(schema_checked))."""
    command_validate(
        "SetChargingProfile", lease_payload(Lease(connector_id, current, phases, valid_to))
    )
    command_validate("SetChargingProfile", fail_safe_payload(connector_id, current))


@pytest.mark.parametrize("fail_safe", [0, 6, 10])
def test_station_falls_back_to_fail_safe_when_the_lease_ends(fail_safe):
    store = ProfileStore()
    install(store, fail_safe_payload(1, fail_safe))
    install(store, lease_payload(lease_for(1, 24, 3, NOW, 30)))

    def limit(seconds):
        return store.tx_limit(
            1, NOW.timestamp() + seconds, transaction_id=None, tx_start=None, phases_hint=3
        )

    assert limit(0).amps == 24 and limit(29.9).amps == 24
    assert limit(30).amps == fail_safe and limit(3600).amps == fail_safe
    # Renewing the lease replaces it (same profile id), it does not stack up.
    install(store, lease_payload(lease_for(1, 12, 3, NOW, 60)))
    assert limit(45).amps == 12 and len(store.profiles) == 2
