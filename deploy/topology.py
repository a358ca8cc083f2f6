"""The production topology on one machine: N Uvicorn ASGI processes behind nginx, a Celery
worker and one beat, on the machine's PostgreSQL and Redis (docs/OPERATIONS.md, "Production
topology on one machine (tested)").

    deploy/topology up [--asgi N] [--port P] [--dir DIR]
    deploy/topology down | status [--json] | restart-asgi | supervise [--dir DIR]
    deploy/topology kill-asgi I | start-asgi I [--dir DIR]

Only the standard library: it runs before (and independently of) the portal's own imports, and
the tests and benchmarks drive it as a command, exactly as an operator would.

Everything it starts is a detached process (its own session) with a pid file and a log under
DIR, and carries ``TOPOLOGY_DIR=<DIR>`` in its environment: a pid is only ever signalled after
checking that marker, so a recycled pid of some other program is never killed.

``up`` also starts a supervisor (``run/supervisor.pid``, ``logs/supervisor.log``): it starts
the processes and restarts any that exits on its own, with a back-off. While it runs it is the
only one that starts processes (and so their parent, which alone learns their exit status):
the commands stop processes and change the wanted state (``held_down`` in ``topology.json``)
under ``run/topology.lock``, then hand the starting over to it. See docs/OPERATIONS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import resource
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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

SUPERVISOR = "supervisor"
SUPERVISE_INTERVAL = 1.0  # how often the supervisor looks when nothing wakes it earlier
BACKOFF_FIRST = 1.0  # the first restart of a process that exited waits this long...
BACKOFF_MAX = 30.0  # ...each next one twice as long, up to this: a crash loop costs little
# A process that stayed up this long failed anew when it exits: its back-off starts over.
BACKOFF_RESET_AFTER = 60.0
HANDOVER_TIMEOUT = 15.0  # a command waits this long for the supervisor to start a process


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

    @property
    def lock(self) -> Path:
        """Held by a command while it stops or starts processes; the supervisor waits."""
        return self.dir / "run" / "topology.lock"

    @property
    def supervisor_lock(self) -> Path:
        """Held by the running supervisor for its whole life: never two at once."""
        return self.dir / "run" / "supervisor.lock"

    @property
    def supervisor_state(self) -> Path:
        """Written by the supervisor: restarts and last exit status of each process."""
        return self.dir / "run" / "supervisor.json"


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


def _spawn(
    layout: Layout, name: str, args: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
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
    return proc


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
    return bool(_stop_together(layout, [name], sig))


def _stop_together(
    layout: Layout, names: list[str], sig: signal.Signals = signal.SIGTERM
) -> list[str]:
    """Signal every process in ``names`` first, then wait for them all under one grace period
    (SIGKILL for what is left after it): stopping ASGI processes one after the other would
    keep a restart's storm waiting for each one's graceful shutdown in turn. Returns the names
    of those that were running."""
    running = {}
    for name in names:
        pid = _read_pid(layout, name)
        if pid is None:
            layout.pid(name).unlink(missing_ok=True)
        else:
            running[name] = pid
    stopped = _stop_pids(layout, running, sig)
    for name in running:
        layout.pid(name).unlink(missing_ok=True)
    return stopped


def _stop_pids(
    layout: Layout, pids: dict[str, int], sig: signal.Signals = signal.SIGTERM
) -> list[str]:
    """``_stop_together`` by pid (the names only label them): their pid files are left as
    they are. Only processes of this topology are signalled."""
    signalled = {}
    for name, pid in pids.items():
        if not (_alive(pid) and _ours(pid, layout)):
            continue
        try:
            os.killpg(pid, sig)  # the group: a prefork Celery worker's children too
        except ProcessLookupError:
            continue
        signalled[name] = pid
    deadline = time.monotonic() + STOP_GRACE
    while any(_alive(pid) for pid in signalled.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in signalled.values():
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    while any(_alive(pid) for pid in signalled.values()) and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    return list(signalled)


def _recorded_pid(layout: Layout, name: str) -> int | None:
    """The pid in the pid file, whether that process still runs or not."""
    try:
        return int(layout.pid(name).read_text().strip())
    except (OSError, ValueError):
        return None


def _kill_leftovers(layout: Layout, name: str) -> None:
    """SIGKILL what is left of the process group of an exited process before starting it
    again: nginx's workers outlive a killed master and keep its port, so the new master could
    not listen. The group id is the old pid (its own session); Linux hands that number to no
    new process while the group has members, so a live, foreign holder of it means the group
    is gone and the number was recycled: leave it alone."""
    pid = _recorded_pid(layout, name)
    if pid is None or pid <= 1 or (_alive(pid) and not _ours(pid, layout)):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:  # Popen's way of saying "killed by a signal"
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@contextlib.contextmanager
def _command_lock(layout: Layout) -> Iterator[None]:
    """Held while a command stops or starts processes or changes the wanted state, so the
    supervisor never restarts a process a command is stopping nor starts one twice. Blocks
    while the supervisor is in the middle of a round (which takes milliseconds)."""
    if not (layout.dir / "run").is_dir():  # nothing was ever started here
        yield
        return
    # Opened without inheritance (Python's default): a process started meanwhile must not
    # hold the lock for its whole life.
    with layout.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _lock_unless_busy(layout: Layout) -> Iterator[bool]:
    """The supervisor's side of the lock: True if it got it, False while a command holds it."""
    with layout.lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _write_json(path: Path, data: dict) -> None:
    """Replace the file at once: the supervisor reads the state while commands change it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def _held_down(state: dict) -> set[str]:
    """Processes stopped on purpose (kill-asgi) that the supervisor must not start again."""
    return set(state.get("held_down", []))


def _retiring(state: dict) -> dict[str, int]:
    """ASGI processes a running 'restart-asgi' is replacing: no longer in their pid files,
    stopped once their successors answer (or left to serve if those never do)."""
    return dict(state.get("retiring", {}))


def _set_state(layout: Layout, **values: object) -> None:
    """Call with the command lock held."""
    state = json.loads(layout.state.read_text())
    state.update(values)
    _write_json(layout.state, state)


def _set_held_down(layout: Layout, names: set[str], held: bool) -> None:
    """Call with the command lock held."""
    state = json.loads(layout.state.read_text())
    current = _held_down(state)
    state["held_down"] = sorted(current | names if held else current - names)
    _write_json(layout.state, state)


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


def _control_address(pid: int) -> str:
    """The ASGI process's own socket (portal.serve.control_address; this script imports
    nothing of the portal's): a check through the shared port may reach either process of a
    port while one takes over from the other."""
    return f"\0portal-asgi-{pid}"


class _ControlConnection(http.client.HTTPConnection):
    def __init__(self, address: str, timeout: float) -> None:
        super().__init__("127.0.0.1", timeout=timeout)
        self.address = address

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _get_process(pid: int, path: str = "/healthz", timeout: float = 3.0) -> tuple[int, str]:
    """GET ``path`` from ASGI process ``pid`` itself."""
    connection = _ControlConnection(_control_address(pid), timeout)
    try:
        connection.request("GET", path, headers={"Host": "127.0.0.1"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return 0, str(exc) or type(exc).__name__
    finally:
        connection.close()


def _wait_healthy(
    url: str,
    *,
    pid: int | None = None,
    log: Path | None = None,
    timeout: float = HEALTH_TIMEOUT,
    probe: Callable[[], tuple[int, str]] | None = None,
) -> None:
    probe = probe or (lambda: _get(url + "/healthz"))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            raise TopologyError(f"process {pid} exited while starting: see {log}")
        status, body = probe()
        if status == 200:
            return
        last = f"{status} {body[:200]}"
        time.sleep(0.2)
    raise TopologyError(f"{url}: /healthz did not answer 200 within {timeout:.0f} s ({last})")


def _wait_asgi_healthy(layout: Layout, name: str, pid: int) -> None:
    """Until ASGI process ``pid`` itself answers /healthz with 200 (not its port: during a
    restart the old process of that port answers there too)."""
    _wait_healthy(
        f"{name} (pid {pid})", pid=pid, log=layout.log(name), probe=lambda: _get_process(pid)
    )


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
    # Uvicorn with the production options, on a port the next process of this index can
    # share while it takes over (portal/serve.py, restart_asgi).
    return [_python(), "-m", "portal.serve", "--port", str(port)]


def _celery_args(layout: Layout, state: dict, kind: str) -> list[str]:
    common = [_python(), "-m", "celery", "-A", "portal", kind, "--loglevel", "warning"]
    if kind == "beat":
        return [*common, "--schedule", str(layout.dir / "celerybeat-schedule")]
    return [
        *common,
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
    ]


def _nginx_args(layout: Layout) -> list[str]:
    return [
        _nginx_binary(),
        "-p",
        str(layout.dir),
        "-c",
        str(layout.nginx_conf),
        "-e",
        str(layout.log("nginx-error")),
    ]


def _process_args(layout: Layout, state: dict, name: str) -> list[str]:
    if name.startswith("asgi-"):
        return _asgi_args(state["port"] + int(name.removeprefix("asgi-")))
    if name == "celery-worker":
        return _celery_args(layout, state, "worker")
    if name == "celery-beat":
        return _celery_args(layout, state, "beat")
    if name == "nginx":
        return _nginx_args(layout)
    raise ValueError(f"not a process of the topology: {name}")


def _start_process(
    layout: Layout, state: dict, env: dict[str, str], name: str
) -> subprocess.Popen[bytes]:
    return _spawn(layout, name, _process_args(layout, state, name), env)


#: Station handshakes per second and ASGI process that nginx passes on; the excess is refused
#: in nginx (a 503 with a spread Retry-After) before it costs the processes anything. Above
#: what a process completes when it is saturated (25-55 a second on the 2-core benchmark
#: machine, docs/BENCHMARKS.md) and above any ramp of new stations, so it only bites in a
#: reconnect storm; the processes' own admission control (stations/admission.py) still
#: decides what gets through. 0: no limit.
HANDSHAKES_PER_SECOND = 50


def nginx_config(
    layout: Layout,
    port: int,
    asgi: int,
    *,
    workers: str,
    fds: int,
    handshakes_per_second: int = HANDSHAKES_PER_SECOND,
) -> str:
    """The load balancer's configuration (every directive explained in docs/OPERATIONS.md)."""
    d = layout.dir
    rate = handshakes_per_second * asgi
    # Two seconds' worth pass at once: a burst of stations booting together is normal.
    limit_zone, limit = (
        (
            f"""
    # Station handshakes beyond {rate} a second (all processes) are refused here; see
    # docs/OPERATIONS.md. Only websocket upgrades to /ocpp/ have a key, so only they count.
    map "$http_upgrade:$uri" $ocpp_handshake {{
        default "";
        "~*^websocket:/ocpp/" ocpp;
    }}
    limit_req_zone $ocpp_handshake zone=ocpp_handshakes:1m rate={rate}r/s;
    limit_req_status 429;
    limit_req_log_level info;
""",
            f"""            limit_req zone=ocpp_handshakes burst={2 * rate} nodelay;
            error_page 429 = @busy;
""",
        )
        if rate > 0
        else ("", "")
    )
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

    # Retry-After of the 503 sent when no ASGI process answers or too many stations connect
    # at once: spread, so that a fleet turned away does not come back as one wave.
    split_clients "${{request_id}}" $retry_after {{
        20% 5;
        20% 10;
        20% 15;
        20% 20;
        *   30;
    }}

