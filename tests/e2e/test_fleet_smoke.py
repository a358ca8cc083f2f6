"""The fleet benchmark's short version (bench/fleet_bench.py): 200 stations in load groups held
by the production topology (``deploy/topology``: nginx, two ASGI processes, Celery worker and
beat), every ASGI process restarted at once, and every station back, booted, with its
fail-safe profile and, where its car charges, its lease re-sent."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tests.e2e.conftest import _port_free, free_port

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import fleet_bench  # noqa: E402

STATIONS = 200
ENV = {"DEBUG": "0", "LOADMGMT_CYCLE_SECONDS": "2", "LOADMGMT_LEASE_SECONDS": "20"}


def _ports(asgi: int) -> int:
    port = free_port()
    while not all(_port_free(port + i) for i in range(asgi + 1)):
        port = free_port()
    return port


def test_the_fleet_s_cars_are_not_all_on_one_simulator_process():
    """One car in every four consecutive stations (each load group its share), not always
    the first of the four: the simulator processes take every fourth station, and the cars
    all on one of them all came to one ASGI process (bench/fleet_bench.py, charging_plan)."""
    plan = fleet_bench.charging_plan(10_000, 0.25)
    assert sum(plan) == 2_500
    assert all(sum(plan[block : block + 4]) == 1 for block in range(0, 10_000, 4))
    assert min(sum(plan[k::4]) for k in range(4)) > 500  # before: 2,500, 0, 0, 0
    assert fleet_bench.charging_plan(10_000, 0.25) == plan  # the same fleet every run
    assert fleet_bench.charging_plan(8, 0) == [False] * 8


def test_fleet_reconnect_storm(portal_env, tmp_path):
    from tests.conftest import _skip_or_fail, real_services_expected

    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        _skip_or_fail("needs nginx (apt-get install nginx-light)", real_services_expected())
    plan = fleet_bench.fleet_register(STATIONS, orgs=2, group_size=20, line=32, charging=0.25)
    cars = sum(charging for _, charging in plan)
    assert cars == STATIONS // 4
    args = argparse.Namespace(
        procs=1,
        ramp_rate=100,
        # A station the admission turns away during the ramp (a cold process, 20 handshakes
        # at once) is told to come back after 5-30 s (OCPP_ADMISSION_RETRY_AFTER): the ramp
        # waits for that and its boot (it ends as soon as all 200 are booted).
        ramp_extra=45,
        settle=4,
        hold=6,
        storm_timeout=40,
        redis_clients_limit=7000,
        profile_storm=0,
        profile_stop=0,
        profile_hold=0,
        cycle_seconds=2,
        db_checks=True,
        statements=5,  # Redis commands always; SQL where pg_stat_statements is loaded
    )
    topo = fleet_bench.ScriptTopology({**portal_env, **ENV}, 2, _ports(2), tmp_path / "topo")

    result = fleet_bench.run_fleet(plan, topo, args)

    assert result["ramp"]["booted"] == STATIONS, result
    assert result["storm_redis_commands_per_reconnect"], result
    assert result["steady"]["held_at_end"] == STATIONS, result
    assert result["steady"]["answers"] > 0
    by_action = result["steady"]["by_action (n, p50, p99 ms)"]
    assert sum(n for n, _p50, _p99 in by_action.values()) == result["steady"]["answers"]
    # The hold's CPU, second by second and part by part (what was busy when answers were slow).
    timeline = result["steady"]["cpu_by_second"]
    assert len(timeline) >= 4, timeline
    parts = set(next(iter(timeline.values())))
    assert {"asgi", "asgi1", "asgi2", "celery", "postgres", "simulators", "machine"} <= parts
    assert sum(second["simulators"] for second in timeline.values()) > 0, timeline
    assert result["steady"]["cpu_when_slowest"]["seconds_of_the_slowest (cores)"], result
    storm = result["storm"]
    assert storm["booted"] == STATIONS, storm
    assert storm["fail_safe_received"] == STATIONS, storm
    # Every car had a lease before the restart (5 per 32 A line fit at 6 A or more)...
    assert storm["leases_wanted (had one before)"] == cars, storm
    # ...and has one again, as has every connector the database wants charging.
    assert storm["leases_resent"] == cars, storm
    assert storm["db_wanted_after"] == cars and storm["db_wanted_without_lease"] == [], storm
    # (With nginx's passive health check on, max_fails=1, it never settled: docs/BENCHMARKS.md.)
    assert storm["settled"] and storm["settled_s"] < 40, storm
    # Only refused handshakes while the ASGI processes restart (nginx 503 with Retry-After
    # while none listens or a process is busy, 500 from a process shutting down); no
    # CALLERROR, no timeout, no other failure.
    refused = ("connect: InvalidStatus 503", "connect: InvalidStatus 500")
    unexpected = {k: v for k, v in result["errors"].items() if k not in refused}
    assert unexpected == {}, result["errors"]
