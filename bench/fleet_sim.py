"""A lean OCPP 1.6J charge point for the fleet benchmark: thousands per asyncio loop.

The project's simulator (``stations.simulator``) models cars, phases and meters and validates
every message; at 2,500 stations per process that costs more CPU than the portal we measure.
This one sends what a fleet sends (BootNotification, StatusNotification, Heartbeat at the
interval the portal gives, Authorize + StartTransaction and MeterValues every 60 s for
stations with a car), answers every CALL of the portal (SetChargingProfile, ChangeConfiguration,
GetConfiguration, TriggerMessage, ...) and records, with wall-clock times so that the
benchmark can compare processes:

* each answer time (our CALL sent -> its CALLRESULT), by the phase the run is in;
* per station: its last accepted boot, the fail-safe and the lease profiles received after it.

One ``SimProcess`` per OS process is driven by ``fleet_bench.py`` over a pipe
(``run_sim_process``): ``ramp``, ``phase``, ``report``, ``stop``. Reconnects: after the socket
closes a station waits 0-5 s (the jitter real stations use), after a failed attempt 1-5 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import random
import resource
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# Profile id ranges of loadmgmt/profiles.py (fail-safe 7100+c, lease 7200+c). Read here as
# plain numbers: the simulator is a station and knows nothing of the portal's code.
FAIL_SAFE_BASE = 7100
LEASE_BASE = 7200
CALL_TIMEOUT = 60.0
METER_INTERVAL = 60.0


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class StationSpec:
    charge_point_id: str
    password: str
    url: str  # ws://host:port/ocpp/ (identity appended)
    charging: bool  # a car that charges during the run


@dataclass
class StationState:
    spec: StationSpec
    ws: ClientConnection | None = None
    online: bool = False
    boots: int = 0
    booted_at: float | None = None  # wall clock of the last accepted BootNotification
    failsafe_at: float | None = None  # first fail-safe profile after that boot
    lease_at: float | None = None  # first lease with a limit > 0 after that boot
    lease_limit: float | None = None
    transaction_id: int | None = None
    meter_wh: int = 0
    heartbeat: float = 300.0
    pending: dict[str, tuple[asyncio.Future, float, str]] = field(default_factory=dict)
    seq: int = 0


class SimProcess:
    """Every station of one OS process, on one asyncio loop."""

    def __init__(self, specs: list[StationSpec], seed: int) -> None:
        self.rng = random.Random(seed)
        self.stations = [StationState(s) for s in specs]
        self.phase = "ramp"
        self.latencies: dict[str, list[float]] = defaultdict(list)
        # Steady state only: (wall clock sent, ms, action), to see which answers are slow
        # and whether they cluster in time (a periodic job) or not (a saturated machine).
        self.steady_detail: list[tuple[float, float, str]] = []
        self.counts: Counter[str] = Counter()  # events: connects, failures, received calls
        self.errors: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()  # "phase: code reason" of each disconnect
        self.close_times: list[tuple[float, str, int | None]] = []  # outside the storm
        # Storm only: (wall clock, Retry-After s) of each refused handshake, to see when the
        # refused were told to come back against when the portal could take them.
        self.refusals: list[tuple[float, float]] = []
        self.stopping = False
        self.tasks: list[asyncio.Task] = []

    # --- life of one station -----------------------------------------------------------

    async def life(self, st: StationState, delay: float) -> None:
        await asyncio.sleep(delay)
        retry: float | None = None
        while not self.stopping:
            if retry is not None:
                await asyncio.sleep(retry)
            try:
                ws = await connect(
                    st.spec.url + st.spec.charge_point_id,
                    subprotocols=["ocpp1.6"],
                    additional_headers={"Authorization": _basic(st.spec)},
                    ping_interval=None,  # OCPP's Heartbeat is the liveness check
                    compression=None,  # as most chargers: no permessage-deflate
                    open_timeout=30,
                    close_timeout=2,
                    max_queue=8,
                )
            except Exception as exc:  # refused, 502 from nginx while restarting, timeout
                self.counts["connect_failures"] += 1
                response = getattr(exc, "response", None)
                status = getattr(response, "status_code", "")
                self.errors[f"connect: {type(exc).__name__} {status}".rstrip()] += 1
                # As chargers do: the server's Retry-After if it sent one, else 1-5 s.
                retry = self.rng.uniform(1.0, 5.0)
                with contextlib.suppress(Exception):
                    retry = float(response.headers["Retry-After"])
                    if self.phase == "storm":
                        self.refusals.append((time.time(), retry))
                continue
            retry = None
            self.counts["connects"] += 1
            st.ws, st.online = ws, True
            # Profiles count from the connection on: the portal may send them before it
            # has answered the BootNotification.
            st.failsafe_at = st.lease_at = None
            try:
                await self.session(st, ws)
            except (ConnectionClosed, OSError):
                pass
            except Exception as exc:
                self.errors[f"session: {type(exc).__name__}: {exc}"[:120]] += 1
            finally:
                st.online, st.ws = False, None
                for fut, _t0, _a in st.pending.values():
                    if not fut.done():
                        fut.cancel()
                st.pending.clear()
                with contextlib.suppress(Exception):
                    await ws.close()
            if self.stopping:
                return
            self.counts["disconnects"] += 1
            # Who closed and why, by phase: a station that drops outside the storm is a
            # finding (the portal's close code and reason, or none: the socket just went).
            self.closes[f"{self.phase}: {ws.close_code} {ws.close_reason or ''}".strip()] += 1
            if self.phase != "storm" and len(self.close_times) < 5000:
                self.close_times.append((time.time(), st.spec.charge_point_id, ws.close_code))
            await asyncio.sleep(self.rng.uniform(0.0, 5.0))  # reconnect jitter

    async def session(self, st: StationState, ws: ClientConnection) -> None:
        reader = asyncio.create_task(self.read(st, ws))
        try:
            boot = await self.call(
                st,
                "BootNotification",
                {
                    "chargePointVendor": "FleetBench",
                    "chargePointModel": "Lean-1",
                    "firmwareVersion": "1.0",
                },
            )
            if boot.get("status") != "Accepted":
                self.errors[f"boot {boot.get('status')}"] += 1
                await asyncio.sleep(30)
                return
            st.boots += 1
            st.booted_at = time.time()
            st.heartbeat = float(boot.get("interval") or 300) or 300.0
            status = "Charging" if st.spec.charging else "Available"
            await self.call(st, "StatusNotification", _status(0, "Available"))
            await self.call(st, "StatusNotification", _status(1, status))
            if st.spec.charging and st.transaction_id is None:
                await self.call(st, "Authorize", {"idTag": "FLEETTAG"})
                started = await self.call(
                    st,
                    "StartTransaction",
                    {
                        "connectorId": 1,
                        "idTag": "FLEETTAG",
                        "meterStart": st.meter_wh,
                        "timestamp": _now_iso(),
                    },
                )
                st.transaction_id = started.get("transactionId")
            # Heartbeats and meter values spread over their intervals, as a real fleet's are.
            next_hb = time.monotonic() + self.rng.uniform(0, st.heartbeat)
            next_mv = time.monotonic() + self.rng.uniform(0, METER_INTERVAL)
            while not reader.done():
                now = time.monotonic()
                if st.spec.charging and now >= next_mv:
                    next_mv = now + METER_INTERVAL
                    await self.meter_values(st)
                if now >= next_hb:
                    next_hb = now + st.heartbeat
                    await self.call(st, "Heartbeat", {})
                wake = min(next_hb, next_mv if st.spec.charging else next_hb)
                await asyncio.wait({reader}, timeout=max(0.05, wake - time.monotonic()))
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def meter_values(self, st: StationState) -> None:
        limit = st.lease_limit or 6.0
        st.meter_wh += int(limit * 230 * 3 / 60)
        sampled = [
            {"value": str(st.meter_wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": str(round(limit * 690)), "measurand": "Power.Active.Import", "unit": "W"},
        ] + [
            {"value": str(limit), "measurand": "Current.Import", "phase": p, "unit": "A"}
            for p in ("L1", "L2", "L3")
        ]
        payload: dict[str, Any] = {
            "connectorId": 1,
            "meterValue": [{"timestamp": _now_iso(), "sampledValue": sampled}],
        }
        if st.transaction_id is not None:
            payload["transactionId"] = st.transaction_id
        await self.call(st, "MeterValues", payload)

    # --- framing ----------------------------------------------------------------------

    async def call(self, st: StationState, action: str, payload: dict) -> dict:
        """One CALL; waits for its CALLRESULT (or raises); records the answer time."""
        ws = st.ws
        if ws is None:
            raise ConnectionError("not connected")
        st.seq += 1
        uid = f"{st.seq}"
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        t0 = time.monotonic()
        st.pending[uid] = (fut, t0, action)
        phase = self.phase
        try:
            await ws.send(json.dumps([2, uid, action, payload]))
            self.counts[f"sent {action}"] += 1
            result = await asyncio.wait_for(fut, CALL_TIMEOUT)
        except TimeoutError:
            self.errors[f"timeout {action}"] += 1
            raise
        finally:
            st.pending.pop(uid, None)
            if fut.done() and not fut.cancelled():
                # The socket closed while the CALL was being sent: the reader failed the
                # future before anyone waited on it (asyncio would log it as never retrieved).
                fut.exception()
        ms = (time.monotonic() - t0) * 1000
        self.latencies[phase].append(ms)
        if phase == "steady":
            self.steady_detail.append((time.time() - ms / 1000, ms, action))
        if isinstance(result, list):  # CALLERROR
            self.errors[f"callerror {action} {result[2]}"] += 1
            return {}
        return result

    async def read(self, st: StationState, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                msg = json.loads(raw)
                kind = msg[0]
                if kind in (3, 4):
                    entry = st.pending.get(msg[1])
                    if entry and not entry[0].done():
                        entry[0].set_result(msg[2] if kind == 3 else msg)
                elif kind == 2:
                    await self.answer(st, ws, msg[1], msg[2], msg[3])
        finally:
            # The socket closed: calls still waiting get no answer on it.
            for fut, _t0, _action in list(st.pending.values()):
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))

    async def answer(
        self, st: StationState, ws: ClientConnection, uid: str, action: str, payload: dict
    ) -> None:
        self.counts[f"received {action}"] += 1
        follow_up = None
        if action == "SetChargingProfile":
            profile = payload.get("csChargingProfiles") or {}
            pid = int(profile.get("chargingProfileId", 0))
            periods = (profile.get("chargingSchedule") or {}).get("chargingSchedulePeriod") or []
            limit = float(periods[0]["limit"]) if periods else 0.0
            now = time.time()
            if FAIL_SAFE_BASE <= pid < FAIL_SAFE_BASE + 100:
                st.failsafe_at = st.failsafe_at or now
            elif LEASE_BASE <= pid < LEASE_BASE + 100:
                st.lease_limit = limit
                if limit > 0:
                    st.lease_at = st.lease_at or now
            result: dict[str, Any] = {"status": "Accepted"}
        elif action == "GetConfiguration":
            result = {"configurationKey": [], "unknownKey": payload.get("key") or []}
        elif action == "TriggerMessage":
            result = {"status": "Accepted"}
            follow_up = payload.get("requestedMessage")
        elif action in ("DataTransfer",):
            result = {"status": "UnknownVendorId"}
        elif action == "UnlockConnector":
            result = {"status": "Unlocked"}
        else:  # ChangeConfiguration, ClearChargingProfile, Reset, RemoteStart/Stop...
            result = {"status": "Accepted"}
        await ws.send(json.dumps([3, uid, result]))
        if follow_up == "StatusNotification":
            status = "Charging" if st.spec.charging else "Available"
            asyncio.get_running_loop().create_task(
                self._quiet(self.call(st, "StatusNotification", _status(1, status)))
            )
        elif follow_up in ("Heartbeat", "MeterValues"):
            coro = (
                self.call(st, "Heartbeat", {})
                if follow_up == "Heartbeat"
                else (self.meter_values(st))
            )
            asyncio.get_running_loop().create_task(self._quiet(coro))

    async def _quiet(self, coro: Any) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await coro

    # --- control ----------------------------------------------------------------------

    def ramp(self, rate: float) -> None:
        """Start every station, ``rate`` new connections per second (this process)."""
        for i, st in enumerate(self.stations):
            self.tasks.append(asyncio.get_running_loop().create_task(self.life(st, i / rate)))

    def report(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "online": sum(s.online for s in self.stations),
            "latencies": {k: v for k, v in self.latencies.items()},
            "steady_detail": self.steady_detail,
            "refusals": self.refusals,
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "closes": dict(self.closes),
            "close_times": self.close_times,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
            "stations": [
                (
                    s.spec.charge_point_id,
                    s.online,
                    s.boots,
                    s.booted_at,
                    s.failsafe_at,
                    s.lease_at,
                    s.lease_limit,
                    s.spec.charging,
                )
                for s in self.stations
            ],
        }

    async def stop(self) -> None:
        self.stopping = True
        for st in self.stations:
            if st.ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(st.ws.close(), 2)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _basic(spec: StationSpec) -> str:
    token = base64.b64encode(f"{spec.charge_point_id}:{spec.password}".encode()).decode()
    return f"Basic {token}"


def _status(connector: int, status: str) -> dict:
    return {
        "connectorId": connector,
        "errorCode": "NoError",
        "status": status,
        "timestamp": _now_iso(),
    }


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _serve(conn: Connection, specs: list[StationSpec], seed: int) -> None:
    """Commands from the benchmark over the pipe: (verb, argument) -> answer.

    The pipe is read in a thread, not with ``loop.add_reader``: that sets the descriptor
    non-blocking, and a report larger than the pipe's buffer then fails half sent (the
    benchmark waits for the rest forever)."""
    sim = SimProcess(specs, seed)
    loop = asyncio.get_running_loop()
    while True:
        verb, arg = await loop.run_in_executor(None, conn.recv)
        if verb == "ramp":
            sim.ramp(arg)
            conn.send("ok")
        elif verb == "phase":
            sim.phase = arg
            conn.send("ok")
        elif verb == "report":
            conn.send(sim.report())
        elif verb == "stop":
            await sim.stop()
            conn.send(sim.report())
            return


def run_sim_process(conn: Connection, specs: list[StationSpec], seed: int) -> None:
    """Entry point of one simulator process (multiprocessing, spawn)."""
    raise_nofile()
    # 2,500 stations hold over a million objects: with CPython's default thresholds the
    # process stopped for up to 3.4 s in full collections, and every answer time it measured
    # meanwhile grew by that much. The same settings as the portal's (portal/collector.py).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    runner = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    runner(_serve(conn, specs, seed))