{limit_zone}
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
            # When nginx received the request: a process refuses a station's handshake that
            # waited too long in its queue (stations/admission.py).
            proxy_set_header X-Request-Start "t=${{msec}}";
            proxy_connect_timeout 2s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout;
            proxy_buffering off;
{limit}            error_page 502 504 = @unavailable;
        }}

        # Too many stations connecting at once (limit_req above): told to come back in
        # 5-30 s, spread; the same 503 and Retry-After a busy process sends.
        location @busy {{
            add_header Retry-After $retry_after always;
            default_type text/plain;
            return 503 "Too many stations are connecting at once; try again later.\n";
        }}

        # No ASGI process answered (all restarting, or every listen queue full).
        location @unavailable {{
            add_header Retry-After $retry_after always;
            default_type text/plain;
            return 503 "The portal is restarting or busy; try again later.\n";
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


def up(
    layout: Layout,
    *,
    asgi: int,
    port: int,
    nginx_workers: str,
    handshakes_per_second: int = HANDSHAKES_PER_SECOND,
) -> None:
    if asgi < 1:
        raise TopologyError("--asgi must be at least 1")
    nginx = _nginx_binary()
    names = _names(layout, asgi)
    running = [n for n in [*names, SUPERVISOR] if _read_pid(layout, n)]
    if running:
        raise TopologyError(f"already running in {layout.dir}: {', '.join(running)} (run 'down')")
    _ports_free(port, asgi)
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
    state = {"port": port, "asgi": asgi, "nginx_workers": nginx_workers, "held_down": []}
    layout.env_file.touch(mode=0o600)
    layout.env_file.write_text(json.dumps(env))
    _write_json(layout.state, state)

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

    layout.nginx_conf.write_text(
        nginx_config(
            layout,
            port,
            asgi,
            workers=nginx_workers,
            fds=fds,
            handshakes_per_second=handshakes_per_second,
        )
    )
    test = subprocess.run(
        [nginx, "-t", "-q", *_nginx_args(layout)[1:]], capture_output=True, text=True
    )
    if test.returncode != 0:
        raise TopologyError(f"nginx rejected {layout.nginx_conf}:\n{test.stderr}")

    # The supervisor starts every process whose pid file is missing, and takes a pid file of a
    # dead process (a run that ended without 'down', a reboot) for a crash: start clean.
    for name in names:
        layout.pid(name).unlink(missing_ok=True)
    layout.supervisor_state.unlink(missing_ok=True)
    supervisor = _spawn_supervisor(layout, env)
    try:
        # Its signal handlers may not be installed yet: no wake-up signal, its first round
        # starts everything anyway.
        pids = _handed_over(layout, state, env, supervisor, names, wake=False)
        for i in range(1, asgi + 1):
            name = f"asgi-{i}"
            _wait_asgi_healthy(layout, name, pids[name])
        _wait_healthy(f"http://127.0.0.1:{port}", log=layout.log("nginx"))
    except TopologyError:
        down(layout)
        raise
    print(f"portal:        http://127.0.0.1:{port}/")
    print(f"OCPP stations: ws://127.0.0.1:{port}/ocpp/<charge point id>")
    for i in range(1, asgi + 1):
        print(f"asgi-{i}:        http://127.0.0.1:{port + i}/  (pid {pids[f'asgi-{i}']})")
    print(f"supervisor:    pid {supervisor}, restarts what exits ({layout.log(SUPERVISOR)})")
    print(f"files:         {layout.dir} (logs/, run/, nginx.conf)")


def _ports_free(port: int, asgi: int) -> None:
    """The ASGI processes bind their ports with SO_REUSEPORT (portal/serve.py): a port held
    by another process of the same user that did so too would be shared, not refused. So each
    port is tried here as a plain listener first (SO_REUSEADDR only, for connections of an
    earlier run still in TIME_WAIT)."""
    for each in range(port, port + asgi + 1):
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", each))
        except OSError as exc:
            raise TopologyError(f"port {each} is taken ({exc.strerror})") from exc
        finally:
            probe.close()


def _names(layout: Layout, asgi: int | None = None) -> list[str]:
    """The processes the topology runs (and the supervisor watches), in starting order."""
    if asgi is None:
        try:
            asgi = json.loads(layout.state.read_text())["asgi"]
        except (OSError, ValueError, KeyError):
            asgi = len(list((layout.dir / "run").glob("asgi-*.pid")))
    return [*(f"asgi-{i}" for i in range(1, asgi + 1)), "celery-worker", "celery-beat", "nginx"]


def _spawn_supervisor(layout: Layout, env: dict[str, str]) -> int:
    script = str(Path(__file__).resolve())
    args = [_python(), script, "_supervise", "--dir", str(layout.dir)]
    return _spawn(layout, SUPERVISOR, args, env).pid


def _handed_over(
    layout: Layout,
    state: dict,
    env: dict[str, str],
    supervisor: int,
    names: list[str],
    *,
    wake: bool = True,
) -> dict[str, int]:
    """The pids of ``names`` once the supervisor has started them (their pid files were
    removed under the command lock, which tells it to start them at once). Started here
    instead if the supervisor is gone."""
    if wake:
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor, signal.SIGUSR1)  # look now rather than at its next round
    deadline = time.monotonic() + HANDOVER_TIMEOUT
    while True:
        pids = {name: _read_pid(layout, name) for name in names}
        started = {name: pid for name, pid in pids.items() if pid is not None}
        if len(started) == len(names):
            return started
        for name in names:
            recorded = _recorded_pid(layout, name)  # written since pids were read, maybe
            if pids[name] is None and recorded is not None and not _alive(recorded):
                raise TopologyError(
                    f"{name} (pid {recorded}) exited while starting: see {layout.log(name)} "
                    f"(the supervisor tries again after a back-off)"
                )
        if not (_alive(supervisor) and _ours(supervisor, layout)):
            with _command_lock(layout):
                for name in names:
                    if _read_pid(layout, name) is None and _recorded_pid(layout, name) is None:
                        _start_process(layout, state, env, name)
            continue
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(set(names) - set(started)))
            raise TopologyError(
                f"the supervisor did not start {missing} within {HANDOVER_TIMEOUT:.0f} s: "
                f"see {layout.log(SUPERVISOR)}"
            )
        time.sleep(0.02)


