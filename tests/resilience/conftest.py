"""Fault injection machinery: private PostgreSQL and Redis that may be stopped and restarted,
and a fleet of simulated stations on portal processes that use them.

The machine's own PostgreSQL (5432) and Redis (6379) are never touched: other work and this
test process's own database connection depend on them. Instead a session makes

* a private PostgreSQL cluster (``initdb`` into a temporary directory, run as the ``postgres``
  OS user when we are root, since PostgreSQL refuses to run as root) on a free port, migrated
  once by ``manage.py migrate``;
* a private ``redis-server`` on a free port, without persistence (a restart loses everything,
  as a crashed cache would).

Every test then seeds its own organization (``tests/resilience/seed.py`` in a subprocess on the
private database), starts an ASGI process, a Celery worker and beat on the private services
(``tests/e2e/conftest.py``: PortalProcess, CeleryProcess) and connects a fleet of the
project's simulated stations. The test process reads the private database for its assertions
through a plain psycopg connection, never through pytest-django's test database.

The same classes drive ``bench/faults_bench.py`` (longer outages, more stations, repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stations.simulator import Car, SimStation, Transaction
from tests.conftest import _skip_or_fail, real_services_expected
from tests.e2e.conftest import ROOT, CeleryProcess, PortalProcess, free_port
from tests.loadmgmt.lines import grid_draw

STATION_PASSWORD = "station-secret-0123456789"  # tests/stations/factories.py


# --- private services -----------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """PostgreSQL's server binaries (Debian keeps them off PATH); ``PG_BIN`` overrides."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def missing_binaries() -> str | None:
    if postgres_bin() is None:
        return "needs PostgreSQL's server binaries (initdb, pg_ctl) for a private cluster"
    if shutil.which("redis-server") is None:
        return "needs redis-server for a private Redis"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "needs runuser to run PostgreSQL as the postgres user"
    return None


