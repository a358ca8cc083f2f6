"""OCPP 1.6 charging profiles that carry load-management setpoints to stations.

Two layers per connector, both ``TxDefaultProfile`` (they apply to the running transaction and
to the next one, so a car that arrives between two cycles never draws more than allowed):

* the **fail-safe** profile, stack level 0, no expiry: sent at every boot; what the station
  applies when nothing else is valid;
* the **lease** profile, stack level 1, ``validTo`` a short time ahead: each allocation, renewed
  every cycle with the same ``chargingProfileId`` (so it replaces itself). When the portal goes
  silent the lease ends and the station falls back to the fail-safe by itself (OCPP 1.6
  §3.13.2: a profile past its validTo is no longer used; the highest valid stack level wins).

Pure: no Django, times passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

FAIL_SAFE_STACK_LEVEL = 0
LEASE_STACK_LEVEL = 1
# Profile ids: one fail-safe and one lease id per connector, in a range of their own so that
# they never collide with profiles an installer set on the station by hand.
FAIL_SAFE_PROFILE_BASE = 7100
LEASE_PROFILE_BASE = 7200
# A station applies profiles from this moment on; a fixed past start keeps the payload the
# same every cycle (only validTo and the limit change).
SCHEDULE_START = datetime(2020, 1, 1).isoformat() + "Z"


@dataclass(frozen=True)
class Lease:
    connector_id: int
    current: int
    phases: int
    valid_to: datetime


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _profile(
    profile_id: int, stack_level: int, current: int, phases: int, valid_to: datetime | None
) -> dict:
    profile: dict = {
        "chargingProfileId": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "startSchedule": SCHEDULE_START,
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": float(current), "numberPhases": phases}
            ],
        },
    }
    if valid_to is not None:
        profile["validTo"] = _iso(valid_to)
    return profile


def fail_safe_payload(connector_id: int, current: int) -> dict:
    """SetChargingProfile.req for the fail-safe layer (sent at boot)."""
    return {
        "connectorId": connector_id,
        "csChargingProfiles": _profile(
            FAIL_SAFE_PROFILE_BASE + connector_id, FAIL_SAFE_STACK_LEVEL, current, 3, None
        ),
    }


def lease_payload(lease: Lease) -> dict:
    """SetChargingProfile.req for one cycle's setpoint."""
    return {
        "connectorId": lease.connector_id,
        "csChargingProfiles": _profile(
            LEASE_PROFILE_BASE + lease.connector_id,
            LEASE_STACK_LEVEL,
            lease.current,
            lease.phases,
            lease.valid_to,
        ),
    }


def lease_for(
    connector_id: int, current: int, phases: int, now: datetime, lease_seconds: float
) -> Lease:
    return Lease(connector_id, current, phases, now + timedelta(seconds=lease_seconds))


def applies(profile_valid_to: datetime | None, now: datetime) -> bool:
    """Whether a lease is still in force at ``now`` (validTo is exclusive)."""
    return profile_valid_to is None or now < profile_valid_to