def _start_processes(
    layout: Layout,
    state: dict,
    env: dict[str, str],
    names: list[str],
    prepare: Callable[[], None],
) -> dict[str, int]:
    """Run ``prepare`` (stop what is to be restarted, change the wanted state, remove the pid
    files of ``names``) under the command lock, then have ``names`` started: by the supervisor
    if it runs (then it alone starts processes and is their parent, which alone learns how they
    exit), else here."""
    with _command_lock(layout):
        prepare()
        supervisor = _read_pid(layout, SUPERVISOR)
        if supervisor is None:
            return {name: _start_process(layout, state, env, name).pid for name in names}
    return _handed_over(layout, state, env, supervisor, names)


def down(layout: Layout) -> None:
    # Under the lock the supervisor is between two rounds; stopped first, it cannot start
    # again anything stopped next. Then the balancer (no new connections), the ASGI processes,
    # Celery. SIGTERM everywhere: nginx's graceful SIGQUIT would wait for every station's
    # socket to close.
    with _command_lock(layout):
        if _stop(layout, SUPERVISOR):
            print(f"stopped {SUPERVISOR}")
        names = _names(layout)
        asgi = [name for name in names if name.startswith("asgi-")]
        celery = [name for name in names if name.startswith("celery-")]
        for group in (["nginx"], asgi, celery):
            for name in _stop_together(layout, group):
                print(f"stopped {name}")
        # A restart-asgi interrupted between starting the new processes and stopping the old.
        with contextlib.suppress(OSError, ValueError):
            retiring = _retiring(json.loads(layout.state.read_text()))
            for name in _stop_pids(layout, retiring):
                print(f"stopped {name} (pid {retiring[name]}, being replaced)")
            _set_state(layout, retiring={})