def _timed(fn: Callable[[], None]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


class PrivatePostgres:
    """A throw-away PostgreSQL cluster. ``stop``/``start``/``restart`` return their seconds."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        # Not under pytest's tmp_path: that is root's 0700 directory, which the postgres user
        # cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/portal"
        self.running = False
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.dir)

    def _options(self) -> str:
        # fsync off: a test cluster; a restart (fast shutdown) still checkpoints everything.
        return (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=300"
        )

    def create(self) -> float:
        def make() -> None:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            )
            self.start()
            import psycopg

            admin = self.url.rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("CREATE DATABASE portal")

        return _timed(make)

    def start(self) -> float:
        seconds = _timed(
            lambda: self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-w",
                "-t",
                "60",
                "-o",
                self._options(),
                "-l",
                str(self.log),
                "start",
            )
        )
        self.running = True
        return seconds

    def stop(self) -> float:
        # Fast: open transactions are rolled back and every client is disconnected at once.
        seconds = _timed(
            lambda: self._run(
                "pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop"
            )
        )
        self.running = False
        return seconds

    def restart(self) -> float:
        return _timed(
            lambda: self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-w",
                "-t",
                "60",
                "-m",
                "fast",
                "-o",
                self._options(),
                "-l",
                str(self.log),
                "restart",
            )
        )

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server without persistence: a restart starts empty, as after a crash."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        started = time.monotonic()
        log = open(self.workdir / f"redis-{self.port}.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = started + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return time.monotonic() - started
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on {self.port} did not start")

    def stop(self) -> float:
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        return time.monotonic() - started


@dataclass
class PrivateServices:
    postgres: PrivatePostgres
    redis: PrivateRedis
    setup_seconds: dict[str, float]


def private_services_start(workdir: Path) -> PrivateServices:
    """Cluster, database and Redis made and migrated (the caller stops them: ``..._stop``)."""
    postgres = PrivatePostgres()
    redis = PrivateRedis(workdir)
    try:
        seconds = {"initdb + start + createdb": postgres.create(), "redis": redis.start()}
        started = time.monotonic()
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=_django_env(postgres.url, redis.url),
            capture_output=True,
            text=True,
        )
        if migrate.returncode:
            raise RuntimeError(f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
        seconds["migrate"] = time.monotonic() - started
    except BaseException:
        redis.stop()
        postgres.destroy()
        raise
    return PrivateServices(postgres, redis, seconds)


def private_services_stop(services: PrivateServices) -> None:
    services.redis.stop()
    services.postgres.destroy()


def _django_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DEBUG": "1",
        "PERIODIC_IN_PROCESS": "0",
        "SITE_URL": "http://127.0.0.1",
        **extra,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


@pytest.fixture(scope="session")
def private_services(tmp_path_factory) -> PrivateServices:
    """Made once per session (~3 s: initdb, start, migrate); stopped and removed at the end."""
    missing = missing_binaries()
    if missing:
        _skip_or_fail(missing, real_services_expected())
    services = private_services_start(tmp_path_factory.mktemp("faults"))
    print("private services ready:", {k: round(v, 2) for k, v in services.setup_seconds.items()})
    yield services
    private_services_stop(services)


# --- the fleet ----------------------------------------------------------------------------


class RecordingStation(SimStation):
    """A simulated station that keeps its own record: every transaction it began, and how
    many MeterValues of a transaction were answered (or given up after all attempts)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transactions: list[Transaction] = []
        self.meter_values_answered = 0
        self.meter_values_given_up = 0

    def _begin_transaction(self, c: Any, id_tag: str, profile: Any = None) -> Transaction:
        tx = super()._begin_transaction(c, id_tag, profile)
        self.transactions.append(tx)
        return tx

    def _enqueue_meter(self, c: Any, context: str) -> asyncio.Future[Any]:
        future = super()._enqueue_meter(c, context)
        if c.transaction is not None:
            future.add_done_callback(self._count_meter_values)
        return future

    def _count_meter_values(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.meter_values_given_up += 1
        else:
            self.meter_values_answered += 1


class DrawMonitor:
    """Samples the stations' real draw per grid phase every 20 ms; remembers the worst."""

    def __init__(self, sims: list[RecordingStation], line_a: float) -> None:
        self.sims = sims
        self.line_a = line_a
        self.worst = [0.0, 0.0, 0.0]
        self.samples = 0
        self.over: list[tuple[float, list[float]]] = []  # (monotonic time, load) above the line
        self.first_over: list[tuple[str, float, int]] | None = None  # who drew what then

    def snapshot(self) -> list[tuple[str, float, int]]:
        """(station, amperes, phases) of every station drawing now."""
        return [
            (sim.id, sim.connector(1).current_a, sim.connector(1).phases)
            for sim in self.sims
            if sim.connector(1).drawing and sim.connector(1).current_a > 0
        ]

    def now(self) -> list[float]:
        return grid_draw(self.sims)

    async def run(self) -> None:
        while True:
            load = self.now()
            self.samples += 1
            self.worst = [max(w, x) for w, x in zip(self.worst, load, strict=True)]
            if max(load) > self.line_a + 1e-6:
                self.over.append((time.monotonic(), load))
                if self.first_over is None:
                    self.first_over = self.snapshot()
            await asyncio.sleep(0.02)


@dataclass
class FleetConfig:
    prefix: str
    stations: int = 12
    line_a: int = 32
    lease_seconds: float = 8
    cycle_seconds: float = 2
    meter_interval: int = 2
    # The stations' OCPP 1.6 retry of transaction messages: attempt n waits n × interval.
    retry_interval: int = 1
    retry_attempts: int = 12
    call_timeout: float = 10
    # Each process checks this often whether Redis lost the channel groups (production: 2 s);
    # after a Redis restart, commands reach a station again within about this. The hourly
    # refresh of every connection's group stays at its default: the check must do the work.
    group_check_seconds: float = 1


@dataclass
class Audit:
    """Simulator's record against the database, after every transaction ended."""

    transactions: int = 0
    sessions: int = 0
    problems: list[str] = field(default_factory=list)
    meter_values_answered: int = 0
    meter_rows: int = 0
    duplicate_meter_rows: int = 0
    retries: int = 0  # CALLERRORs and timeouts the stations answered by retrying
    commands_claimed: int = 0
    commands_unfinished: int = 0
    profiles_received: int = 0


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], seconds: float, step: float = 0.1
) -> tuple[Any, float]:
    """Poll until truthy: (value, seconds it took). TimeoutError after ``seconds``."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while not (value := await predicate()):  # noqa: ASYNC110 - polling other processes
            await asyncio.sleep(step)
    return value, time.monotonic() - started


class FaultFleet:
    """One organization's stations on one portal process, a worker and beat, all on the
    private services. ``start()`` returns once every station holds its fail-safe profile
    and was planned; ``close()`` stops everything it started."""

    def __init__(self, services: PrivateServices, config: FleetConfig, workdir: Path) -> None:
        self.services = services
        self.config = config
        self.workdir = workdir
        self.env = _django_env(
            services.postgres.url,
            services.redis.url,
            CHANNEL_PREFIX=f"f{config.prefix.lower()}",
            CACHE_PREFIX=f"f{config.prefix.lower()}",
            LOADMGMT_CYCLE_SECONDS=str(config.cycle_seconds),
            LOADMGMT_LEASE_SECONDS=str(config.lease_seconds),
            LOADMGMT_DEBOUNCE_SECONDS="0.05",
            TMPDIR=str(workdir),
            OCPP_GROUP_CHECK_SECONDS=str(config.group_check_seconds),
            OCPP_CALL_TIMEOUT=str(config.call_timeout),
        )
        self.station_ids: list[int] = []
        self.sims: list[RecordingStation] = []
        self.portal: PortalProcess | None = None
        self.worker: CeleryProcess | None = None
        self.beat: CeleryProcess | None = None
        self.draw = DrawMonitor(self.sims, config.line_a)
        self._monitor: asyncio.Task | None = None
        self._db: Any = None
        self.waiting: list[str] = []  # why charging_as_planned() was last False
        # As systemd's Restart=always would: a worker that exits by itself is started again
        # (counted). Off while a test kills the worker on purpose.
        self.supervise = True
        self.worker_restarts = 0
        self._supervisor: asyncio.Task | None = None

    # --- processes ----------------------------------------------------------------------

    def _log_dir(self) -> contextlib.AbstractContextManager:
        """PortalProcess and CeleryProcess put their logs in $TMPDIR: ours, not /tmp."""
        return _environ(TMPDIR=str(self.workdir))

    def seed(self) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.resilience.seed",
                self.config.prefix,
                str(self.config.stations),
                str(self.config.line_a),
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"seed failed:\n{done.stderr}")
        self.station_ids = json.loads(done.stdout.strip().splitlines()[-1])

    def start_worker(self) -> None:
        self.supervise = True
        log = self.workdir / "celery-worker.log"
        if log.exists():  # a killed worker's log is kept beside the new one
            log.rename(self.workdir / f"celery-worker-{time.monotonic_ns()}.log")
        with self._log_dir():
            self.worker = CeleryProcess(self.env, "worker", self.workdir)

    def kill_worker(self) -> None:
        """SIGKILL: no warm shutdown, tasks in flight stay unacknowledged."""
        assert self.worker is not None
        self.supervise = False
        self.worker.proc.send_signal(signal.SIGKILL)
        self.worker.proc.wait(10)
        self.worker.log.close()

    async def start(self) -> None:
        await asyncio.to_thread(self.seed)
        with self._log_dir():
            self.portal = PortalProcess(self.env, f"faults-{self.config.prefix}")
            self.beat = CeleryProcess(self.env, "beat", self.workdir)
        self.start_worker()
        await asyncio.to_thread(self.portal.wait_ready)
        for i in range(self.config.stations):
            sim = RecordingStation(
                f"{self.config.prefix}-{i:02d}",
                f"{self.portal.ws_url}/ocpp/",
                STATION_PASSWORD,
                connectors=1,
                meter_interval=self.config.meter_interval,
                response_timeout=self.config.call_timeout,
                reconnect_backoff=(0.2, 2.0),
            )
            sim.config["TransactionMessageAttempts"].value = str(self.config.retry_attempts)
            sim.config["TransactionMessageRetryInterval"].value = str(self.config.retry_interval)
            self.sims.append(sim)
        await asyncio.gather(*(sim.start(timeout=30) for sim in self.sims))
        self._monitor = asyncio.create_task(self.draw.run())
        self._supervisor = asyncio.create_task(self._supervise())
        await wait_until(self._fail_safes_and_plans, 60)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.supervise and self.worker is not None and self.worker.proc.poll() is not None:
                self.worker.log.close()
                self.worker_restarts += 1
                await asyncio.to_thread(self.start_worker)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await asyncio.gather(*(sim.stop() for sim in self.sims), return_exceptions=True)
        for process in (self.portal, self.worker, self.beat):
            if process is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(process.stop)
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()

    # --- the private database, read by the test -----------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """A plain psycopg connection (reopened after a PostgreSQL restart)."""
        import psycopg

        for attempt in range(2):
            try:
                if self._db is None or self._db.closed:
                    self._db = psycopg.connect(self.services.postgres.url, autocommit=True)
                return self._db.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    self._db.close()
                self._db = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def aquery(self, sql: str, *params: Any) -> list[tuple]:
        return await asyncio.to_thread(self.query, sql, *params)

    async def _fail_safes_and_plans(self) -> bool:
        (safe, planned) = (
            await self.aquery(
                """
                SELECT
                  (SELECT count(DISTINCT c.station_id) FROM stations_stationcommand c
                   WHERE c.station_id = ANY(%s) AND c.action = 'SetChargingProfile'
                     AND c.status = 'accepted'
                     AND (c.payload->'csChargingProfiles'->>'stackLevel')::int = 0),
                  (SELECT count(*) FROM loadmgmt_connectorsetpoint s
                   WHERE s.station_id = ANY(%s) AND s.decision <> '')
                """,
                self.station_ids,
                self.station_ids,
            )
        )[0]
        return safe == len(self.station_ids) and planned == len(self.station_ids)

    # --- cars and recovery ----------------------------------------------------------------

    async def plug(self, index: int) -> None:
        """A car arrives at a free-vend station (``auth_mode`` none): the transaction starts
        with the station's fixed idTag, without an Authorize (as such stations do), so a car
        arriving while the portal's database is down still starts charging."""
        sim = self.sims[index]
        c = sim.connector(1)
        c.pending_id_tag, c.pending_profile = "FREEVEND", None
        c.pending_until = sim.clock.time() + 60
        await sim.plug_in(1, Car(battery_kwh=80, soc=10, phases=3, max_current_a=32))

    async def charging_as_planned(self, indexes: list[int], since: datetime | None = None) -> bool:
        """Every station listed is online with a transaction that has its id, and a decision:
        queued, or charging under a lease at the planned current that it accepted (after
        ``since``, if given) and that is still valid."""
        rows = await self.aquery(
            """
            SELECT station_id, decision, target_current, accepted_current,
                   accepted_valid_to > now() AND accepted_at > %s
            FROM loadmgmt_connectorsetpoint WHERE station_id = ANY(%s)
            """,
            since or datetime(2000, 1, 1, tzinfo=UTC),
            [self.station_ids[i] for i in indexes],
        )
        by_station = {row[0]: row[1:] for row in rows}
        waiting = []
        for i in indexes:
            sim = self.sims[i]
            c = sim.connector(1)
            state = by_station.get(self.station_ids[i])
            if not sim.online or c.transaction is None or not c.transaction.transaction_id:
                tx = c.transaction.transaction_id if c.transaction else "none"
                waiting.append(f"{sim.id}: online {sim.online}, transaction {tx}")
            elif state is None or state[0] not in ("charge", "queued"):
                waiting.append(f"{sim.id}: decision {state}")
            elif state[0] == "charge" and not (state[3] and state[2] == state[1]):
                waiting.append(f"{sim.id}: lease {state}, {sim.queued} queued")
        self.waiting = waiting  # shown when recovery takes too long
        return not waiting

    def offered(self) -> list[float]:
        result = []
        for sim in self.sims:
            sim._update()
            result.append(sim.connector(1).offered_a)
        return result

    def reconnects(self) -> int:
        return sum(sim.stats.connects for sim in self.sims) - len(self.sims)

    def retries(self) -> int:
        """CALLERRORs and timeouts of the stations' calls: each transaction message among
        them was retried (heartbeats and status notifications are not retried)."""
        return sum(sum(s.stats.call_errors.values()) + s.stats.timeouts for s in self.sims)

    async def end_everything(self, seconds: float = 60) -> None:
        """Unplug every car and wait until each station's outbox (StopTransaction, last
        MeterValues) is empty: the simulator's record is then final."""
        for sim in self.sims:
            if sim.connector(1).car is not None:
                await sim.unplug(1)
        try:
            await asyncio.gather(*(sim.drain(seconds) for sim in self.sims))
        except TimeoutError:
            stuck = [
                f"{s.id}: {s.queued} queued, online {s.online}, connected {s.connected}, "
                f"{s.stats.timeouts} timeouts, errors {s.stats.call_errors}, {s.last_error}"
                for s in self.sims
                if s.queued
            ]
            raise TimeoutError("outboxes not drained: " + "; ".join(stuck)) from None

        # The cars leaving made a recompute send new leases: let their answers be recorded
        # (a call is answered or times out within OCPP_CALL_TIMEOUT) before auditing.
        async def settled() -> bool:
            (open_, now) = (
                await self.aquery(
                    """
                    SELECT count(*), now() FROM stations_stationcommand
                    WHERE station_id = ANY(%s) AND sent_at IS NOT NULL AND finished_at IS NULL
                    """,
                    self.station_ids,
                )
            )[0]
            if open_ == 0:
                # Renewals keep going out (spread over the cycles): the audit judges the
                # commands sent before this moment, each of which has its result.
                self.settled_at = now
            return open_ == 0

        with contextlib.suppress(TimeoutError):  # the audit then names what is open
            await wait_until(settled, self.config.call_timeout + 5)

    async def audit(self) -> Audit:
        """Compare every station's own record with the database: each transaction once, with
        its id, meterStart and meterStop; each answered MeterValues stored once; every
        claimed command finished once and no station received more profiles than were sent."""
        audit = Audit(retries=self.retries())
        sessions = await self.aquery(
            """
            SELECT station_id, id, meter_start, meter_stop, status
            FROM stations_chargingsession WHERE station_id = ANY(%s)
            """,
            self.station_ids,
        )
        meter_rows = dict(
            await self.aquery(
                """
                SELECT station_id, count(*) FROM stations_metersample
                WHERE station_id = ANY(%s) AND connector_id = 1 GROUP BY station_id
                """,
                self.station_ids,
            )
        )
        (audit.duplicate_meter_rows,) = (
            await self.aquery(
                """
                SELECT coalesce(sum(n - 1), 0) FROM (
                  SELECT count(*) AS n FROM stations_metersample
                  WHERE station_id = ANY(%s)
                  GROUP BY station_id, connector_id, time, energy_wh HAVING count(*) > 1) d
                """,
                self.station_ids,
            )
        )[0]
        commands = {
            station: (claimed, unfinished)
            for station, claimed, unfinished in await self.aquery(
                """
                SELECT station_id, count(*) FILTER (WHERE sent_at IS NOT NULL),
                       count(*) FILTER (
                         WHERE sent_at IS NOT NULL AND finished_at IS NULL
                         AND sent_at < coalesce(%s, 'infinity'::timestamptz))
                FROM stations_stationcommand
                WHERE station_id = ANY(%s) AND action = 'SetChargingProfile'
                GROUP BY station_id
                """,
                getattr(self, "settled_at", None),
                self.station_ids,
            )
        }
        for sim, station_id in zip(self.sims, self.station_ids, strict=True):
            db = {
                pk: (start, stop, status)
                for s, pk, start, stop, status in sessions
                if s == station_id
            }
            audit.transactions += len(sim.transactions)
            audit.sessions += len(db)
            if len(db) != len(sim.transactions):
                audit.problems.append(
                    f"{sim.id}: {len(sim.transactions)} transactions, {len(db)} sessions"
                )
            for tx in sim.transactions:
                row = db.get(tx.transaction_id or 0)
                if row is None:
                    audit.problems.append(f"{sim.id}: transaction {tx.transaction_id} missing")
                elif row != (tx.meter_start, tx.meter_stop, "completed"):
                    audit.problems.append(
                        f"{sim.id}: transaction {tx.transaction_id} is {row}, the station "
                        f"says start {tx.meter_start} stop {tx.meter_stop}"
                    )
            audit.meter_values_answered += sim.meter_values_answered
            audit.meter_rows += meter_rows.get(station_id, 0)
            if sim.meter_values_given_up:
                audit.problems.append(f"{sim.id}: {sim.meter_values_given_up} MeterValues given up")
            if meter_rows.get(station_id, 0) != sim.meter_values_answered:
                audit.problems.append(
                    f"{sim.id}: {sim.meter_values_answered} MeterValues answered, "
                    f"{meter_rows.get(station_id, 0)} stored"
                )
            claimed, unfinished = commands.get(station_id, (0, 0))
            received = sim.received.count("SetChargingProfile")
            audit.commands_claimed += claimed
            audit.commands_unfinished += unfinished
            audit.profiles_received += received
            if received > claimed:
                audit.problems.append(f"{sim.id}: {received} profiles received, {claimed} sent")
            if unfinished:
                audit.problems.append(f"{sim.id}: {unfinished} sent profiles without a result")
        audit.duplicate_meter_rows = int(audit.duplicate_meter_rows)  # SUM gives a Decimal
        if audit.duplicate_meter_rows:
            audit.problems.append(f"{audit.duplicate_meter_rows} meter rows stored twice")
        return audit


