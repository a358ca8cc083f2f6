"""The production topology on one machine: N Uvicorn ASGI processes behind nginx, a Celery
worker and one beat, on the machine's PostgreSQL and Redis (docs/OPERATIONS.md, "Production
topology on one machine (tested)").

    deploy/topology up [--asgi N] [--port P] [--dir DIR]
    deploy/topology down | status [--json] | restart-asgi [--dir DIR]
    deploy/topology kill-asgi I | start-asgi I [--dir DIR]

Only the standard library: it runs before (and independently of) the portal's own imports, and
the tests and benchmarks drive it as a command, exactly as an operator would.

Everything it starts is a detached process (its own session) with a pid file and a log under
DIR, and carries ``TOPOLOGY_DIR=<DIR>`` in its environment: a pid is only ever signalled after
checking that marker, so a recycled pid of some other program is never killed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "var" / "topology"
DEFAULT_PORT = 8080
DEFAULTS = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/portal",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}
# Production settings (portal/settings.py) that a plain-http load balancer on loopback needs.
# Anything already in the caller's environment wins (tests pass their own database, channel
# prefix and short load-management cycles this way).
PRODUCTION_ENV = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    # nginx here speaks plain http; behind a TLS-terminating balancer leave this on.
    "SECURE_SSL_REDIRECT": "0",
    "PERIODIC_IN_PROCESS": "0",  # beat runs the schedule, not every ASGI process
    "SITE_URL": "http://127.0.0.1",
}
HEALTH_TIMEOUT = 60.0
STOP_GRACE = 10.0


class TopologyError(Exception):
    """Something the operator must fix; printed without a traceback."""


@dataclass(frozen=True)
class Layout:
    """Where the files of one topology live."""

    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / "topology.json"

    @property
    def env_file(self) -> Path:
        return self.dir / "env.json"  # mode 0600: holds SECRET_KEY

    def pid(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    @property
    def nginx_conf(self) -> Path:
        return self.dir / "nginx.conf"


# ---------------------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ours(pid: int, layout: Layout) -> bool:
    """The process carries this topology's marker (never signal a recycled pid)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # nginx overwrites its environment with its process title, which keeps the command line.
    return (
        f"TOPOLOGY_DIR={layout.dir}".encode() in environ
        or str(layout.nginx_conf).encode() in cmdline
    )


def _read_pid(layout: Layout, name: str) -> int | None:
    try:
        pid = int(layout.pid(name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and _ours(pid, layout) else None


def _spawn(layout: Layout, name: str, args: list[str], env: dict[str, str]) -> int:
    log = layout.log(name).open("ab")
    log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start {name}\n".encode())
    log.flush()
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**env, "TOPOLOGY_DIR": str(layout.dir)},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # outlives this command; its own process group
    )
    log.close()
    layout.pid(name).write_text(f"{proc.pid}\n")
    return proc.pid


def _signal(layout: Layout, name: str, sig: signal.Signals) -> int | None:
    pid = _read_pid(layout, name)
    if pid is None:
        return None
    try:
        os.killpg(pid, sig)  # the group: a prefork Celery worker's children too
    except ProcessLookupError:
        return None
    return pid


def _stop(layout: Layout, name: str, sig: signal.Signals = signal.SIGTERM) -> bool:
    pid = _signal(layout, name, sig)
    if pid is None:
        layout.pid(name).unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + STOP_GRACE
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
    layout.pid(name).unlink(missing_ok=True)
    return True