def _index(state: dict, value: int) -> int:
    if not 1 <= value <= state["asgi"]:
        raise TopologyError(f"ASGI process {value} does not exist (1..{state['asgi']})")
    return value


def kill_asgi(layout: Layout, index: int) -> None:
    """A crash on purpose: held down (the supervisor leaves it) until 'start-asgi'."""
    state, _ = _load(layout)
    name = f"asgi-{_index(state, index)}"
    with _command_lock(layout):
        if _read_pid(layout, name) is None:
            raise TopologyError(f"{name} is not running")
        _set_held_down(layout, {name}, held=True)
        pid = _signal(layout, name, signal.SIGKILL)
        if pid is None:
            raise TopologyError(f"{name} is not running")
        while _alive(pid):
            time.sleep(0.01)
    print(f"killed {name} (pid {pid})")


def start_asgi(layout: Layout, index: int) -> None:
    state, env = _load(layout)
    name = f"asgi-{_index(state, index)}"

    def prepare() -> None:
        if _read_pid(layout, name):
            raise TopologyError(f"{name} is already running")
        _set_held_down(layout, {name}, held=False)
        layout.pid(name).unlink(missing_ok=True)

    pid = _start_processes(layout, state, env, [name], prepare)[name]
    _wait_asgi_healthy(layout, name, pid)
    print(f"started {name} (pid {pid})")