# --- the three scenarios (tests assert on the result; bench/faults_bench.py prints it) -------


@dataclass
class FaultResult:
    fault: str
    stations: int
    charging: int
    outage_seconds: float  # from the fault until the service was back
    recovered_seconds: float  # from the service back until every car was re-leased
    reconnects: int
    retries: int
    audit: Audit
    draw_samples: int
    worst_a: float  # the highest grid-phase draw seen, whole run
    over_during_outage: int  # samples above the line from the fault until the service back
    over_during_recovery: int  # samples above the line after it
    fail_safe_held: bool | None = None  # Celery: every station on its fail-safe meanwhile
    worker_restarts: int = 0  # the worker exited by itself and was started again
    timings: dict[str, float] = field(default_factory=dict)  # of the fault's own commands

    def row(self) -> dict[str, Any]:
        a = self.audit
        return {
            "fault": self.fault,
            "stations": self.stations,
            "outage s": round(self.outage_seconds, 1),
            "recovered s": round(self.recovered_seconds, 1),
            "reconnects": self.reconnects,
            "retried": self.retries,
            "tx / sessions": f"{a.transactions}/{a.sessions}",
            "MeterValues / rows": f"{a.meter_values_answered}/{a.meter_rows}",
            "dup rows": a.duplicate_meter_rows,
            "profiles sent / unfinished": f"{a.commands_claimed}/{a.commands_unfinished}",
            "problems": len(a.problems),
            "worst A": self.worst_a,
            "over (outage/recovery)": f"{self.over_during_outage}/{self.over_during_recovery}",
            "worker restarts": self.worker_restarts,
            **self.timings,
        }