def _raise_fd_limit() -> int:
    """Thousands of stations mean thousands of sockets per process: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft if hard == resource.RLIM_INFINITY else hard


# ---------------------------------------------------------------------------- health


def _get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Host": "127.0.0.1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def _wait_healthy(
    url: str, *, pid: int | None = None, log: Path | None = None, timeout: float = HEALTH_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            raise TopologyError(f"process {pid} exited while starting: see {log}")
        status, body = _get(url + "/healthz")
        if status == 200:
            return
        last = f"{status} {body[:200]}"
        time.sleep(0.2)
    raise TopologyError(f"{url}/healthz did not answer 200 within {timeout:.0f} s ({last})")


def _connections_by_port() -> dict[int, int]:
    """Established TCP connections per local port (loopback), from /proc/net/tcp{,6}."""
    counts: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01":  # ESTABLISHED
                port = int(fields[1].rsplit(":", 1)[1], 16)
                counts[port] = counts.get(port, 0) + 1
    return counts


# ---------------------------------------------------------------------------- commands


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return os.environ.get("TOPOLOGY_PYTHON") or (str(venv) if venv.exists() else sys.executable)


def _load(layout: Layout) -> tuple[dict, dict[str, str]]:
    try:
        state = json.loads(layout.state.read_text())
        env = json.loads(layout.env_file.read_text())
    except OSError as exc:
        raise TopologyError(f"no topology in {layout.dir} (run 'up' first)") from exc
    return state, env


def _asgi_args(port: int) -> list[str]:
    return [
        _python(),
        "-m",
        "uvicorn",
        "portal.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # nginx on loopback is the only client: trust its X-Forwarded-For/-Proto.
        "--proxy-headers",
        "--forwarded-allow-ips",
        "127.0.0.1",
        "--ws-max-size",
        "65536",
        # Some chargers ignore websocket pings; OCPP Heartbeats tell us who is alive.
        "--ws-ping-interval",
        "0",
        "--backlog",
        "4096",  # a reconnect storm of thousands of stations queues here, not refused
        "--timeout-graceful-shutdown",
        "5",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def _start_asgi(layout: Layout, state: dict, env: dict[str, str], index: int) -> int:
    port = state["port"] + index
    return _spawn(layout, f"asgi-{index}", _asgi_args(port), env)


def _start_celery(layout: Layout, state: dict, env: dict[str, str]) -> None:
    python = _python()
    _spawn(
        layout,
        "celery-worker",
        [
            python,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--loglevel",
            "warning",
            # The tasks wait on PostgreSQL, Redis and stations far more than they compute;
            # threads start in a second and share one process's memory.
            "--pool",
            "threads",
            "--concurrency",
            str(state.get("worker_concurrency", 4)),
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"worker-{state['port']}@%h",
        ],
        env,
    )
    _spawn(
        layout,
        "celery-beat",
        [
            python,
            "-m",
            "celery",
            "-A",
            "portal",
            "beat",
            "--loglevel",
            "warning",
            "--schedule",
            str(layout.dir / "celerybeat-schedule"),
        ],
        env,
    )


def nginx_config(layout: Layout, port: int, asgi: int, *, workers: str, fds: int) -> str:
    """The load balancer's configuration (every directive explained in docs/OPERATIONS.md)."""
    d = layout.dir
    servers = "\n".join(
        f"        server 127.0.0.1:{port + i} max_fails=0;" for i in range(1, asgi + 1)
    )
    # Per worker: a proxied websocket is two connections (station, ASGI process), each a file.
    connections = max(1024, min(65536, fds - 100))
    return f"""# Generated by deploy/topology; edit deploy/topology.py instead.
worker_processes {workers};
worker_rlimit_nofile {fds};
pid {d}/run/nginx-master.pid;  # nginx's own; ours is run/nginx.pid
error_log {d}/logs/nginx-error.log warn;
daemon off;
worker_shutdown_timeout 5s;

events {{
    worker_connections {connections};
}}

http {{
    access_log off;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    upstream portal {{
        zone portal 64k;
        least_conn;
{servers}
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name _;
        client_max_body_size 2m;

        location / {{
            proxy_pass http://portal;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 2s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout;
            proxy_buffering off;
        }}
    }}
}}
"""


def _nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise TopologyError(
            "nginx is not installed. Install Debian's package (the system service is not "
            "needed and is not started by this script):\n"
            "    apt-get install -y nginx-light   # or: apt-get install -y nginx"
        )
    return found