def restart_asgi(layout: Layout) -> None:
    """Every ASGI process, with no moment when none listens: each new process starts beside
    the old one of its port (they share it, portal/serve.py), and once every new one answers
    /healthz the old ones stop together. Their stations reconnect at once (a storm) to
    processes that are already up. A new process that does not come up is stopped again and
    the old ones go on serving."""
    state, env = _load(layout)
    names = [f"asgi-{i}" for i in range(1, state["asgi"] + 1)]
    began = time.monotonic()
    old: dict[str, int] = {}

    def prepare() -> None:
        old.update({n: pid for n in names if (pid := _read_pid(layout, n)) is not None})
        # The supervisor must not take the old ones for exited processes once their pid
        # files are gone (which tells it to start the new ones now).
        _set_state(layout, retiring=old)
        _set_held_down(layout, set(names), held=False)  # one held by kill-asgi starts too
        for name in names:
            layout.pid(name).unlink(missing_ok=True)

    pids = _start_processes(layout, state, env, names, prepare)
    try:
        for name in names:
            _wait_asgi_healthy(layout, name, pids[name])
    except TopologyError as exc:
        with _command_lock(layout):
            replaced = [n for n in names if n in old]
            # The new process, and any the supervisor started again after it failed (its
            # pid file then names that one).
            new = {f"{n} ({pids[n]})": pids[n] for n in replaced}
            for name in replaced:
                again = _read_pid(layout, name)
                if again is not None and again not in (pids[name], old[name]):
                    new[f"{name} ({again})"] = again
            _stop_pids(layout, new)
            for name in replaced:
                layout.pid(name).write_text(f"{old[name]}\n")
            _set_state(layout, retiring={})
        raise TopologyError(f"{exc}; the old ASGI processes go on serving") from exc
    answering = time.monotonic() - began
    with _command_lock(layout):
        _stop_pids(layout, old)
        _set_state(layout, retiring={})
    stopped = time.monotonic() - began
    print(
        f"restarted {len(pids)} ASGI processes: new ones answering after {answering:.1f} s, "
        f"old ones stopped after {stopped:.1f} s"
    )


# ---------------------------------------------------------------------------- supervisor