def _overs(fleet: FaultFleet, start: float, back: float) -> tuple[int, int]:
    during = sum(1 for t, _ in fleet.draw.over if start <= t < back)
    after = sum(1 for t, _ in fleet.draw.over if t >= back)
    return during, after


async def _finish(
    fleet: FaultFleet, fault: str, charging: list[int], start: float, back: float, recovered: float
) -> FaultResult:
    during, after = _overs(fleet, start, back)
    reconnects, retries = fleet.reconnects(), fleet.retries()
    await fleet.end_everything()
    return FaultResult(
        fault=fault,
        stations=len(fleet.sims),
        charging=len(charging),
        outage_seconds=back - start,
        recovered_seconds=recovered,
        reconnects=reconnects,
        retries=retries,
        audit=await fleet.audit(),
        draw_samples=fleet.draw.samples,
        worst_a=max(fleet.draw.worst),
        over_during_outage=during,
        over_during_recovery=after,
        worker_restarts=fleet.worker_restarts,
    )


async def charge(fleet: FaultFleet, indexes: list[int], seconds: float = 60) -> None:
    for i in indexes:
        await fleet.plug(i)
    await planned(fleet, indexes, None, seconds)


async def planned(
    fleet: FaultFleet, indexes: list[int], since: datetime | None, seconds: float
) -> float:
    """Seconds until ``charging_as_planned``; on timeout, says which stations were not."""
    try:
        _, took = await wait_until(lambda: fleet.charging_as_planned(indexes, since), seconds)
    except TimeoutError:
        raise TimeoutError(f"not as planned after {seconds} s: {fleet.waiting}") from None
    return took


