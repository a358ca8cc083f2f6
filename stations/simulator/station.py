"""One simulated OCPP 1.6J charge point: connectors, cars, meter, profiles, offline queue.

Concurrency model (one asyncio task set per station, all in one event loop):

- `_run` owns the websocket: connects (with back-off), then serves one connection at a time.
- per connection: the library's receive loop (answers the central system's CALLs) and
  `_session` (BootNotification, StatusNotifications, then the sender).
- every CALL the station makes goes through one ordered outbox drained by the sender, so at
  most one CALL is outstanding (OCPP-J) and transaction messages keep their order. Transaction
  messages (StartTransaction, StopTransaction, MeterValues of a transaction) stay queued while
  offline and are replayed in order after a reconnect; other messages are dropped offline.
- handlers for the central system's CALLs never await a CALL of their own: they change state
  and enqueue, or act in an `@after` hook once the answer is on the wire.
- `_supervise` integrates energy piecewise between breakpoints (profile period boundaries,
  `validTo`, a car getting full) so the register is exact whatever the sampling.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import websockets
from ocpp.exceptions import OCPPError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action
from websockets.typing import Subprotocol

from .car import Car
from .clock import Clock, RealClock, iso
from .config import check_value, default_config
from .profiles import CP_MAX, TX, VOLTS, Profile, ProfileStore

log = logging.getLogger(__name__)

PORTAL_VENDOR_ID = "org.chargeportal"  # the portal's DataTransfer messages (docs/OCPP.md)

AVAILABLE = "Available"
PREPARING = "Preparing"
CHARGING = "Charging"
SUSPENDED_EV = "SuspendedEV"
SUSPENDED_EVSE = "SuspendedEVSE"
FINISHING = "Finishing"
FAULTED = "Faulted"

ACCEPTED = "Accepted"
MAX_QUEUE = 20_000  # offline backlog cap; periodic MeterValues are dropped first beyond it


class StationOffline(Exception):
    """A non-transaction message could not be sent because the station is offline."""


@dataclass
class Transaction:
    """A charging session as the station sees it.

    `transaction_id` is None until the central system answers StartTransaction, and -1 when
    it never will (CALLERROR after TransactionMessageAttempts): later messages then carry -1.
    """

    connector_id: int
    id_tag: str
    meter_start: int
    start_time: float
    transaction_id: int | None = None
    id_tag_status: str | None = None
    meter_stop: int | None = None
    stop_time: float | None = None
    stop_reason: str | None = None
    started: asyncio.Future[int] = field(default_factory=lambda: _future(), repr=False)
    stopped: asyncio.Future[None] = field(default_factory=lambda: _future(), repr=False)

    @property
    def active(self) -> bool:
        return self.stop_time is None

    async def wait_started(self, timeout: float = 10.0) -> int:  # noqa: ASYNC109
        """The transaction id, once StartTransaction has been answered."""
        return await asyncio.wait_for(asyncio.shield(self.started), timeout)

    async def wait_stopped(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until StopTransaction has been answered."""
        await asyncio.wait_for(asyncio.shield(self.stopped), timeout)


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@dataclass
class Connector:
    """Readable state of one connector."""

    id: int
    status: str = AVAILABLE
    error_code: str = "NoError"
    car: Car | None = None
    transaction: Transaction | None = None
    energy_wh: float = 0.0  # the meter register, exact; reported as int(energy_wh)
    offered_a: float = 0.0  # per-phase current the station offers now
    current_a: float = 0.0  # per-phase current the car draws now
    phases: int = 0  # phases in use (0 without a car)
    drawing: bool = False
    pending_id_tag: str | None = None  # authorized (or remote start) waiting for a car
    pending_until: float = 0.0
    pending_profile: dict[str, Any] | None = None
    reported_status: str | None = None
    finishing: bool = False  # a transaction ended while the car is still plugged in
    last_tx: Transaction | None = None

    @property
    def energy_register_wh(self) -> int:
        return int(self.energy_wh + 1e-6)

    @property
    def power_w(self) -> float:
        return self.current_a * VOLTS * self.phases if self.drawing else 0.0

    @property
    def transaction_id(self) -> int | None:
        return self.transaction.transaction_id if self.transaction else None


@dataclass
class _Outgoing:
    build: Callable[[], Any]  # builds the payload at send time (transaction ids resolve late)
    transactional: bool
    future: asyncio.Future[Any]
    on_result: Callable[[Any], None] | None = None
    on_fail: Callable[[BaseException], None] | None = None
    periodic: bool = False
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class Stats:
    """Counters a fleet can share between stations (cheap to update)."""

    sent: dict[str, int] = field(default_factory=dict)
    call_errors: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0

    def count(self, table: dict[str, int], action: str) -> None:
        table[action] = table.get(action, 0) + 1