def _log(message: str) -> None:
    """One line of logs/supervisor.log (the supervisor's standard output)."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


@dataclass
class Watched:
    """What the supervisor knows of one process of the topology."""

    name: str
    pid: int | None = None  # running at the last round
    up_since: float = 0.0  # monotonic: started, or first seen running
    backoff: float = BACKOFF_FIRST  # the wait before its next restart
    restart_at: float | None = None  # monotonic: when an exited process is started again
    restarts: int = 0
    last_exit: str | None = None


class Supervisor:
    """Keeps every process the topology wants running running: each round (every second, or
    at once when a child exits or a command hands processes over) it starts the processes
    whose pid files are missing (never started, or stopped by a command that wants them
    back) and restarts, after a back-off, those whose pid file names a process that exited.
    Processes held down by kill-asgi stay down; nothing happens while a command holds the
    lock."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.watched: dict[str, Watched] = {}
        # A supervisor started again ('supervise') after the last one died goes on counting.
        with contextlib.suppress(OSError, ValueError, KeyError, AttributeError):
            saved = json.loads(layout.supervisor_state.read_text())["processes"]
            for name, row in saved.items():
                self.watched[name] = Watched(
                    name, restarts=int(row["restarts"]), last_exit=row.get("last_exit")
                )

    def round(self) -> None:
        if not self.layout.state.exists():
            raise TopologyError(f"no topology in {self.layout.dir} any more")
        # Reap every child that exited (no zombies); the exit status stays in its Popen until
        # _look reports it. Forget those it will not ask about.
        looked_for = {w.pid for w in self.watched.values()}
        self.children = {
            pid: proc
            for pid, proc in self.children.items()
            if proc.poll() is None or pid in looked_for
        }
        with _lock_unless_busy(self.layout) as free:
            if not free:
                return  # a command is stopping or starting processes: look again shortly
            state, env = _load(self.layout)
            held = _held_down(state)
            now = time.monotonic()
            changed = False
            for name in _names(self.layout, state["asgi"]):
                watched = self.watched.setdefault(name, Watched(name))
                changed |= self._look(watched, state, env, held, now)
            if changed:
                self._save(now)

    def next_round_in(self) -> float:
        now = time.monotonic()
        due = [w.restart_at - now for w in self.watched.values() if w.restart_at is not None]
        return max(0.05, min([SUPERVISE_INTERVAL, *due]))

    def _look(
        self, w: Watched, state: dict, env: dict[str, str], held: set[str], now: float
    ) -> bool:
        """Start or restart one process if due; True if what 'status' shows changed."""
        pid = _read_pid(self.layout, w.name)
        if pid is not None:
            if pid != w.pid:
                # Started while no supervisor ran (its exit status will be unknown), or put
                # back by a restart-asgi whose new process failed: nothing left to restart.
                w.pid, w.up_since, w.restart_at = pid, now, None
            if now - w.up_since >= BACKOFF_RESET_AFTER:
                w.backoff = BACKOFF_FIRST
            return False
        pid_file = self.layout.pid(w.name)
        changed = False
        if w.pid is not None and w.pid in _retiring(state).values():
            # 'restart-asgi' starts its successor beside it and stops it later; it stays a
            # child of ours until then (reaped in round()).
            _log(f"{w.name} (pid {w.pid}) is being replaced: its successor starts beside it")
            w.pid = None
            self._launch(w, state, env, now, restart=False)
            return True
        if w.pid is not None:  # it ran at the last round
            changed = True
            how = self._exit_status(w.pid)
            ran = now - w.up_since
            if w.name in held:
                _log(f"{w.name} (pid {w.pid}) {how}: held down until start-asgi")
            elif not pid_file.exists():
                _log(f"{w.name} (pid {w.pid}) stopped by a command ({how})")
            else:
                if ran >= BACKOFF_RESET_AFTER:
                    w.backoff = BACKOFF_FIRST
                w.last_exit = how
                w.restart_at = now + w.backoff
                _log(
                    f"{w.name} (pid {w.pid}) exited unexpectedly after {ran:.1f} s: {how}; "
                    f"restarting in {w.backoff:g} s"
                )
            w.pid = None
        if w.name in held:
            w.restart_at = None
            return changed
        if not pid_file.exists():
            # Never started, or stopped by a command that wants it back ('up', 'start-asgi',
            # 'restart-asgi'): at once, and not a restart.
            self._launch(w, state, env, now, restart=False)
            return True
        if w.restart_at is None:  # a pid file of a process this supervisor never saw run
            w.restart_at = now + w.backoff
            w.last_exit = "exit status unknown (exited while no supervisor ran)"
            _log(f"{w.name} is not running: {w.last_exit}; restarting in {w.backoff:g} s")
            changed = True
        if now >= w.restart_at:
            self._launch(w, state, env, now, restart=True)
            changed = True
        return changed

    def _exit_status(self, pid: int) -> str:
        proc = self.children.get(pid)
        if proc is None:
            return "exit status unknown (not started by this supervisor)"
        try:
            # Gone from /proc's point of view (a zombie, or its environment already torn
            # down while it exits): waiting reaps it.
            returncode = proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:  # still running, yet its pid file names another
            return "exit status unknown (still running, no longer in its pid file)"
        del self.children[pid]
        return _describe_exit(returncode)

    def _launch(
        self, w: Watched, state: dict, env: dict[str, str], now: float, *, restart: bool
    ) -> None:
        if restart:
            _kill_leftovers(self.layout, w.name)
        try:
            proc = _start_process(self.layout, state, env, w.name)
        except (OSError, TopologyError) as exc:
            # An empty pid file reads as "wanted, not running": the next try waits for its
            # back-off like a crash instead of repeating every round.
            self.layout.pid(w.name).write_text("")
            w.restart_at = now + w.backoff
            w.backoff = min(2 * w.backoff, BACKOFF_MAX)
            _log(f"could not start {w.name}: {exc}; trying again in {w.restart_at - now:g} s")
            return
        self.children[proc.pid] = proc
        w.pid, w.up_since, w.restart_at = proc.pid, now, None
        if restart:
            w.restarts += 1
            w.backoff = min(2 * w.backoff, BACKOFF_MAX)
            _log(f"restarted {w.name} (pid {proc.pid}), restart {w.restarts}")
        else:
            _log(f"started {w.name} (pid {proc.pid})")

    def _save(self, now: float) -> None:
        wall = time.time()
        processes = {
            name: {
                "restarts": w.restarts,
                "last_exit": w.last_exit,
                "restart_at": None if w.restart_at is None else wall + (w.restart_at - now),
            }
            for name, w in self.watched.items()
        }
        _write_json(self.layout.supervisor_state, {"pid": os.getpid(), "processes": processes})