async def redis_restart(
    fleet: FaultFleet, charging: list[int], outage: float, recovery: float
) -> FaultResult:
    """Redis stopped for ``outage`` seconds and started empty; a car arrives after it."""
    redis = fleet.services.redis
    await charge(fleet, charging)
    start = time.monotonic()
    await asyncio.to_thread(redis.stop)
    await asyncio.sleep(outage)
    await asyncio.to_thread(redis.start)
    back, back_at = time.monotonic(), datetime.now(UTC)
    newcomer = len(charging)
    await fleet.plug(newcomer)
    recovered = await planned(fleet, [*charging, newcomer], back_at, recovery)
    return await _finish(fleet, "Redis restart", charging, start, back, recovered)


async def postgres_restart(
    fleet: FaultFleet, charging: list[int], outage: float, recovery: float
) -> FaultResult:
    """``pg_ctl restart``, then PostgreSQL stopped for ``outage`` seconds while two cars
    leave and two arrive (their transaction messages fail and are retried)."""
    postgres = fleet.services.postgres
    await charge(fleet, charging)
    start = time.monotonic()
    timings = {"pg_ctl restart s": await asyncio.to_thread(postgres.restart)}
    await asyncio.sleep(1)
    timings["pg_ctl stop s"] = await asyncio.to_thread(postgres.stop)
    down = time.monotonic()
    leaving, arriving = charging[:2], [len(charging), len(charging) + 1]
    for i in leaving:
        await fleet.sims[i].unplug(1)
    for i in arriving:
        await fleet.plug(i)
    await asyncio.sleep(max(0.0, outage - (time.monotonic() - down)))
    timings["pg_ctl start s"] = await asyncio.to_thread(postgres.start)
    back, back_at = time.monotonic(), datetime.now(UTC)
    still = [i for i in charging if i not in leaving] + arriving
    recovered = await planned(fleet, still, back_at, recovery)
    result = await _finish(fleet, "PostgreSQL restart + stop", charging, start, back, recovered)
    result.timings = {k: round(v, 2) for k, v in timings.items()}
    return result