def up(layout: Layout, *, asgi: int, port: int, nginx_workers: str) -> None:
    if asgi < 1:
        raise TopologyError("--asgi must be at least 1")
    nginx = _nginx_binary()
    running = [n for n in _names(layout, asgi) if _read_pid(layout, n)]
    if running:
        raise TopologyError(f"already running in {layout.dir}: {', '.join(running)} (run 'down')")
    for sub in ("run", "logs", "tmp"):
        (layout.dir / sub).mkdir(parents=True, exist_ok=True)
    fds = _raise_fd_limit()

    env = {**os.environ}
    for key, value in {
        **DEFAULTS,
        **PRODUCTION_ENV,
        # One key for every process of this topology (sessions, CSRF), new for each 'up'.
        "SECRET_KEY": secrets.token_urlsafe(50),
        "STATIC_ROOT": str(layout.dir / "static"),
    }.items():
        if not env.get(key):
            env[key] = value
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    state = {"port": port, "asgi": asgi, "nginx_workers": nginx_workers}
    layout.env_file.touch(mode=0o600)
    layout.env_file.write_text(json.dumps(env))
    layout.state.write_text(json.dumps(state, indent=2))

    python = _python()
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
        step = subprocess.run(
            [python, "manage.py", *command, "-v", "0"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if step.returncode != 0:
            raise TopologyError(f"manage.py {command[0]} failed:\n{step.stdout}{step.stderr}")

    pids = {i: _start_asgi(layout, state, env, i) for i in range(1, asgi + 1)}
    _start_celery(layout, state, env)
    layout.nginx_conf.write_text(nginx_config(layout, port, asgi, workers=nginx_workers, fds=fds))
    test = subprocess.run(
        [
            nginx,
            "-t",
            "-q",
            "-p",
            str(layout.dir),
            "-c",
            str(layout.nginx_conf),
            "-e",
            str(layout.log("nginx-error")),
        ],
        capture_output=True,
        text=True,
    )
    if test.returncode != 0:
        down(layout)
        raise TopologyError(f"nginx rejected {layout.nginx_conf}:\n{test.stderr}")
    _spawn(
        layout,
        "nginx",
        [
            nginx,
            "-p",
            str(layout.dir),
            "-c",
            str(layout.nginx_conf),
            "-e",
            str(layout.log("nginx-error")),
        ],
        env,
    )
    try:
        for i, pid in pids.items():
            _wait_healthy(f"http://127.0.0.1:{port + i}", pid=pid, log=layout.log(f"asgi-{i}"))
        _wait_healthy(f"http://127.0.0.1:{port}", log=layout.log("nginx"))
    except TopologyError:
        down(layout)
        raise
    print(f"portal:        http://127.0.0.1:{port}/")
    print(f"OCPP stations: ws://127.0.0.1:{port}/ocpp/<charge point id>")
    for i in range(1, asgi + 1):
        print(f"asgi-{i}:        http://127.0.0.1:{port + i}/  (pid {pids[i]})")
    print(f"files:         {layout.dir} (logs/, run/, nginx.conf)")


def _names(layout: Layout, asgi: int | None = None) -> list[str]:
    if asgi is None:
        try:
            asgi = json.loads(layout.state.read_text())["asgi"]
        except (OSError, ValueError, KeyError):
            asgi = len(list((layout.dir / "run").glob("asgi-*.pid")))
    return [*(f"asgi-{i}" for i in range(1, asgi + 1)), "celery-worker", "celery-beat", "nginx"]


def down(layout: Layout) -> None:
    # The balancer first (no new connections), then the ASGI processes, then Celery. SIGTERM
    # everywhere: nginx's graceful SIGQUIT would wait for every station's socket to close.
    order = _names(layout)
    order = [order[-1], *order[:-1]]
    for name in order:
        if _stop(layout, name):
            print(f"stopped {name}")


def _index(state: dict, value: int) -> int:
    if not 1 <= value <= state["asgi"]:
        raise TopologyError(f"ASGI process {value} does not exist (1..{state['asgi']})")
    return value


def kill_asgi(layout: Layout, index: int) -> None:
    state, _ = _load(layout)
    name = f"asgi-{_index(state, index)}"
    pid = _signal(layout, name, signal.SIGKILL)
    if pid is None:
        raise TopologyError(f"{name} is not running")
    while _alive(pid):
        time.sleep(0.01)
    print(f"killed {name} (pid {pid})")


def start_asgi(layout: Layout, index: int) -> None:
    state, env = _load(layout)
    name = f"asgi-{_index(state, index)}"
    if _read_pid(layout, name):
        raise TopologyError(f"{name} is already running")
    pid = _start_asgi(layout, state, env, index)
    _wait_healthy(f"http://127.0.0.1:{state['port'] + index}", pid=pid, log=layout.log(name))
    print(f"started {name} (pid {pid})")


def restart_asgi(layout: Layout) -> None:
    """Every ASGI process at once: all their stations reconnect together (a storm)."""
    state, env = _load(layout)
    indexes = range(1, state["asgi"] + 1)
    for i in indexes:
        _stop(layout, f"asgi-{i}")
    pids = {i: _start_asgi(layout, state, env, i) for i in indexes}
    for i, pid in pids.items():
        _wait_healthy(f"http://127.0.0.1:{state['port'] + i}", pid=pid, log=layout.log(f"asgi-{i}"))
    print(f"restarted {len(pids)} ASGI processes")


def status(layout: Layout, *, as_json: bool) -> bool:
    state, _ = _load(layout)
    port = state["port"]
    established = _connections_by_port()
    rows = []
    for name in _names(layout, state["asgi"]):
        pid = _read_pid(layout, name)
        row: dict = {"name": name, "pid": pid, "running": pid is not None}
        if name.startswith("asgi-"):
            row["port"] = port + int(name.split("-")[1])
        elif name == "nginx":
            row["port"] = port
        if "port" in row:
            row["url"] = f"http://127.0.0.1:{row['port']}"
            code, body = _get(row["url"] + "/healthz") if pid is not None else (0, "")
            row["healthy"] = code == 200
            if pid is not None and code != 200:
                row["health"] = f"{code} {body[:300]}"
            # Connections accepted on that port: stations' sockets (and a few idle HTTP
            # keep-alives from nginx) for an ASGI process, clients for nginx.
            row["connections"] = established.get(row["port"], 0)
        rows.append(row)
    ok = all(r["running"] and r.get("healthy", True) for r in rows)
    if as_json:
        print(json.dumps({"dir": str(layout.dir), "port": port, "ok": ok, "processes": rows}))
    else:
        for r in rows:
            health = ""
            if r["running"] and "healthy" in r:
                health = " healthy" if r["healthy"] else " UNHEALTHY"
            where = f" {r['url']} connections={r['connections']}" if "url" in r else ""
            state_text = f"pid {r['pid']}" if r["running"] else "stopped"
            print(f"{r['name']:<14} {state_text:<11}{health}{where}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/topology", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="pids, logs, config")
        return sub

    start = command("up", "migrate, start ASGI processes, Celery worker and beat, nginx")
    start.add_argument("--asgi", type=int, default=2, help="ASGI processes (default 2)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help="nginx port (8080)")
    start.add_argument("--nginx-workers", default="auto", help="worker_processes (auto)")
    command("down", "stop everything 'up' started")
    command("restart-asgi", "restart every ASGI process at once (a reconnect storm)")
    for name, text in (("kill-asgi", "SIGKILL ASGI process I"), ("start-asgi", "start I")):
        command(name, text).add_argument("index", type=int, metavar="I", help="1-based")
    command("status", "processes, health and connections").add_argument(
        "--json", action="store_true"
    )
    args = parser.parse_args(argv)
    layout = Layout(args.dir.resolve())
    try:
        if args.command == "up":
            up(layout, asgi=args.asgi, port=args.port, nginx_workers=args.nginx_workers)
        elif args.command == "down":
            down(layout)
        elif args.command == "restart-asgi":
            restart_asgi(layout)
        elif args.command == "kill-asgi":
            kill_asgi(layout, args.index)
        elif args.command == "start-asgi":
            start_asgi(layout, args.index)
        elif args.command == "status":
            return 0 if status(layout, as_json=args.json) else 1
    except TopologyError as exc:
        print(f"topology: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
