"""Third-party relay: a station in mode ``ocpp_third_party`` keeps its connection to the portal
and the portal connects to the other backend *as that station* (docs/OCPP.md, "Third-party
relay").

Frames are forwarded verbatim and in order, both ways; the portal's own central system answers
nothing. What passes is observed read-only, off the forwarding path (an observer task works
through the frames in order, so a slow database never delays the relay and a frame that cannot
be parsed or stored is skipped, never breaking it):

- station CALLs: BootNotification, StatusNotification, MeterValues, and every frame for
  *last seen*;
- the other backend's CALLRESULTs to the station's BootNotification (registration status,
  heartbeat interval), StartTransaction (a session with the backend's ``transactionId`` in
  ``external_transaction_id``, its idTagInfo status, no driver, never priced) and
  StopTransaction (the session completed: energy = meterStop − meterStart).

URL rule: the station's identity, percent-encoded, is appended as the last path segment of the
configured URL (``wss://other.example/ocpp`` → ``wss://other.example/ocpp/<identity>``),
unless that last segment already is the identity. User info in the URL
(``wss://user:password@host/...``) is sent as HTTP Basic auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from django.utils import timezone
from ocpp.exceptions import OCPPError
from ocpp.messages import MessageType, get_validator

from stations import conf, metering, services
from stations.dbcalls import db

log = logging.getLogger(__name__)

CLOSE_TRY_LATER = 1013
MANAGED_ELSEWHERE = (
    "The station is managed by another backend (third-party relay): the portal sends it no "
    "commands."
)
BACKEND_CLOSED = "The third-party backend closed the connection."
_MAX_PENDING = 64  # station CALLs waiting for the backend's answer (observed ones only)
_MAX_OBSERVATIONS = 1000  # frames waiting to be observed; beyond: skipped (never blocks)
_ANSWER_OBSERVED = ("BootNotification", "StartTransaction", "StopTransaction")
_INT32 = 2**31 - 1


# --- URLs ---------------------------------------------------------------------------------


def relay_url(base: str, identity: str) -> str:
    """The URL the portal connects to for this station (the rule in the module docstring)."""
    parts = urlsplit(base.strip())
    path = parts.path.rstrip("/")
    if unquote(path.rsplit("/", 1)[-1]) != identity:
        path = f"{path}/{quote(identity, safe='')}"
    return urlunsplit(parts._replace(path=path))


def shown_url(url: str) -> str:
    """The URL without user info (no password in messages and logs)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def shown_host(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2] or url


class RelayUnavailable(Exception):
    """The other backend did not answer (refused, timed out, rejected the handshake)."""

    def __init__(self, host: str, cause: str) -> None:
        super().__init__(f"The third-party backend at {host} does not answer: {cause}.")
        self.host = host
        self.cause = cause

    @property
    def message(self) -> str:
        return str(self)

    @property
    def close_reason(self) -> str:
        """For the station's close frame (at most 123 bytes)."""
        reason = f"The third-party backend at {self.host} does not answer."
        if len(reason.encode()) > 123:
            reason = "The third-party backend does not answer."
        return reason