async def celery_worker_killed(
    fleet: FaultFleet, charging: list[int], recovery: float
) -> FaultResult:
    """SIGKILL on the worker, a new one once every lease has ended."""
    await charge(fleet, charging)
    start = time.monotonic()
    await asyncio.to_thread(fleet.kill_worker)
    # Every lease has ended: those of stations whose fail-safe is above their lease last,
    # after two lease lengths (loadmgmt.recompute.lease_length).
    await asyncio.sleep(2 * fleet.config.lease_seconds + 2)
    offered = fleet.offered()
    fail_safe = [6.0 if i == 0 else 0.0 for i in charging]
    held = [offered[i] for i in charging] == fail_safe
    await asyncio.to_thread(fleet.start_worker)
    back, back_at = time.monotonic(), datetime.now(UTC)
    recovered = await planned(fleet, charging, back_at, recovery)
    result = await _finish(fleet, "Celery worker SIGKILL", charging, start, back, recovered)
    result.fail_safe_held = held
    return result


@contextlib.contextmanager
def _environ(**values: str):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
async def fault_fleet(private_services, tmp_path):
    """``await make(FleetConfig(...))``: a started fleet, closed at the end of the test."""
    fleets: list[FaultFleet] = []

    async def make(config: FleetConfig) -> FaultFleet:
        fleet = FaultFleet(private_services, config, tmp_path)
        fleets.append(fleet)
        await fleet.start()
        return fleet

    yield make
    for fleet in fleets:
        await fleet.close()
    # Whatever a test stopped comes back for the next one.
    if not private_services.postgres.running:
        private_services.postgres.start()
    if private_services.redis.proc is None:
        private_services.redis.start()
