"""Fault injection during live sessions (issue 8, item 3): Redis restarted, PostgreSQL
restarted and stopped, the Celery worker killed.

Each test runs a fleet of 12 simulated stations on a 32 A line (one load-management group)
against a real portal process, Celery worker and beat on private PostgreSQL and Redis
(tests/resilience/conftest.py), charges cars, injects the fault and then asserts:

* recovery without help, within a stated time: every charging station holds a lease it
  accepted after the fault, at the planned current;
* the stations' real draw (sampled every 20 ms) never exceeded the line on any grid phase,
  during the outage (leases ended into the fail-safe profiles) nor after it (a station whose
  lease ended counts at its fail-safe: tests/loadmgmt/test_lease_lapse.py, found here);
* nothing lost or duplicated: every transaction of the simulator's record is one session
  with its meterStart and meterStop, every answered MeterValues is stored once, every
  profile the portal sent has one result and no station received more than were sent.

Short version (CI, under 2 min for the three); ``bench/faults_bench.py`` is the long one.
"""

from __future__ import annotations

import pytest

from tests.resilience.conftest import (
    FaultResult,
    FleetConfig,
    celery_worker_killed,
    postgres_restart,
    redis_restart,
)

pytestmark = [pytest.mark.faults, pytest.mark.services]

CHARGING = list(range(6))
OUTAGE_SECONDS = 5.0
RECOVERY_SECONDS = 30.0  # stated bound: every charging station re-leased within this


def assert_clean(result: FaultResult) -> None:
    print(result.row())
    audit = result.audit
    assert audit.problems == [], audit.problems
    assert audit.transactions == audit.sessions > 0
    assert audit.meter_values_answered == audit.meter_rows > 0
    assert audit.duplicate_meter_rows == 0
    assert audit.commands_unfinished == 0
    assert audit.profiles_received <= audit.commands_claimed
    assert result.draw_samples > 200
    assert result.over_during_outage == 0
    assert result.over_during_recovery == 0
    assert result.recovered_seconds < RECOVERY_SECONDS


async def test_redis_restart(fault_fleet):
    """The channel layer, cache and Celery broker lose everything; setpoints flow again
    (also to a car arriving after) and the live sessions continue: the same transactions,
    each stored once. The worker may exit on the broker loss (a kombu 5.7 bug, see
    docs/RESILIENCE.md): the fleet's supervisor starts it again, as systemd would."""
    fleet = await fault_fleet(FleetConfig("FR"))
    result = await redis_restart(fleet, CHARGING, OUTAGE_SECONDS, RECOVERY_SECONDS)
    assert_clean(result)
    # Live sessions continued: one transaction per car, none restarted by the outage.
    assert [len(fleet.sims[i].transactions) for i in CHARGING] == [1] * len(CHARGING)


async def test_postgresql_restart_and_outage(fault_fleet):
    """A restart, then a stop of several seconds while cars arrive and leave: the portal
    answers InternalError, the stations retry their transaction messages (OCPP 1.6 §4.10),
    and once the database is back the same connections work again without a reconnect."""
    fleet = await fault_fleet(FleetConfig("FP"))
    result = await postgres_restart(fleet, CHARGING, OUTAGE_SECONDS, RECOVERY_SECONDS)
    assert result.retries > 0  # the outage was felt, and answered by retries
    assert result.reconnects == 0  # no station had to reconnect
    assert_clean(result)


async def test_celery_worker_killed(fault_fleet):
    """SIGKILL on the worker: nothing renews the leases, so every station falls back to its
    fail-safe current when its lease ends (6 A on station 0, 0 A elsewhere: the line holds);
    a new worker resumes the recomputes and the leases are renewed."""
    fleet = await fault_fleet(FleetConfig("FC"))
    result = await celery_worker_killed(fleet, CHARGING, RECOVERY_SECONDS)
    assert result.fail_safe_held
    assert_clean(result)