class _Client(OcppChargePoint):
    """The `ocpp` library's charge point, answering the central system's CALLs."""

    def __init__(self, station: SimStation, connection: Any, response_timeout: float) -> None:
        super().__init__(station.id, connection, response_timeout=response_timeout)
        self.station = station

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: int | None = None, **kw: Any):
        status = self.station._remote_start_decide(id_tag, connector_id, kw.get("charging_profile"))
        return result.RemoteStartTransaction(status=status)

    @after(Action.remote_start_transaction)
    def after_remote_start(self, **_: Any):
        self.station._remote_start_execute()

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int):
        ok = self.station._find_tx(transaction_id) is not None
        return result.RemoteStopTransaction(status=ACCEPTED if ok else "Rejected")

    @after(Action.remote_stop_transaction)
    def after_remote_stop(self, transaction_id: int):
        connector = self.station._find_tx(transaction_id)
        if connector is not None:
            self.station._end_transaction(connector, "Remote")

    @on(Action.set_charging_profile)
    def on_set_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]):
        status = self.station._set_profile(connector_id, cs_charging_profiles)
        return result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_profile(self, **kw: Any):
        status = self.station._clear_profile(**kw)
        return result.ClearChargingProfile(status=status)

    @on(Action.unlock_connector)
    def on_unlock(self, connector_id: int):
        if not 1 <= connector_id <= len(self.station.connectors):
            return result.UnlockConnector(status="NotSupported")
        return result.UnlockConnector(status="Unlocked")

    @after(Action.unlock_connector)
    def after_unlock(self, connector_id: int):
        self.station._unlock(connector_id)

    @on(Action.reset)
    def on_reset(self, type: str):
        return result.Reset(status=ACCEPTED)

    @after(Action.reset)
    def after_reset(self, type: str):
        self.station._spawn(self.station._reset(type))

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str):
        return result.ChangeConfiguration(status=self.station._change_config(key, value))

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None):
        known, unknown = self.station._get_config(key)
        return result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.trigger_message)
    def on_trigger(self, requested_message: str, connector_id: int | None = None):
        return result.TriggerMessage(
            status=self.station._trigger_check(requested_message, connector_id)
        )

    @after(Action.trigger_message)
    def after_trigger(self, requested_message: str, connector_id: int | None = None):
        self.station._trigger_execute(requested_message, connector_id)

    @on(Action.data_transfer)
    def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None
    ):
        if vendor_id == PORTAL_VENDOR_ID:
            status, answer = self.station._portal_data_transfer(message_id, data)
            return result.DataTransfer(status=status, data=answer)
        if vendor_id != self.station.vendor:
            return result.DataTransfer(status="UnknownVendorId")
        if message_id == "ping":
            return result.DataTransfer(status=ACCEPTED, data=data or "pong")
        return result.DataTransfer(status="UnknownMessageId")

    @on(Action.change_availability)
    def on_change_availability(self, connector_id: int, type: str):
        return result.ChangeAvailability(status="Rejected")


