"""Live load-management benchmark on the production topology (see bench/README.md).

    .venv/bin/python bench/loadmgmt_bench.py                  # both parts
    .venv/bin/python bench/loadmgmt_bench.py --part latency   # 200-station group only
    .venv/bin/python bench/loadmgmt_bench.py --part cycle     # 10,000 stations only

* **latency**: 200 simulated stations in one group, one Uvicorn process of the portal, one
  Celery worker, PostgreSQL and Redis on this machine. Cars arrive one at a time (and later
  leave); for each event: the time from the station's StatusNotification to the moment every
  station whose setpoint changed has *accepted* its new profile (decreases first, then the
  increases), taken from the command results the portal recorded. p50/p99 over the events.
  A station is affected when its new lease differs from the one it had accepted; lease
  renewals of unchanged setpoints sent meanwhile are reported separately (``with_renewals``).
* **cycle**: a full recompute (rows → engine → leases) for 10,000 stations in 500 groups under
  20 distribution boards and a house connection, a third of them with a charging car, measured
  in-process: first cycle (every lease sent) and steady cycles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ocpp_bench import cpu_model, pct, raise_nofile, wait_port  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
PASSWORD = "bench-station-password-0001"


def env_for(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{args.db}",
        REDIS_URL=args.redis,
        CHANNEL_PREFIX="lmbench",
        CACHE_PREFIX="lmbench",
        DJANGO_SETTINGS_MODULE="portal.settings",
        DEBUG="0",
        SECRET_KEY="bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFG",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="0",
        PERIODIC_IN_PROCESS="0",
        LOADMGMT_DEBOUNCE_SECONDS="0.01",
        LOG_LEVEL="WARNING",
    )
    return env


def fresh_db(args: argparse.Namespace) -> None:
    env = env_for(args)
    for cmd in (["dropdb", "--if-exists"], ["createdb"]):
        subprocess.run([*cmd, "-h", "127.0.0.1", "-U", "postgres", args.db], env=env, check=True)
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(["redis-cli", "-u", args.redis, "flushdb"], capture_output=True, check=False)


def django_setup(args: argparse.Namespace, **extra: str) -> None:
    os.environ.update(env_for(args), **extra)
    import django

    django.setup()


# --- latency --------------------------------------------------------------------------------


def seed_group(count: int, line_a: int) -> int:
    from loadmgmt.models import LoadGroup, LoadGroupMember, StationLimits
    from portal.models import Organization
    from stations.credentials import station_password_hash
    from stations.models import Connector, Station

    org = Organization.objects.create(slug="lm-bench", name="Load bench")
    digest = station_password_hash(PASSWORD)
    stations = Station.objects.bulk_create(
        Station(
            organization=org,
            charge_point_id=f"LMB-{i:04d}",
            password_hash=digest,
            auth_mode="none",
        )
        for i in range(count)
    )
    Connector.objects.bulk_create(Connector(station=s, connector_id=1) for s in stations)
    rotations = ["L1-L2-L3", "L2-L3-L1", "L3-L1-L2"]
    StationLimits.objects.bulk_create(
        StationLimits(station=s, phase_rotation=rotations[i % 3], can_switch_phases=True)
        for i, s in enumerate(stations)
    )
    group = LoadGroup.objects.create(organization=org, name="Bench line", max_current=line_a)
    LoadGroupMember.objects.bulk_create(LoadGroupMember(group=group, station=s) for s in stations)
    return org.pk


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Seed, start the portal and a worker, run the events, stop everything."""
    org_id = seed_group(args.stations, args.line)
    env = env_for(args)
    port = args.port
    server = subprocess.Popen(
        [
            PY,
            "-m",
            "uvicorn",
            "portal.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--ws-max-size",
            "65536",
        ],
        cwd=ROOT,
        env=env,
        preexec_fn=raise_nofile,
    )
    worker = subprocess.Popen(
        [
            PY,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "--loglevel",
            os.environ.get("LMBENCH_WORKER_LOG", "warning"),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_port(port, server)
        return asyncio.run(latency_events(args, org_id, port))
    finally:
        for proc in (worker, server):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def latency_events(args: argparse.Namespace, org_id: int, port: int) -> dict[str, Any]:
    from asgiref.sync import sync_to_async

    from loadmgmt.models import ConnectorSetpoint
    from loadmgmt.tasks import recompute_soon
    from stations.models import StationCommand
    from stations.simulator import Car, SimStation

    sims: list[SimStation] = []
    try:
        sims = [
            SimStation(
                f"LMB-{i:04d}",
                f"ws://127.0.0.1:{port}/ocpp/",
                PASSWORD,
                connectors=1,
                meter_interval=30,
                heartbeat_interval=300,
            )
            for i in range(args.stations)
        ]
        for chunk in range(0, len(sims), 50):
            await asyncio.gather(*(s.start() for s in sims[chunk : chunk + 50]))

        async def quiet_for(seconds: float, since) -> None:
            """Until no SetChargingProfile created since ``since`` is pending, for a while."""
            calm_since = None
            while True:
                pending = await StationCommand.objects.filter(
                    action="SetChargingProfile", created_at__gte=since, status="pending"
                ).aexists()
                running = await sync_to_async(_lock_held)(org_id)
                now = time.monotonic()
                if pending or running:
                    calm_since = None
                elif calm_since is None:
                    calm_since = now
                elif now - calm_since >= seconds:
                    return
                # The figures come from the portal's own timestamps: polling slower costs
                # nothing in accuracy and leaves the two cores to the portal.
                await asyncio.sleep(0.05)

        from django.utils import timezone

        start = timezone.now()
        await sync_to_async(recompute_soon)(org_id)
        await asyncio.sleep(0.5)
        await quiet_for(0.5, start)
        accepted: dict[int, tuple] = {}
        await profiles_since(start, accepted)
        events: list[dict[str, Any]] = []
        rng = random.Random(7)
        idle = list(range(args.stations))
        rng.shuffle(idle)
        charging: list[int] = []
        plan = ["arrive"] * args.arrivals + ["leave"] * args.departures
        for kind in plan:
            t0 = timezone.now()
            if kind == "arrive":
                i = idle.pop()
                charging.append(i)
                await sims[i].plug_in(
                    1, Car(battery_kwh=80, soc=10, phases=3, max_current_a=32), id_tag="BENCH"
                )
            else:
                i = charging.pop(rng.randrange(len(charging)))
                await sims[i].unplug(1)
            await asyncio.sleep(0.05)
            await quiet_for(0.3, t0)
            affected, everything, count = await profiles_since(t0, accepted)
            if affected is None:
                continue  # no setpoint changed (nothing to wait for)
            events.append(
                {
                    "n": len(events),
                    "kind": kind,
                    "at": t0.strftime("%H:%M:%S.%f")[:-3],
                    # Stations whose setpoint the event changed, all accepted.
                    "ms": ms_since(t0, affected),
                    # Also counting lease renewals of unchanged setpoints sent meanwhile.
                    "ms_all": ms_since(t0, everything),
                    "profiles": count,
                }
            )
        ms = [e["ms"] for e in events]
        ms_all = [e["ms_all"] for e in events]
        changed = [e["profiles"] for e in events]
        states = [s async for s in ConnectorSetpoint.objects.all()]
        return {
            "stations": args.stations,
            "line_a": args.line,
            "events": len(events),
            "p50_ms": round(pct(ms, 50), 1),
            "p90_ms": round(pct(ms, 90), 1),
            "p99_ms": round(pct(ms, 99), 1),
            "max_ms": round(max(ms), 1),
            "with_renewals_p50_ms": round(pct(ms_all, 50), 1),
            "with_renewals_p99_ms": round(pct(ms_all, 99), 1),
            # The tail, to read with the worker's step timings (LMBENCH_WORKER_LOG=info).
            "slowest": sorted(events, key=lambda e: -e["ms"])[:5],
            "profiles_per_event_median": sorted(changed)[len(changed) // 2],
            "charging_at_end": sum(1 for s in states if s.decision == "charge"),
            "waiting_at_end": sum(1 for s in states if s.decision == "queued"),
        }
    finally:
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)


def _lease(command) -> tuple | None:
    """(limit, phases) of a load-management lease (stack level 1), None for the fail-safe."""
    profile = command.payload["csChargingProfiles"]
    if profile["stackLevel"] != 1:
        return None
    period = profile["chargingSchedule"]["chargingSchedulePeriod"][0]
    return period["limit"], period.get("numberPhases", 3)


async def profiles_since(since, accepted: dict[int, tuple]):
    """Walk the setpoints sent since ``since`` in order: the last answer among those that
    changed a station's setpoint (against what it had accepted before), the last answer of
    all, and how many changed. ``accepted`` (station → lease) is kept up to date."""
    from stations.models import StationCommand

    affected = everything = None
    changed = 0
    async for command in StationCommand.objects.filter(
        action="SetChargingProfile", created_at__gte=since
    ).order_by("pk"):
        lease = _lease(command)
        if lease is None:
            continue
        if command.finished_at is not None:
            everything = max(everything or command.finished_at, command.finished_at)
        if lease != accepted.get(command.station_id):
            changed += 1
            if command.finished_at is not None:
                affected = max(affected or command.finished_at, command.finished_at)
        if command.status == "accepted":
            accepted[command.station_id] = lease
    return affected, everything, changed


def ms_since(t0, t) -> float:
    return round((t - t0).total_seconds() * 1000, 1)


def _lock_held(org_id: int) -> bool:
    from django.core.cache import cache

    from loadmgmt.tasks import _lock_key, _scheduled_key

    return bool(cache.get(_lock_key(org_id)) or cache.get(_scheduled_key(org_id)))


# --- cycle ----------------------------------------------------------------------------------


def seed_big(stations: int, groups: int, boards: int) -> int:
    from django.utils import timezone

    from loadmgmt.models import LoadGroup, LoadGroupMember, StationLimits, TreeNode
    from portal.models import Organization
    from stations.models import ChargingSession, Connector, Station

    org = Organization.objects.create(slug="lm-cycle", name="Cycle bench")
    house = TreeNode.objects.create(
        organization=org, name="House", limit_l1=4000, limit_l2=4000, limit_l3=4000
    )
    board_rows = [
        TreeNode.objects.create(
            organization=org,
            name=f"Board {b}",
            parent=house,
            limit_l1=400,
            limit_l2=400,
            limit_l3=400,
        )
        for b in range(boards)
    ]
    group_rows = LoadGroup.objects.bulk_create(
        LoadGroup(organization=org, name=f"Line {g}", max_current=63, node=board_rows[g % boards])
        for g in range(groups)
    )
    rows = Station.objects.bulk_create(
        (
            Station(organization=org, charge_point_id=f"LMC-{i:05d}", online=True)
            for i in range(stations)
        ),
        batch_size=2000,
    )
    Connector.objects.bulk_create(
        (
            Connector(station=s, connector_id=1, status="Charging" if i % 3 == 0 else "Available")
            for i, s in enumerate(rows)
        ),
        batch_size=2000,
    )
    rotations = ["L1-L2-L3", "L2-L3-L1", "L3-L1-L2"]
    StationLimits.objects.bulk_create(
        (
            StationLimits(station=s, phase_rotation=rotations[i % 3], can_switch_phases=True)
            for i, s in enumerate(rows)
        ),
        batch_size=2000,
    )
    LoadGroupMember.objects.bulk_create(
        (LoadGroupMember(group=group_rows[i % groups], station=s) for i, s in enumerate(rows)),
        batch_size=2000,
    )
    now = timezone.now()
    ChargingSession.objects.bulk_create(
        (
            ChargingSession(
                station=s,
                connector_id=1,
                id_tag="X",
                meter_start=0,
                started_at=now - timedelta(minutes=i % 120),
                station_started_at=now,
                idempotency_key=f"b{i}",
            )
            for i, s in enumerate(rows)
            if i % 3 == 0
        ),
        batch_size=2000,
    )
    return org.pk


def cycle(args: argparse.Namespace) -> dict[str, Any]:
    from loadmgmt.recompute import recompute

    org_id = seed_big(args.big_stations, args.big_groups, 20)
    first = recompute(org_id)
    runs = []
    for _ in range(args.cycles):
        t = time.perf_counter()
        report = recompute(org_id)
        runs.append((time.perf_counter() - t) * 1000)
    runs.sort()
    return {
        "stations": args.big_stations,
        "groups": args.big_groups,
        "first_cycle_ms": round(first.seconds * 1000, 1),
        "first_cycle_profiles_sent": first.sent_decreases + first.sent_increases + first.renewed,
        "steady_cycle_median_ms": round(runs[len(runs) // 2], 1),
        "steady_cycle_max_ms": round(runs[-1], 1),
        "steady_profiles_sent": report.sent_decreases + report.sent_increases + report.renewed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["latency", "cycle", "both"], default="both")
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--line", type=int, default=250, help="the group's limit, A per phase")
    parser.add_argument("--arrivals", type=int, default=60)
    parser.add_argument("--departures", type=int, default=20)
    parser.add_argument("--big-stations", type=int, default=10_000)
    parser.add_argument("--big-groups", type=int, default=480)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--db", default="loadmgmt_bench")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if args.stations > 1000 or args.big_stations > 20_000:
        raise SystemExit("bounded: at most 1,000 stations live and 20,000 in the cycle")
    fresh_db(args)
    # The cycle runs in this process: no waiting for answers that never come (no stations).
    django_setup(args, LOADMGMT_ACK_WAIT_SECONDS="0")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "command": " ".join([".venv/bin/python", "bench/loadmgmt_bench.py", *sys.argv[1:]]),
    }
    if args.part in ("latency", "both"):
        os.environ["LOADMGMT_ACK_WAIT_SECONDS"] = "5"
        results["latency"] = latency(args)
        os.environ["LOADMGMT_ACK_WAIT_SECONDS"] = "0"
    if args.part in ("cycle", "both"):
        results["cycle"] = cycle(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