def run_supervisor(layout: Layout) -> None:
    """The supervisor in the foreground ('_supervise'; 'up' and 'supervise' start it
    detached, with its output in logs/supervisor.log). SIGTERM stops it, not its processes."""
    # Signals wake the loop through this pipe: a child exited (SIGCHLD), a command handed
    # processes over (SIGUSR1), stop (SIGTERM, SIGINT).
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    stop: list[int] = []

    def stop_on(signum: int, _frame: object) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGINT, stop_on)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: None)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    with layout.supervisor_lock.open("a") as singleton:
        try:
            fcntl.flock(singleton, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TopologyError(f"a supervisor already runs for {layout.dir}") from None
        layout.pid(SUPERVISOR).write_text(f"{os.getpid()}\n")
        supervisor = Supervisor(layout)
        _log(f"supervising {layout.dir} (pid {os.getpid()})")
        while not stop:
            try:
                supervisor.round()
            except TopologyError as exc:  # the topology's files are gone: nothing to watch
                _log(f"stopping: {exc}")
                return
            except Exception:
                # A bug here must not leave the topology unsupervised: say so, go on.
                _log(f"round failed:\n{traceback.format_exc()}")
            select.select([wake_read], [], [], supervisor.next_round_in())
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_read, 512):
                    pass
        _log(f"stopped by {signal.Signals(stop[0]).name} (this stops no other process)")


def start_supervisor(layout: Layout) -> None:
    """Start the supervisor again (it died, or was stopped by hand) without touching the
    processes: it adopts the running ones and restarts the others."""
    _, env = _load(layout)
    with _command_lock(layout):
        running = _read_pid(layout, SUPERVISOR)
        if running:
            raise TopologyError(f"the supervisor is already running (pid {running})")
        pid = _spawn_supervisor(layout, env)
    print(f"started {SUPERVISOR} (pid {pid})")


# ---------------------------------------------------------------------------- status


def _supervised(layout: Layout) -> dict[str, dict]:
    try:
        return json.loads(layout.supervisor_state.read_text())["processes"]
    except (OSError, ValueError, KeyError):
        return {}


