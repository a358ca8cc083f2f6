"""OCPP central-system benchmark: N simulated stations against (a) one ASGI process of the
portal (Uvicorn, Redis channel layer, PostgreSQL) and (b) a bare `websockets` + `ocpp` server
that persists nothing (bench/bare_csms.py), in the same run. Loopback only; bounded in count
and time. See bench/README.md.

    .venv/bin/python bench/ocpp_bench.py --stations 5000 --targets bare,portal

Phases per target: connect N stations (bounded handshake concurrency) and hold them for
`--hold` seconds with heartbeats every `--heartbeat` seconds; then `--mv-workers` of them send
MeterValues back to back (one outstanding CALL each, as OCPP-J demands) for `--mv-seconds`.
Reported: stations held, heartbeats answered, MeterValues/s with p50/p99 answer time, server
RSS delta per connection, CPU seconds of server and load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stations.simulator import Fleet, Stats  # noqa: E402

PASSWORD = "bench-station-password-0001"
PREFIX = "BENCH-"
PY = str(ROOT / ".venv" / "bin" / "python")


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_port(port: int, proc: subprocess.Popen[Any], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise SystemExit(f"server did not listen on {port}")


def portal_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{args.db}",
        REDIS_URL=args.redis,
        CHANNEL_PREFIX="ocppbench",
        CACHE_PREFIX="ocppbench",
        DJANGO_SETTINGS_MODULE="portal.settings",
        LOG_LEVEL=args.portal_log_level,
        # Production settings: with DEBUG on, Django keeps every query in memory and wraps
        # each cursor, which is not what a deployment pays.
        DEBUG="0",
        SECRET_KEY="bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFG",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="0",
        PERIODIC_IN_PROCESS="0",
    )
    return env


def setup_portal_db(args: argparse.Namespace) -> None:
    """Create and migrate the bench database and register N stations with one password."""
    env = portal_env(args)
    subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", args.db],
        env=env,
        capture_output=True,
        check=False,  # exists already: fine
    )
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run([PY, __file__, "--_register", str(args.stations)], cwd=ROOT, env=env, check=True)


def register_stations(count: int) -> None:
    import django

    django.setup()
    from portal.models import Organization
    from stations.credentials import station_password_hash
    from stations.models import Connector, Station

    org, _ = Organization.objects.get_or_create(slug="ocpp-bench", defaults={"name": "Bench"})
    have = set(
        Station.objects.filter(charge_point_id__startswith=PREFIX).values_list(
            "charge_point_id", flat=True
        )
    )
    wanted = [f"{PREFIX}{i:05d}" for i in range(1, count + 1)]
    new = [
        Station(
            organization=org,
            charge_point_id=cp_id,
            name=cp_id,
            password_hash=station_password_hash(PASSWORD),
        )
        for cp_id in wanted
        if cp_id not in have
    ]
    Station.objects.bulk_create(new, batch_size=1000)
    stations = Station.objects.filter(charge_point_id__in=[s.charge_point_id for s in new])
    Connector.objects.bulk_create(
        [Connector(station=s, connector_id=1) for s in stations], batch_size=1000
    )
    print(f"bench db: {len(new)} stations registered, {len(have)} already there")


def start_server(target: str, port: int, args: argparse.Namespace) -> subprocess.Popen[Any]:
    if target == "bare":
        cmd = [PY, str(ROOT / "bench" / "bare_csms.py"), "--port", str(port)]
        env = dict(os.environ)
    else:
        cmd = [
            str(ROOT / ".venv" / "bin" / "uvicorn"),
            "portal.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--backlog",
            "4096",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        env = portal_env(args)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, preexec_fn=raise_nofile)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run_load(url: str, server_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    fleet = Fleet.build(
        args.stations,
        url,
        password=PASSWORD,
        prefix=PREFIX,
        connectors=1,
        seed=1,
        heartbeat_interval=args.heartbeat,
        meter_interval=0,
        validate_messages=False,  # the load generator must not be the bottleneck
        response_timeout=60,
        open_timeout=60,
        reconnect_backoff=(1.0, 30.0),
        stats=stats,
    )
    for st in fleet.stations:
        st.config["WebSocketPingInterval"].value = "0"
    out: dict[str, Any] = {"stations": args.stations}
    await asyncio.sleep(1)
    rss0 = rss_kb(server_pid)
    client_rss0 = rss_kb(os.getpid())
    t0 = time.monotonic()
    online = await fleet.start(concurrency=args.ramp_concurrency, online_within=args.max_connect)
    out["connect_seconds"] = round(time.monotonic() - t0, 1)
    out["online_after_connect"] = online
    hb0 = stats.sent.get("Heartbeat", 0)
    await asyncio.sleep(args.hold)
    held = sum(s.online for s in fleet.stations)
    rss1 = rss_kb(server_pid)
    out.update(
        held=held,
        heartbeats_sent=stats.sent.get("Heartbeat", 0) - hb0,
        call_errors=dict(stats.call_errors),
        timeouts=stats.timeouts,
        disconnects=stats.disconnects,
        connect_failures=stats.connect_failures,
        server_rss_mb=round(rss1 / 1024, 1),
        server_kb_per_connection=round((rss1 - rss0) / max(1, held), 1),
        client_kb_per_station=round((rss_kb(os.getpid()) - client_rss0) / max(1, held), 1),
    )

    workers = [s for s in fleet.stations if s.online][: args.mv_workers]
    latencies: list[float] = []
    errors = 0
    warm_until = time.monotonic() + args.mv_warmup
    stop_at = warm_until + args.mv_seconds

    async def worker(st: Any) -> None:
        nonlocal errors
        while True:
            begin = time.monotonic()
            if begin >= stop_at:
                return
            try:
                await st.send_meter_values(1)
            except Exception:
                errors += 1
                await asyncio.sleep(0.1)
                continue
            if begin >= warm_until:
                latencies.append(time.monotonic() - begin)

    cpu_server0, cpu_client0 = None, None

    async def mark() -> None:
        nonlocal cpu_server0, cpu_client0
        await asyncio.sleep(max(0.0, warm_until - time.monotonic()))
        cpu_server0, cpu_client0 = cpu_seconds(server_pid), self_cpu()

    marker = asyncio.create_task(mark())
    await asyncio.gather(*(worker(s) for s in workers))
    await marker
    elapsed = time.monotonic() - warm_until
    out.update(
        mv_workers=len(workers),
        mv_per_second=round(len(latencies) / elapsed, 1),
        mv_p50_ms=round(pct(latencies, 50) * 1000, 1),
        mv_p99_ms=round(pct(latencies, 99) * 1000, 1),
        mv_errors=errors,
        server_cpu_share=round((cpu_seconds(server_pid) - cpu_server0) / elapsed, 2),
        client_cpu_share=round((self_cpu() - cpu_client0) / elapsed, 2),
        held_after_mv=sum(s.online for s in fleet.stations),
    )
    await fleet.stop()
    return out


def run_target(target: str, args: argparse.Namespace) -> dict[str, Any]:
    port = args.port_bare if target == "bare" else args.port_portal
    proc = start_server(target, port, args)
    try:
        wait_port(port, proc)
        url = f"ws://127.0.0.1:{port}/ocpp/"
        runner = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
        result = runner(
            asyncio.wait_for(run_load(url, proc.pid, args), args.max_seconds_per_target)
        )
        result["target"] = target
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=5000)
    parser.add_argument("--targets", default="bare,portal")
    parser.add_argument("--hold", type=float, default=60, help="seconds held with heartbeats")
    parser.add_argument("--heartbeat", type=int, default=30, help="heartbeat interval, s")
    parser.add_argument("--ramp-concurrency", type=int, default=100)
    parser.add_argument("--max-connect", type=float, default=180, help="s per station")
    parser.add_argument("--mv-workers", type=int, default=500)
    parser.add_argument("--mv-seconds", type=float, default=30)
    parser.add_argument("--mv-warmup", type=float, default=5)
    parser.add_argument("--max-seconds-per-target", type=float, default=900)
    parser.add_argument("--port-bare", type=int, default=9100)
    parser.add_argument("--port-portal", type=int, default=9200)
    parser.add_argument("--db", default="ocpp_bench")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--portal-log-level", default="WARNING")
    parser.add_argument("--skip-setup", action="store_true")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--_register", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._register:
        register_stations(args._register)
        return
    if args.stations > 10_000 or args.hold > 600 or args.mv_seconds > 300:
        raise SystemExit("bounded: at most 10,000 stations, 600 s hold, 300 s MeterValues")
    nofile = raise_nofile()
    if nofile < args.stations * 2 + 100:
        raise SystemExit(f"ulimit -n is {nofile}; need about {args.stations * 2 + 100}")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if "portal" in targets and not args.skip_setup:
        setup_portal_db(args)
    results = [run_target(t, args) for t in targets]
    by = {r["target"]: r for r in results}
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "command": " ".join([".venv/bin/python", "bench/ocpp_bench.py", *sys.argv[1:]]),
        "results": results,
    }
    if "bare" in by and "portal" in by and by["bare"]["mv_per_second"]:
        summary["portal_to_bare_throughput"] = round(
            by["portal"]["mv_per_second"] / by["bare"]["mv_per_second"], 2
        )
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