class SimStation:
    """A simulated OCPP 1.6J charge point.

    `url` is the central system's base URL (``ws://host:port/ocpp/``); the identity is
    appended percent-encoded. `password` (the AuthorizationKey) is sent as HTTP Basic auth.
    """

    def __init__(
        self,
        charge_point_id: str,
        url: str,
        password: str | None = None,
        connectors: int = 2,
        *,
        clock: Clock | None = None,
        vendor: str = "ChargePortalSim",
        model: str = "SIM-22",
        serial: str | None = None,
        firmware: str = "sim-1.0",
        max_current_a: float = 32.0,
        switch_3to1: bool = True,
        heartbeat_interval: int | None = None,
        meter_interval: int | None = None,
        boot_on_reconnect: bool = False,
        validate_messages: bool = True,
        response_timeout: float = 30.0,
        meter_start_wh: float = 0.0,
        open_timeout: float = 10.0,
        reconnect_backoff: tuple[float, float] = (0.2, 30.0),
        stats: Stats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if connectors < 1:
            raise ValueError("a charge point has at least one connector")
        self.id = charge_point_id
        self.url = url if url.endswith("/") else url + "/"
        self.ws_url = self.url + quote(charge_point_id, safe="")
        self.clock: Clock = clock or RealClock()
        self.vendor, self.model, self.firmware = vendor, model, firmware
        self.serial = serial or f"SN-{charge_point_id}"
        self.max_current_a = max_current_a
        self.boot_on_reconnect = boot_on_reconnect
        self.validate_messages = validate_messages
        self.response_timeout = response_timeout
        self.open_timeout = open_timeout
        self.reconnect_backoff = reconnect_backoff
        self.stats = stats or Stats()
        self.rng = rng or random.Random()
        self.heartbeat_override = heartbeat_interval
        self.config = default_config(connectors, switch_3to1=switch_3to1)
        self.config["AuthorizationKey"].value = password or ""
        if heartbeat_interval is not None:
            self.config["HeartbeatInterval"].value = str(heartbeat_interval)
        if meter_interval is not None:
            self.config["MeterValueSampleInterval"].value = str(meter_interval)
        self.connectors = [Connector(i, energy_wh=meter_start_wh) for i in range(1, connectors + 1)]
        self.profiles = ProfileStore()

        self.registration: str | None = None  # last BootNotification answer
        self.connected = False
        self.last_error: str | None = None
        self.resets = 0
        self.boots = 0
        self.received: list[str] = []  # actions the central system sent, in order
        self.display_frames: list[bytes] = []  # the last DisplayImage, raw RGB888 frames
        self.display_meter: tuple[int, int] | None = None  # (connector, Wh) last ShowMeter

        self._outbox: deque[_Outgoing] = deque()
        self._outbox_event = asyncio.Event()
        self._online_wanted = asyncio.Event()
        self._online_wanted.set()
        self._ready = asyncio.Event()  # connected, registered and statuses sent
        self._boot_now = asyncio.Event()
        self._wake = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._needs_boot = True
        self._stopping = False
        self._ws: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._conn_tasks: list[asyncio.Task[Any]] = []
        self._meter_tasks: dict[int, asyncio.Task[None]] = {}
        self._phys_time = self.clock.time()
        self._remote_plan: tuple[Connector, str, dict[str, Any] | None] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def password(self) -> str:
        return self.config["AuthorizationKey"].value

    @property
    def online(self) -> bool:
        return self._ready.is_set()

    @property
    def queued(self) -> int:
        """Messages waiting in the outbox (the offline backlog)."""
        return len(self._outbox)

    def connector(self, connector_id: int) -> Connector:
        if not 1 <= connector_id <= len(self.connectors):
            raise ValueError(f"no connector {connector_id}")
        return self.connectors[connector_id - 1]

    def cfg(self, key: str) -> str:
        return self.config[key].value

    def cfg_int(self, key: str) -> int:
        return int(self.config[key].value or 0)

    def cfg_bool(self, key: str) -> bool:
        return self.config[key].value.lower() == "true"

    async def start(self, *, wait: bool = True, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Connect and boot; with `wait`, return once registered (Accepted) and online."""
        if self._runner is None:
            self._stopping = False
            self._phys_time = self.clock.time()
            self._runner = asyncio.create_task(self._run(), name=f"sim-{self.id}")
            self._spawn(self._supervise())
        if wait:
            await self.wait_online(timeout)

    async def wait_online(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        """Close the connection and stop every task (no StopTransaction is sent)."""
        self._stopping = True
        tasks = [
            t
            for t in (self._runner, *self._conn_tasks, *self._tasks, *self._meter_tasks.values())
            if t
        ]
        if self._ws is not None:
            self._ws.transport.abort()
        await _cancel(tasks)
        self._runner = None
        self._tasks.clear()
        self._meter_tasks.clear()
        self._ready.clear()
        self.connected = False

    async def drop_connection(self) -> None:
        """Lose the link abruptly (no close frame) and stay offline until `reconnect()`."""
        self._online_wanted.clear()
        ws = self._ws
        if ws is not None:
            ws.transport.abort()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wait_disconnected(), 5)

    async def reconnect(self, *, wait: bool = True, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        self._online_wanted.set()
        if wait:
            await self.wait_online(timeout)

    async def plug_in(
        self, connector_id: int, car: Car, id_tag: str | None = None
    ) -> Transaction | None:
        """A car arrives. With `id_tag` (or a waiting authorization) a transaction starts."""
        c = self.connector(connector_id)
        if c.car is not None:
            raise ValueError(f"connector {connector_id} already has a car")
        self._update()
        c.car = car
        c.drawing = False
        c.finishing = False
        if c.pending_id_tag and c.pending_until > self.clock.time() and c.transaction is None:
            tag, profile = c.pending_id_tag, c.pending_profile
            c.pending_id_tag, c.pending_profile = None, None
            return self._begin_transaction(c, tag, profile)
        self._refresh()
        if id_tag is not None:
            return await self.swipe(connector_id, id_tag)
        return None

    async def unplug(self, connector_id: int) -> Transaction | None:
        """The car leaves; a running transaction stops with reason EVDisconnected."""
        c = self.connector(connector_id)
        self._update()
        tx = c.transaction
        if tx is not None:
            self._end_transaction(c, "EVDisconnected")
        c.car = None
        c.drawing = False
        c.finishing = False
        self._refresh()
        return tx

    async def swipe(self, connector_id: int, id_tag: str) -> Transaction | None:
        """An RFID card at the reader: stops its own transaction, or authorizes and starts."""
        c = self.connector(connector_id)
        tx = c.transaction
        if tx is not None:
            if tx.id_tag == id_tag:
                self._end_transaction(c, "Local")
                return tx
            return None
        if await self.authorize(id_tag) != ACCEPTED:
            return None
        if c.car is not None:
            return self._begin_transaction(c, id_tag)
        c.pending_id_tag = id_tag
        c.pending_until = self.clock.time() + self.cfg_int("ConnectionTimeOut")
        self._refresh()
        self._wake.set()
        return None

    async def authorize(self, id_tag: str) -> str:
        """Authorize online; offline, LocalAuthorizeOffline decides."""
        offline_answer = ACCEPTED if self.cfg_bool("LocalAuthorizeOffline") else "Invalid"
        if not self.online:
            return offline_answer
        try:
            res = await self._request(call.Authorize(id_tag=id_tag))
        except (TimeoutError, StationOffline):
            return offline_answer
        except OCPPError:
            return "Invalid"
        return _field(res.id_tag_info, "status")

    async def stop_transaction(
        self, connector_id: int, reason: str = "Local"
    ) -> Transaction | None:
        c = self.connector(connector_id)
        tx = c.transaction
        if tx is not None:
            self._end_transaction(c, reason)
        return tx

    def set_fault(self, connector_id: int, error_code: str = "OtherError") -> None:
        c = self.connector(connector_id)
        self._update()
        c.error_code = error_code
        self._refresh()

    def clear_fault(self, connector_id: int) -> None:
        c = self.connector(connector_id)
        self._update()
        c.error_code = "NoError"
        self._refresh()

    def send_meter_values(
        self, connector_id: int = 1, context: str = "Sample.Periodic"
    ) -> asyncio.Future[Any]:
        """Send one MeterValues now (queued offline only if it belongs to a transaction)."""
        c = self.connector(connector_id)
        self._update()
        return self._enqueue_meter(c, context)

    def heartbeat(self) -> asyncio.Future[Any]:
        return self._enqueue(lambda: call.Heartbeat(), transactional=False)

    def limit_for(self, connector_id: int) -> float:
        """The per-phase current offered on a connector now (after profiles)."""
        self._update()
        return self.connector(connector_id).offered_a

    async def drain(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the outbox is empty."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._outbox:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(self._outbox)} messages still queued")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ connection

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait_disconnected(self) -> None:
        await self._disconnected.wait()

    def _auth_header(self) -> dict[str, str]:
        if not self.password:
            return {}
        token = base64.b64encode(f"{self.id}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _run(self) -> None:
        low, high = self.reconnect_backoff
        backoff = low
        while not self._stopping:
            await self._online_wanted.wait()
            try:
                ws = await websockets.connect(
                    self.ws_url,
                    subprotocols=[Subprotocol("ocpp1.6")],
                    additional_headers=self._auth_header(),
                    open_timeout=self.open_timeout,
                    ping_interval=self.cfg_int("WebSocketPingInterval") or None,
                    ping_timeout=None,
                    max_queue=64,
                    compression=None,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = repr(exc)
                self.stats.connect_failures += 1
                await asyncio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, high)
                continue
            if ws.subprotocol != "ocpp1.6":
                self.last_error = "central system did not accept subprotocol ocpp1.6"
                await ws.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, high)
                continue
            backoff = low
            await self._serve(ws)

    async def _serve(self, ws: Any) -> None:
        self._ws = ws
        self._disconnected.clear()
        self.connected = True
        self.stats.connects += 1
        cp = _Client(self, ws, self.response_timeout)
        tasks = [asyncio.create_task(cp.start()), asyncio.create_task(self._session(cp))]
        self._conn_tasks = tasks
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, websockets.ConnectionClosed):
                    self.last_error = repr(exc)
                    log.warning("%s: %r", self.id, exc)
        finally:
            await _cancel(tasks)
            self._ready.clear()
            self.connected = False
            self.stats.disconnects += 1
            with contextlib.suppress(Exception):
                await ws.close()
            self._ws = None
            self._disconnected.set()
            self._drop_offline_items()

    def _drop_offline_items(self) -> None:
        kept: deque[_Outgoing] = deque()
        for item in self._outbox:
            if item.transactional:
                kept.append(item)
            elif not item.future.done():
                item.future.set_exception(StationOffline(self.id))
                item.future.exception()  # mark retrieved: nobody may be waiting
        self._outbox = kept

    async def _session(self, cp: _Client) -> None:
        if self._needs_boot or self.boot_on_reconnect:
            await self._boot(cp)
        for c in self.connectors:  # report every connector after boot, changed ones otherwise
            if c.reported_status != c.status or self._needs_status_all:
                await self._call(cp, self._status_payload(c))
                c.reported_status = c.status
        self._needs_status_all = False
        self._ready.set()
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        try:
            await self._sender(cp)
        finally:
            heartbeat.cancel()

    _needs_status_all = True

    async def _boot(self, cp: _Client) -> None:
        payload = call.BootNotification(
            charge_point_vendor=self.vendor,
            charge_point_model=self.model,
            charge_point_serial_number=self.serial,
            firmware_version=self.firmware,
            meter_type="SimMeter",
        )
        while True:
            res = await self._call(cp, payload)
            self.registration = res.status
            if res.status == ACCEPTED:
                self.boots += 1
                self._needs_boot = False
                self._needs_status_all = True
                if self.heartbeat_override is None and res.interval > 0:
                    self.config["HeartbeatInterval"].value = str(res.interval)
                return
            retry = res.interval if res.interval > 0 else 30
            self._boot_now.clear()
            sleeper = asyncio.create_task(self.clock.sleep(retry))
            waker = asyncio.create_task(self._boot_now.wait())
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            sleeper.cancel()
            waker.cancel()

    async def _heartbeat_loop(self) -> None:
        while True:
            interval = self.cfg_int("HeartbeatInterval")
            await self.clock.sleep(interval if interval > 0 else 300)
            if self.cfg_int("HeartbeatInterval") > 0:
                fut = self.heartbeat()
                fut.add_done_callback(_ignore)

    async def _call(self, cp: _Client, payload: Any) -> Any:
        action = type(payload).__name__
        self.stats.count(self.stats.sent, action)
        try:
            return await cp.call(
                payload, suppress=False, skip_schema_validation=not self.validate_messages
            )
        except OCPPError:
            self.stats.count(self.stats.call_errors, action)
            raise
        except TimeoutError:
            self.stats.timeouts += 1
            raise

    async def _sender(self, cp: _Client) -> None:
        while True:
            while not self._outbox:
                self._outbox_event.clear()
                await self._outbox_event.wait()
            item = self._outbox[0]
            wait = item.not_before - self.clock.time()
            if wait > 0:
                await self.clock.sleep(wait)
                continue
            try:
                payload = item.build()
            except Exception as exc:  # a bug in a builder must not wedge the queue
                self._outbox.popleft()
                _fail(item, exc)
                continue
            try:
                res = await self._call(cp, payload)
            except (TimeoutError, OCPPError) as exc:
                item.attempts += 1
                attempts = max(1, self.cfg_int("TransactionMessageAttempts"))
                if item.transactional and item.attempts < attempts:
                    interval = self.cfg_int("TransactionMessageRetryInterval")
                    item.not_before = self.clock.time() + interval * item.attempts
                    continue
                self._outbox.popleft()
                _fail(item, exc)
                continue
            self._outbox.popleft()
            if item.on_result is not None:
                item.on_result(res)
            if not item.future.done():
                item.future.set_result(res)

    def _enqueue(
        self,
        build: Callable[[], Any],
        *,
        transactional: bool,
        on_result: Callable[[Any], None] | None = None,
        on_fail: Callable[[BaseException], None] | None = None,
        periodic: bool = False,
    ) -> asyncio.Future[Any]:
        item = _Outgoing(build, transactional, _future(), on_result, on_fail, periodic)
        if not transactional and not self.online:
            _fail(item, StationOffline(self.id))
            return item.future
        if len(self._outbox) >= MAX_QUEUE:
            self._shed()
        self._outbox.append(item)
        self._outbox_event.set()
        return item.future

    def _shed(self) -> None:
        for item in list(self._outbox)[1:]:
            if item.periodic:
                self._outbox.remove(item)
                _fail(item, StationOffline("queue full"))
                return

    async def _request(self, payload: Any) -> Any:
        return await self._enqueue(lambda: payload, transactional=False)

    # ------------------------------------------------------------------ physics

    def _update(self, now: float | None = None) -> None:
        """Integrate every connector's energy up to `now`, exactly across breakpoints."""
        now = self.clock.time() if now is None else now
        t = self._phys_time
        for _ in range(10_000):
            if t >= now:
                break
            self._recompute(t)
            step_end = now
            nxt = self._next_breakpoint(t)
            if nxt is not None:
                step_end = min(step_end, nxt)
            for c in self.connectors:
                if c.power_w > 0 and c.car is not None:
                    step_end = min(step_end, t + c.car.wh_to_target / c.power_w * 3600.0)
            step_end = max(step_end, t + 1e-9) if step_end <= t else step_end
            dt = step_end - t
            for c in self.connectors:
                wh = c.power_w * dt / 3600.0
                if wh > 0 and c.car is not None:
                    wh = min(wh, c.car.wh_to_target)
                    c.energy_wh += wh
                    c.car.add_energy(wh)
            t = step_end
        self._phys_time = max(self._phys_time, now)
        self._recompute(self._phys_time)

    def _next_breakpoint(self, t: float) -> float | None:
        tx_starts = [c.transaction.start_time if c.transaction else None for c in self.connectors]
        nxt = self.profiles.next_change(t, tx_starts)
        for c in self.connectors:
            if c.pending_id_tag and c.pending_until > t:
                nxt = c.pending_until if nxt is None else min(nxt, c.pending_until)
        return nxt

    def _allowed_phases(self, number_phases: int | None) -> int:
        if number_phases == 1 and self.cfg_bool("ConnectorSwitch3to1PhaseSupported"):
            return 1
        return 3

    def _recompute(self, t: float) -> None:
        """Offered and drawn current of every connector at time t (no messages sent)."""
        station = self.profiles.station_limit(t)
        wanting = [
            c
            for c in self.connectors
            if c.transaction is not None and c.car is not None and not c.car.full
        ]
        share = math.inf
        if station.amps is not None:
            share = station.amps / max(1, len(wanting))
        for c in self.connectors:
            phases_hint = c.car.phases if c.car else 3
            tx = c.transaction
            limit = self.profiles.tx_limit(
                c.id,
                t,
                transaction_id=tx.transaction_id if tx else None,
                tx_start=tx.start_time if tx else None,
                phases_hint=phases_hint,
            )
            offered = self.max_current_a
            if limit.amps is not None:
                offered = min(offered, limit.amps)
            offered = max(0.0, min(offered, share))
            if c.error_code != "NoError":
                offered = 0.0
            allowed = min(self._allowed_phases(limit.phases), self._allowed_phases(station.phases))
            c.offered_a = round(offered, 1)
            if c.car is None:
                c.phases, c.current_a, c.drawing = 0, 0.0, False
                continue
            c.phases = min(c.car.phases, allowed)
            amps = c.car.accept(c.offered_a, c.drawing) if tx is not None else 0.0
            c.current_a = amps
            c.drawing = amps > 0

    def _status_of(self, c: Connector) -> str:
        if c.error_code != "NoError":
            return FAULTED
        if c.transaction is not None:
            if c.drawing:
                return CHARGING
            if c.offered_a < 6.0:
                return SUSPENDED_EVSE
            return SUSPENDED_EV
        if c.car is not None:
            return FINISHING if c.finishing else PREPARING
        if c.pending_id_tag and c.pending_until > self.clock.time():
            return PREPARING
        return AVAILABLE

    def _refresh(self) -> None:
        """Expire waiting authorizations, then report every connector whose status changed."""
        now = self.clock.time()
        for c in self.connectors:
            if c.pending_id_tag and c.pending_until <= now:
                c.pending_id_tag, c.pending_profile = None, None
            status = self._status_of(c)
            if status != c.status:
                c.status = status
                if self.online:
                    self._send_status(c)
        self._wake.set()

    def _send_status(self, c: Connector) -> None:
        def sent(_: Any, c: Connector = c, status: str = c.status) -> None:
            c.reported_status = status

        payload = self._status_payload(c)  # the status of now, not of when it is sent
        fut = self._enqueue(lambda: payload, transactional=False, on_result=sent)
        fut.add_done_callback(_ignore)

    def _status_payload(self, c: Connector) -> call.StatusNotification:
        return call.StatusNotification(
            connector_id=c.id,
            error_code=c.error_code,
            status=c.status,
            timestamp=iso(self.clock.time()),
        )

    async def _supervise(self) -> None:
        while True:
            self._update()
            self._refresh()
            self._wake.clear()
            now = self.clock.time()
            nxt = self._next_breakpoint(now)
            for c in self.connectors:  # wake when a car gets full
                if c.power_w > 0 and c.car is not None:
                    full_at = now + c.car.wh_to_target / c.power_w * 3600.0
                    nxt = full_at if nxt is None else min(nxt, full_at)
            delay = 3600.0 if nxt is None else max(0.0, min(3600.0, nxt - now))
            sleeper = asyncio.create_task(self.clock.sleep(delay))
            waker = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    # ------------------------------------------------------------------ transactions

    def _begin_transaction(
        self, c: Connector, id_tag: str, profile: dict[str, Any] | None = None
    ) -> Transaction:
        now = self.clock.time()
        self._update(now)
        tx = Transaction(c.id, id_tag, meter_start=c.energy_register_wh, start_time=now)
        c.transaction = tx
        c.last_tx = tx
        c.drawing = False
        c.finishing = False
        if profile is not None:
            self.profiles.install(Profile.from_ocpp(c.id, profile, now))

        def build() -> call.StartTransaction:
            return call.StartTransaction(
                connector_id=c.id, id_tag=id_tag, meter_start=tx.meter_start, timestamp=iso(now)
            )

        def on_result(res: Any) -> None:
            tx.transaction_id = res.transaction_id
            tx.id_tag_status = _field(res.id_tag_info, "status")
            if not tx.started.done():
                tx.started.set_result(tx.transaction_id)
            if (
                tx.id_tag_status != ACCEPTED
                and tx.active
                and self.cfg_bool("StopTransactionOnInvalidId")
            ):
                self._end_transaction(c, "DeAuthorized")

        def on_fail(exc: BaseException) -> None:
            # The central system will never give this transaction an id: later messages
            # for it carry transactionId -1 (OCPP 1.6 errata on failed StartTransaction).
            tx.transaction_id = -1
            if not tx.started.done():
                tx.started.set_result(-1)

        fut = self._enqueue(build, transactional=True, on_result=on_result, on_fail=on_fail)
        fut.add_done_callback(_ignore)
        self._update(now)
        self._refresh()
        self._meter_tasks[c.id] = self._spawn(self._meter_loop(c, tx))
        return tx

    def _end_transaction(self, c: Connector, reason: str) -> None:
        tx = c.transaction
        if tx is None:
            return
        now = self.clock.time()
        self._update(now)
        tx.meter_stop = c.energy_register_wh
        tx.stop_time = now
        tx.stop_reason = reason
        c.transaction = None
        c.drawing = False
        self.profiles.drop_tx_profiles(c.id)
        task = self._meter_tasks.pop(c.id, None)
        if task is not None:
            task.cancel()

        def build() -> call.StopTransaction:
            return call.StopTransaction(
                meter_stop=tx.meter_stop,
                timestamp=iso(now),
                transaction_id=tx.transaction_id if tx.transaction_id is not None else -1,
                reason=reason,
                id_tag=tx.id_tag,
                transaction_data=[
                    {
                        "timestamp": iso(now),
                        "sampledValue": [
                            {
                                "value": str(tx.meter_stop),
                                "context": "Transaction.End",
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            }
                        ],
                    }
                ],
            )

        def done(_: Any) -> None:
            if not tx.stopped.done():
                tx.stopped.set_result(None)

        fut = self._enqueue(build, transactional=True, on_result=done, on_fail=done)
        fut.add_done_callback(_ignore)
        c.finishing = c.car is not None
        self._update(now)
        self._refresh()

    def _find_tx(self, transaction_id: int) -> Connector | None:
        for c in self.connectors:
            if c.transaction is not None and c.transaction.transaction_id == transaction_id:
                return c
        return None

    async def _meter_loop(self, c: Connector, tx: Transaction) -> None:
        while tx.active:
            interval = self.cfg_int("MeterValueSampleInterval")
            await self.clock.sleep(interval if interval > 0 else 60)
            if not tx.active or interval <= 0:
                continue
            self._update()
            self._refresh()
            self._enqueue_meter(c, "Sample.Periodic")

    def _enqueue_meter(self, c: Connector, context: str) -> asyncio.Future[Any]:
        tx = c.transaction
        sample = self._sample(c, context)

        def build() -> call.MeterValues:
            tx_id = None
            if tx is not None:
                tx_id = tx.transaction_id if tx.transaction_id is not None else -1
            return call.MeterValues(connector_id=c.id, meter_value=[sample], transaction_id=tx_id)

        fut = self._enqueue(
            build, transactional=tx is not None, periodic=context == "Sample.Periodic"
        )
        fut.add_done_callback(_ignore)
        return fut

    def _sample(self, c: Connector, context: str) -> dict[str, Any]:
        wanted = set(self.cfg("MeterValuesSampledData").split(","))
        values: list[dict[str, Any]] = []

        def add(measurand: str, value: float | int, unit: str, **extra: str) -> None:
            if measurand in wanted:
                text = str(value) if isinstance(value, int) else f"{value:.1f}"
                values.append(
                    {"value": text, "context": context, "measurand": measurand, "unit": unit}
                    | extra
                )

        add("Energy.Active.Import.Register", c.energy_register_wh, "Wh", location="Outlet")
        add("Power.Active.Import", c.power_w, "W", location="Outlet")
        for n, phase in enumerate(("L1", "L2", "L3"), start=1):
            amps = c.current_a if c.drawing and n <= c.phases else 0.0
            add("Current.Import", amps, "A", phase=phase, location="Outlet")
        add("Current.Offered", c.offered_a, "A", location="Outlet")
        for phase in ("L1-N", "L2-N", "L3-N"):
            add("Voltage", VOLTS, "V", phase=phase, location="Outlet")
        if c.car is not None:
            add("SoC", c.car.soc, "Percent", location="EV")
        return {"timestamp": iso(self.clock.time()), "sampledValue": values}

    # ------------------------------------------------------------------ central system calls

    def _remote_start_decide(
        self, id_tag: str, connector_id: int | None, profile: dict[str, Any] | None
    ) -> str:
        self.received.append("RemoteStartTransaction")
        self._remote_plan = None
        if self.registration != ACCEPTED:
            return "Rejected"
        if profile is not None and profile.get("charging_profile_purpose") != TX:
            return "Rejected"
        if connector_id is not None:
            if not 1 <= connector_id <= len(self.connectors):
                return "Rejected"
            candidates = [self.connectors[connector_id - 1]]
        else:
            candidates = sorted(self.connectors, key=lambda c: c.car is None)
        for c in candidates:
            if c.transaction is None and c.error_code == "NoError" and not c.pending_id_tag:
                self._remote_plan = (c, id_tag, profile)
                return ACCEPTED
        return "Rejected"

    def _remote_start_execute(self) -> None:
        plan, self._remote_plan = self._remote_plan, None
        if plan is None:
            return
        c, id_tag, profile = plan

        async def run() -> None:
            if (
                self.cfg_bool("AuthorizeRemoteTxRequests")
                and await self.authorize(id_tag) != ACCEPTED
            ):
                return
            if c.transaction is not None:
                return
            if c.car is not None:
                self._begin_transaction(c, id_tag, profile)
            else:
                c.pending_id_tag, c.pending_profile = id_tag, profile
                c.pending_until = self.clock.time() + self.cfg_int("ConnectionTimeOut")
                self._refresh()

        self._spawn(run())

    def _set_profile(self, connector_id: int, data: dict[str, Any]) -> str:
        self.received.append("SetChargingProfile")
        if not 0 <= connector_id <= len(self.connectors):
            return "Rejected"
        purpose = data.get("charging_profile_purpose")
        if purpose == CP_MAX and connector_id != 0:
            return "Rejected"
        if purpose == TX:
            if connector_id == 0:
                return "Rejected"
            tx = self.connectors[connector_id - 1].transaction
            if tx is None:
                return "Rejected"
            wanted = data.get("transaction_id")
            if wanted is not None and wanted != tx.transaction_id:
                return "Rejected"
        now = self.clock.time()
        self._update(now)  # energy so far was delivered under the old limit
        try:
            profile = Profile.from_ocpp(connector_id, data, now)
        except (KeyError, ValueError):
            return "Rejected"
        if not self.profiles.install(profile):
            return "Rejected"
        self._update(now)
        self._refresh()
        return ACCEPTED

    def _clear_profile(self, **kw: Any) -> str:
        self.received.append("ClearChargingProfile")
        self._update()
        removed = self.profiles.clear(
            profile_id=kw.get("id"),
            connector_id=kw.get("connector_id"),
            purpose=kw.get("charging_profile_purpose"),
            stack_level=kw.get("stack_level"),
        )
        self._update()
        self._refresh()
        return ACCEPTED if removed else "Unknown"

    def _unlock(self, connector_id: int) -> None:
        self.received.append("UnlockConnector")
        if not 1 <= connector_id <= len(self.connectors):
            return
        c = self.connectors[connector_id - 1]
        if c.transaction is not None:
            self._end_transaction(c, "UnlockCommand")

    async def _reset(self, kind: str) -> None:
        self.received.append("Reset")
        reason = "HardReset" if kind == "Hard" else "SoftReset"
        for c in self.connectors:
            c.pending_id_tag = None
            if c.transaction is not None:
                self._end_transaction(c, reason)
        if kind != "Hard":
            with contextlib.suppress(asyncio.TimeoutError):
                await self.drain(timeout=10)
        self.resets += 1
        self._needs_boot = True
        ws = self._ws
        if ws is not None:
            await ws.close(code=1012, reason="reboot")  # 1012: service restart
        for c in self.connectors:
            c.finishing = False  # after a reboot a plugged car is simply Preparing
        self._update()
        self._refresh()

    def _portal_data_transfer(self, message_id: str | None, data: str | None) -> tuple[str, str]:
        """The portal's vendor messages (docs/OCPP.md): (status, data of the answer)."""
        self.received.append(f"DataTransfer:{message_id}")
        try:
            value = json.loads(data or "")
        except ValueError:
            return "Rejected", "data is not JSON"
        if message_id == "DisplayImage":
            from stations.display_image import payload_check

            problem = payload_check(value)
            if problem is not None:
                return "Rejected", problem
            self.display_frames = [base64.b64decode(f) for f in value["frames"]]
            return ACCEPTED, ""
        if message_id == "ShowMeter":
            connector_id = value.get("connectorId") if isinstance(value, dict) else None
            if not isinstance(connector_id, int) or not 1 <= connector_id <= len(self.connectors):
                return "Rejected", "unknown connectorId"
            self._update()
            register = self.connectors[connector_id - 1].energy_register_wh
            self.display_meter = (connector_id, register)
            return ACCEPTED, json.dumps({"connectorId": connector_id, "energyWh": register})
        return "UnknownMessageId", ""

    def _change_config(self, key: str, value: str) -> str:
        self.received.append("ChangeConfiguration")
        entry = self.config.get(key)
        if entry is None:
            return "NotSupported"
        if entry.readonly or not check_value(entry, value):
            return "Rejected"
        entry.value = value
        if key == "HeartbeatInterval":
            self.heartbeat_override = None
        return "RebootRequired" if entry.reboot else ACCEPTED

    def _get_config(self, keys: list[str] | None) -> tuple[list[dict[str, Any]], list[str]]:
        self.received.append("GetConfiguration")
        names = keys or list(self.config)
        known, unknown = [], []
        for name in names:
            entry = self.config.get(name)
            if entry is None:
                unknown.append(name)
                continue
            item: dict[str, Any] = {"key": name, "readonly": entry.readonly}
            if not entry.hidden:
                item["value"] = entry.value
            known.append(item)
        return known, unknown

    _TRIGGERS = (
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "MeterValues",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
    )

    def _trigger_check(self, message: str, connector_id: int | None) -> str:
        self.received.append("TriggerMessage")
        if message not in self._TRIGGERS:
            return "NotImplemented"
        if connector_id is not None and not 0 <= connector_id <= len(self.connectors):
            return "Rejected"
        return ACCEPTED

    def _trigger_execute(self, message: str, connector_id: int | None) -> None:
        if message not in self._TRIGGERS or self._trigger_check(message, connector_id) != ACCEPTED:
            return
        targets = self.connectors if not connector_id else [self.connectors[connector_id - 1]]
        if message == "BootNotification":
            if self.registration == ACCEPTED:
                fut = self._enqueue(
                    lambda: call.BootNotification(
                        charge_point_vendor=self.vendor,
                        charge_point_model=self.model,
                        charge_point_serial_number=self.serial,
                        firmware_version=self.firmware,
                    ),
                    transactional=False,
                )
                fut.add_done_callback(_ignore)
            else:
                self._boot_now.set()
        elif message == "Heartbeat":
            self.heartbeat().add_done_callback(_ignore)
        elif message == "StatusNotification":
            for c in targets:
                self._send_status(c)
        elif message == "MeterValues":
            self._update()
            for c in targets:
                self._enqueue_meter(c, "Trigger")
        elif message == "DiagnosticsStatusNotification":
            self._enqueue(
                lambda: call.DiagnosticsStatusNotification(status="Idle"), transactional=False
            ).add_done_callback(_ignore)
        else:
            self._enqueue(
                lambda: call.FirmwareStatusNotification(status="Idle"), transactional=False
            ).add_done_callback(_ignore)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel and wait; cancel again if needed (Python 3.11's `asyncio.wait_for`, used by the
    library, can swallow a cancellation that races with a response)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it


def _fail(item: _Outgoing, exc: BaseException) -> None:
    if item.on_fail is not None:
        item.on_fail(exc)
    if not item.future.done():
        item.future.set_exception(exc)
        item.future.add_done_callback(_ignore)


def _ignore(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name)
