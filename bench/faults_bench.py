"""Fault injection, long version: Redis restart, PostgreSQL restart + stop, Celery worker
SIGKILL during live sessions, with more stations, longer outages and repeats.

    flock /tmp/heavy.lock .venv/bin/python bench/faults_bench.py --stations 30 --outage 15 \\
        --repeats 3 [--faults redis,postgres,celery] [--json /tmp/faults.json]

The machinery is the CI test's (tests/resilience/conftest.py): a private PostgreSQL cluster
and a private redis-server (never the machine's own), one Uvicorn process, a Celery worker
and beat on them, a fleet of simulated stations on one 32 A line. Each run seeds a fresh
organization; one table row per run. Figures: docs/RESILIENCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def _table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    lines = [" | ".join(k.ljust(widths[k]) for k in keys)]
    lines.append("-|-".join("-" * widths[k] for k in keys))
    lines += [" | ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> list[dict]:
    import logging

    import django

    django.setup()
    # The stations' client logs every CALLERROR it gets; during an outage that is thousands.
    logging.getLogger("ocpp").setLevel(logging.ERROR)
    from tests.resilience.conftest import (
        FaultFleet,
        FleetConfig,
        celery_worker_killed,
        missing_binaries,
        postgres_restart,
        private_services_start,
        private_services_stop,
        redis_restart,
    )

    if missing := missing_binaries():
        raise SystemExit(missing)
    workdir = Path(tempfile.mkdtemp(prefix="faults-bench-"))
    services = private_services_start(workdir)
    print("private services:", {k: round(v, 2) for k, v in services.setup_seconds.items()})
    charging = list(range(args.charging or max(6, args.stations // 2)))
    rows: list[dict] = []
    try:
        for repeat in range(args.repeats):
            for fault in args.faults.split(","):
                prefix = f"B{fault[0].upper()}{repeat}{os.getpid() % 1000}"
                config = FleetConfig(
                    prefix,
                    stations=args.stations,
                    lease_seconds=args.lease,
                    retry_attempts=args.attempts,
                )
                run_dir = workdir / prefix
                run_dir.mkdir()
                fleet = FaultFleet(services, config, run_dir)
                try:
                    await fleet.start()
                    if fault == "redis":
                        result = await redis_restart(fleet, charging, args.outage, args.recovery)
                    elif fault == "postgres":
                        result = await postgres_restart(fleet, charging, args.outage, args.recovery)
                    else:
                        result = await celery_worker_killed(fleet, charging, args.recovery)
                finally:
                    await fleet.close()
                    if not services.postgres.running:
                        services.postgres.start()
                    if services.redis.proc is None:
                        services.redis.start()
                row = {"run": repeat + 1, **result.row()}
                if result.fail_safe_held is not None:
                    row["fail-safe held"] = result.fail_safe_held
                rows.append(row)
                print(json.dumps(row), flush=True)
                for problem in result.audit.problems[:10]:
                    print("   problem:", problem)
    finally:
        private_services_stop(services)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=30)
    parser.add_argument("--charging", type=int, default=0, help="cars (default: half)")
    parser.add_argument("--outage", type=float, default=15.0, help="Redis/PostgreSQL down, s")
    parser.add_argument("--lease", type=float, default=8.0)
    parser.add_argument("--attempts", type=int, default=12, help="TransactionMessageAttempts")
    parser.add_argument("--recovery", type=float, default=60.0, help="recovery bound, s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--faults", default="redis,postgres,celery")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = asyncio.run(_run(args))
    print()
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