def describe(exc: BaseException, timeout: float) -> str:
    """A short, owner-readable cause of a failed connection."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, InvalidStatus):
        return f"it refused the connection with HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, InvalidURI):
        return "not a valid websocket URL"
    if isinstance(exc, InvalidHandshake):
        return f"bad websocket handshake ({exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def backend_check(base: str, identity: str, timeout: float | None = None) -> str | None:
    """Synchronous reachability check (saving the third-party mode): open a websocket with
    subprotocol ocpp1.6 as the station would, close it at once. None: it answers; else why
    not."""
    from websockets.sync.client import connect

    timeout = conf.relay_check_timeout() if timeout is None else timeout
    try:
        with connect(
            relay_url(base, identity),
            subprotocols=[conf.SUBPROTOCOL],
            open_timeout=timeout,
            close_timeout=1,
        ) as ws:
            if ws.subprotocol != conf.SUBPROTOCOL:
                return "it does not speak OCPP 1.6J (no ocpp1.6 subprotocol)"
    except Exception as exc:  # every failure is an answer to the owner
        return describe(exc, timeout)
    return None


# --- observation helpers ------------------------------------------------------------------


def _valid(kind: int, action: str, payload: Any) -> bool:
    """Schema-valid OCPP 1.6 and storable (the checks of the portal's own central system)."""
    from stations.centralsystem import _unstorable

    try:
        validator = get_validator(kind, action, "1.6")
    except (OSError, ValueError):
        return False
    return validator.is_valid(payload) and _unstorable(payload) is None


def _reading_ok(value: Any) -> bool:
    return isinstance(value, int) and 0 <= value <= 10**15


# --- the relay ----------------------------------------------------------------------------


class Relay:
    """One station's relay. ``open()`` connects (or raises RelayUnavailable); ``start()``
    runs the forwarding and observing tasks; ``from_station()`` takes the station's frames;
    ``close()`` ends it (idempotent). When the backend closes first, ``on_backend_closed``
    is awaited with a reason (the consumer closes the station's connection)."""

    def __init__(
        self,
        ref: services.StationRef,
        send_to_station: Callable[[str], Awaitable[None]],
        on_backend_closed: Callable[[str], Awaitable[None]],
        push: Callable[[str, dict, dict[str, str]], Awaitable[None]],
    ) -> None:
        self.ref = ref
        self.url = relay_url(ref.relay_url, ref.charge_point_id)
        self.host = shown_host(self.url)
        self._send_to_station = send_to_station
        self._on_backend_closed = on_backend_closed
        self._push = push
        self.backend: Any = None
        self._outgoing: asyncio.Queue[str | None] = asyncio.Queue()
        self._observations: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self._pending: OrderedDict[str, tuple[str, dict]] = OrderedDict()
        self._tasks: list[asyncio.Task] = []
        self._observer: asyncio.Task | None = None
        self._closed = False
        self._last_seen_write = 0.0

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        timeout = conf.relay_open_timeout()
        try:
            self.backend = await connect(
                self.url,
                subprotocols=[conf.SUBPROTOCOL],
                open_timeout=timeout,
                close_timeout=2,
            )
        except Exception as exc:  # every failure means "does not answer"
            raise RelayUnavailable(self.host, describe(exc, timeout)) from exc
        if self.backend.subprotocol != conf.SUBPROTOCOL:
            with contextlib.suppress(Exception):
                await self.backend.close()
            raise RelayUnavailable(
                self.host, "it does not speak OCPP 1.6J (no ocpp1.6 subprotocol)"
            )

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._to_backend()),
            loop.create_task(self._from_backend()),
        ]
        self._observer = loop.create_task(self._observe_loop())

    def from_station(self, text: str) -> None:
        """Queue a station frame: observed, and forwarded in order (never blocks)."""
        if self._closed:
            return
        self._observe("station", text)
        self._outgoing.put_nowait(text)

    async def close(self) -> None:
        """Stop forwarding, close the backend connection, let the observer record what
        already passed (a stop answered just before the close), then stop it."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self.backend is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.backend.close(), 3)
        observer = self._observer
        if observer is not None and observer is not current:
            self._observations.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(observer), 5)
            except TimeoutError:
                observer.cancel()
            except asyncio.CancelledError:
                observer.cancel()
                raise

    # --- forwarding -------------------------------------------------------------------

    async def _to_backend(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while (text := await self._outgoing.get()) is not None:
            try:
                await self.backend.send(text)
            except ConnectionClosed:
                return  # _from_backend sees the close and reports it

    async def _from_backend(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.backend:
                if not isinstance(message, str):
                    continue  # OCPP-J is text frames only
                self._observe("backend", message)
                await self._send_to_station(message)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("%s: relay from the backend failed", self.ref.charge_point_id)
        if not self._closed:
            log.info("%s: %s (%s)", self.ref.charge_point_id, BACKEND_CLOSED, self.host)
            await self._on_backend_closed(BACKEND_CLOSED)

    # --- observing (read-only, in order, never raising) ---------------------------------

    def _observe(self, side: str, text: str) -> None:
        if self._observations.qsize() >= _MAX_OBSERVATIONS:
            log.warning("%s: relay observer behind, frame skipped", self.ref.charge_point_id)
            return
        self._observations.put_nowait((side, text))

    async def _observe_loop(self) -> None:
        while (item := await self._observations.get()) is not None:
            side, text = item
            try:
                message = json.loads(text)
                if side == "station":
                    await self._station_frame(message)
                else:
                    await self._backend_frame(message)
            except (ValueError, RecursionError, OCPPError, metering.BadSampledValue):
                log.debug("%s: relayed frame not recorded", self.ref.charge_point_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: recording a relayed frame failed", self.ref.charge_point_id)

    async def _station_frame(self, msg: Any) -> None:
        if not (
            isinstance(msg, list)
            and len(msg) == 4
            and msg[0] == MessageType.Call
            and isinstance(msg[1], str)
            and isinstance(msg[2], str)
            and isinstance(msg[3], dict)
        ):
            return
        unique_id, action, payload = msg[1], msg[2], msg[3]
        await self._seen()
        if not _valid(MessageType.Call, action, payload):
            return  # the other backend answers it with a CALLERROR
        if action in _ANSWER_OBSERVED:
            self._pending[unique_id] = (action, payload)
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)
        elif action == "StatusNotification":
            await self._status(payload)
        elif action == "MeterValues":
            await self._meter_values(payload)

    async def _backend_frame(self, msg: Any) -> None:
        if not (
            isinstance(msg, list)
            and len(msg) >= 3
            and msg[0] in (MessageType.CallResult, MessageType.CallError)
            and isinstance(msg[1], str)
        ):
            return
        call = self._pending.pop(msg[1], None)
        if call is None or msg[0] != MessageType.CallResult or len(msg) != 3:
            return
        action, request = call
        result = msg[2]
        if not _valid(MessageType.CallResult, action, result):
            log.info("%s: backend's %s answer not recorded", self.ref.charge_point_id, action)
            return
        if action == "BootNotification":
            await self._boot(request, result)
        elif action == "StartTransaction":
            await self._start(request, result)
        elif action == "StopTransaction":
            await self._stop(request, result)

    async def _seen(self) -> None:
        now = time.monotonic()
        if now - self._last_seen_write >= conf.last_seen_write_every():
            self._last_seen_write = now
            await db(services.station_seen)(self.ref.id, timezone.now())

    async def _status(self, payload: dict) -> None:
        from stations.centralsystem import parse_time

        connector_id = payload["connectorId"]
        if not 0 <= connector_id <= 99:
            return
        ts = parse_time(payload["timestamp"]) if payload.get("timestamp") else None
        fragments = await db(services.status_notification)(
            self.ref.id,
            connector_id,
            payload["status"],
            payload["errorCode"],
            payload.get("info") or "",
            payload.get("vendorErrorCode") or "",
            ts,
            timezone.now(),
            self.ref.organization_id,
        )
        await self._push(
            "station.status", {"connector": connector_id, "status": payload["status"]}, fragments
        )

    async def _meter_values(self, payload: dict) -> None:
        from stations.centralsystem import _check_samples, parse_time

        connector_id = payload["connectorId"]
        if not 0 <= connector_id <= 99:
            return
        samples = metering.parse_meter_values(payload["meterValue"], parse_time)
        _check_samples(samples)  # one bad sample would fail every station's batch
        session_id = await db(services.relay_session_id)(self.ref.id, payload.get("transactionId"))
        await metering.batcher().add(self.ref.id, connector_id, session_id, samples)

    async def _boot(self, request: dict, result: dict) -> None:
        info = {
            "vendor": request["chargePointVendor"],
            "model": request["chargePointModel"],
            "serial_number": request.get("chargePointSerialNumber")
            or request.get("chargeBoxSerialNumber")
            or "",
            "firmware_version": request.get("firmwareVersion") or "",
            "iccid": request.get("iccid") or "",
            "meter_type": request.get("meterType") or "",
        }
        fragments = await db(services.relay_boot)(
            self.ref.id, info, result["status"], result.get("interval"), timezone.now()
        )
        await self._push("station.boot", {"status": result["status"]}, fragments)

    async def _start(self, request: dict, result: dict) -> None:
        from stations.centralsystem import parse_time

        connector_id, meter_start = request["connectorId"], request["meterStart"]
        if not 1 <= connector_id <= 99 or not _reading_ok(meter_start):
            return
        reservation_id = request.get("reservationId")
        if reservation_id is not None and not -_INT32 <= reservation_id <= _INT32:
            reservation_id = None
        session_id, fragments = await db(services.relay_start_transaction)(
            self.ref,
            connector_id,
            request["idTag"],
            meter_start,
            request["timestamp"],
            parse_time(request["timestamp"]),
            reservation_id,
            result["transactionId"],
            result["idTagInfo"]["status"],
            timezone.now(),
        )
        if fragments:
            await self._push("session.started", {"transaction": session_id}, fragments)

    async def _stop(self, request: dict, result: dict) -> None:
        from stations.centralsystem import parse_time

        if not _reading_ok(request["meterStop"]):
            return
        session_id, fragments = await db(services.relay_stop_transaction)(
            self.ref,
            request["transactionId"],
            request["meterStop"],
            parse_time(request["timestamp"]),
            request.get("reason") or "",
            request.get("idTag"),
            timezone.now(),
        )
        if fragments:
            await self._push("session.stopped", {"transaction": session_id}, fragments)