def status(layout: Layout, *, as_json: bool) -> bool:
    state, _ = _load(layout)
    port = state["port"]
    established = _connections_by_port()
    supervised = _supervised(layout)
    supervisor_pid = _read_pid(layout, SUPERVISOR)
    held = _held_down(state)
    rows = []
    for name in _names(layout, state["asgi"]):
        pid = _read_pid(layout, name)
        watched = supervised.get(name, {})
        row: dict = {
            "name": name,
            "pid": pid,
            "running": pid is not None,
            "restarts": watched.get("restarts", 0),  # by the supervisor, since 'up'
            "held_down": name in held,  # by kill-asgi, until start-asgi
        }
        if watched.get("last_exit"):
            row["last_exit"] = watched["last_exit"]
        if pid is None and supervisor_pid is not None and watched.get("restart_at"):
            row["restart_in"] = round(max(0.0, watched["restart_at"] - time.time()), 1)
        if name.startswith("asgi-"):
            row["port"] = port + int(name.split("-")[1])
        elif name == "nginx":
            row["port"] = port
        if "port" in row:
            row["url"] = f"http://127.0.0.1:{row['port']}"
            if pid is None:
                code, body = 0, ""
            elif name.startswith("asgi-"):
                code, body = _get_process(pid)  # this process, not whichever holds the port
            else:
                code, body = _get(row["url"] + "/healthz")
            row["healthy"] = code == 200
            if pid is not None and code != 200:
                row["health"] = f"{code} {body[:300]}"
            # Connections accepted on that port: stations' sockets (and a few idle HTTP
            # keep-alives from nginx) for an ASGI process, clients for nginx.
            row["connections"] = established.get(row["port"], 0)
        rows.append(row)
    supervisor = {
        "pid": supervisor_pid,
        "running": supervisor_pid is not None,
        "restarts": sum(r["restarts"] for r in rows),
        "log": str(layout.log(SUPERVISOR)),
    }
    # Unsupervised, the next crash stays down: worth a non-zero exit code too.
    ok = supervisor["running"] and all(r["running"] and r.get("healthy", True) for r in rows)
    if as_json:
        print(
            json.dumps(
                {
                    "dir": str(layout.dir),
                    "port": port,
                    "ok": ok,
                    "processes": rows,
                    "supervisor": supervisor,
                }
            )
        )
    else:
        for r in rows:
            health = ""
            if r["running"] and "healthy" in r:
                health = " healthy" if r["healthy"] else " UNHEALTHY"
            where = f" {r['url']} connections={r['connections']}" if "url" in r else ""
            state_text = f"pid {r['pid']}" if r["running"] else "stopped"
            extra = f" restarts={r['restarts']}" if r["restarts"] else ""
            if r["held_down"]:
                extra += " (held down by kill-asgi)"
            elif "restart_in" in r:
                extra += f" (restart in {r['restart_in']:g} s)"
            print(f"{r['name']:<14} {state_text:<11}{health}{where}{extra}")
        state_text = f"pid {supervisor_pid}" if supervisor_pid else "stopped"
        print(f"{SUPERVISOR:<14} {state_text:<11} restarts={supervisor['restarts']}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/topology", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str | None) -> argparse.ArgumentParser:
        # Without help text a command is not listed (the supervisor's own entry point).
        sub = commands.add_parser(name, **({"help": help_text} if help_text else {}))
        sub.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="pids, logs, config")
        return sub

    start = command("up", "migrate, start ASGI processes, Celery worker and beat, nginx")
    start.add_argument("--asgi", type=int, default=2, help="ASGI processes (default 2)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help="nginx port (8080)")
    start.add_argument("--nginx-workers", default="auto", help="worker_processes (auto)")
    start.add_argument(
        "--handshakes-per-second",
        type=int,
        default=HANDSHAKES_PER_SECOND,
        help="station handshakes per second and ASGI process nginx passes on; the excess gets "
        f"503 and Retry-After from nginx (default {HANDSHAKES_PER_SECOND}; 0: no limit)",
    )
    command("down", "stop everything 'up' started")
    command("restart-asgi", "restart every ASGI process at once (a reconnect storm)")
    for name, text in (
        ("kill-asgi", "SIGKILL ASGI process I, kept down until start-asgi"),
        ("start-asgi", "start I"),
    ):
        command(name, text).add_argument("index", type=int, metavar="I", help="1-based")
    command("status", "processes, health, connections, restarts").add_argument(
        "--json", action="store_true"
    )
    command("supervise", "start the supervisor again if it is not running")
    command("_supervise", None)
    args = parser.parse_args(argv)
    layout = Layout(args.dir.resolve())
    try:
        if args.command == "up":
            up(
                layout,
                asgi=args.asgi,
                port=args.port,
                nginx_workers=args.nginx_workers,
                handshakes_per_second=args.handshakes_per_second,
            )
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
        elif args.command == "supervise":
            start_supervisor(layout)
        elif args.command == "_supervise":
            run_supervisor(layout)
    except TopologyError as exc:
        print(f"topology: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
