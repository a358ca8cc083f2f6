"""Real server processes for end-to-end tests: Uvicorn subprocesses of the portal on free
ports, sharing the test database (PostgreSQL) and the Redis channel layer with the test.

Only meaningful on the production topology, so every test here needs the real services
(``services`` marker: skipped without them, a failure in CI)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.services)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortalProcess:
    def __init__(self, env: dict[str, str], name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"portal-{name}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"portal process exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"portal on {self.port} not ready: see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def portal_processes(portal_env):
    """Start processes on demand: ``start(n, **extra_env)`` returns n running portals."""
    env = portal_env
    started: list[PortalProcess] = []

    def start(count: int, **extra: str) -> list[PortalProcess]:
        new = [PortalProcess({**env, **extra}, f"{len(started) + i}") for i in range(count)]
        started.extend(new)
        for process in new:
            process.wait_ready()
        return new

    yield start
    for process in started:
        process.stop()


class CeleryProcess:
    """A Celery worker or beat of the portal (``kind`` = "worker" or "beat")."""

    def __init__(self, env: dict[str, str], kind: str, workdir: Path) -> None:
        args = [sys.executable, "-m", "celery", "-A", "portal", kind, "--loglevel", "warning"]
        if kind == "worker":
            args += ["--pool", "threads", "--concurrency", "4", "--without-heartbeat"]
            args += ["--without-gossip", "--without-mingle"]
        else:
            args += ["--schedule", str(workdir / "celerybeat-schedule")]
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"celery-{kind}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def portal_env(transactional_db, settings):
    """The environment of a portal process on the test database and Redis."""
    from django.db import connection

    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("needs PostgreSQL and Redis")
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CHANNEL_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "DEBUG": "1",
        "PERIODIC_IN_PROCESS": "0",
        "SITE_URL": "http://127.0.0.1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


@pytest.fixture
def celery_processes(portal_env, tmp_path):
    """``start(**extra_env)`` runs a worker and a beat; both stop at the end."""
    started: list[CeleryProcess] = []

    def start(**extra: str) -> list[CeleryProcess]:
        env = {**portal_env, **extra}
        new = [CeleryProcess(env, "worker", tmp_path), CeleryProcess(env, "beat", tmp_path)]
        started.extend(new)
        return new

    yield start
    for process in started:
        process.stop()


class Topology:
    """A running ``deploy/topology`` (nginx, ASGI processes, Celery worker and beat) on the
    test database and Redis, driven through its command line as an operator would."""

    def __init__(self, env: dict[str, str], workdir: Path, asgi: int) -> None:
        self.env = env
        self.dir = workdir
        self.asgi = asgi
        self.port = free_port()
        # nginx takes P, the ASGI processes P+1..P+N: make sure those are free too.
        while not all(_port_free(self.port + i) for i in range(asgi + 1)):
            self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(ROOT / "deploy" / "topology"), *args, "--dir", str(self.dir)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"topology {args[0]} failed:\n{done.stdout}{done.stderr}")
        return done

    def up(self, *extra: str) -> None:
        self.run("up", "--asgi", str(self.asgi), "--port", str(self.port), *extra)

    def status(self) -> dict:
        return json.loads(self.run("status", "--json", check=False).stdout)

    def asgi_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.port + index}"

    def connections(self) -> list[int]:
        """Established connections on each ASGI process (index 0 = process 1)."""
        rows = self.status()["processes"]
        return [r["connections"] for r in rows if r["name"].startswith("asgi-")]

    def logs(self) -> str:
        return "\n".join(
            f"== {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted((self.dir / "logs").glob("*.log"))
        )


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def topology(portal_env, tmp_path):
    """``start(asgi=2, up_args=(), **extra_env)``: the production topology (``deploy/topology
    up``, with ``up_args``) on the test database, production settings (DEBUG off); ``down`` at
    the end. Needs Debian's nginx: skipped without it, a failure in CI."""
    from tests.conftest import _skip_or_fail, real_services_expected

    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        _skip_or_fail("needs nginx (apt-get install nginx-light)", real_services_expected())
    started: list[Topology] = []

    def start(asgi: int = 2, up_args: tuple[str, ...] = (), **extra: str) -> Topology:
        env = {**portal_env, "DEBUG": "0", **extra}
        running = Topology(env, tmp_path / f"topology-{len(started)}", asgi)
        started.append(running)
        running.up(*up_args)
        return running

    yield start
    for running in started:
        running.run("down", check=False)
