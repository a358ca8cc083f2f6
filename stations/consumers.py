"""The OCPP endpoint ``/ocpp/<charge_point_id>``: one consumer per station connection.

Handshake (before any upgrade): a process busy bringing other stations up → HTTP 503 with
Retry-After (stations/admission.py, before this consumer is built), too many failed
passwords for the identity or from the address → HTTP 429 (stations/credentials.py), unknown
identity → HTTP 404 (and recorded), missing or wrong Basic credentials → HTTP 401, through the
ASGI websocket denial-response extension when the server offers it (Uvicorn does), else a
close before accept (403). Subprotocol ``ocpp1.6`` is selected when offered; otherwise the
handshake completes without one and the socket is closed (OCPP-J 3.2).

Received frames go into a queue read by the ``ocpp`` library's ``ChargePoint.start()`` in a task
of its own, so the consumer's event dispatch never waits for a handler: channel-layer
messages (commands, replacement) are handled while a station's CALL is being processed, and
answers to our own CALLs are read while other calls are outstanding.

One live connection per identity across processes: every connection joins the station's
group and announces itself; an older connection hearing a newer one closes itself (4000).

A station in mode ``ocpp_third_party`` with a URL takes a separate branch after the same
handshake checks (``_relay_connect``): its frames are relayed to the other backend by
``stations.relay.Relay`` and the portal's own central system is not started.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
import random
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError, OCPPError
from ocpp.v16 import call as v16_call

from stations import commands, conf, credentials, disconnects, services
from stations.admission import deny_handshake
from stations.centralsystem import CentralSystem
from stations.dbcalls import COMMANDS, HANDSHAKES, db, in_thread_context
from stations.groups import membership
from stations.live import push_rendered
from stations.models import CommandStatus
from stations.relay import CLOSE_TRY_LATER, MANAGED_ELSEWHERE, Relay, RelayUnavailable

log = logging.getLogger(__name__)

CLOSE_REPLACED = 4000
CLOSE_DELETED = 4001
CLOSE_RECONNECT = 1012  # "service restart": reconnect
CLOSE_TOO_BIG = 1009
CLOSE_UNSUPPORTED = 1003
CLOSE_PROTOCOL = 1002
# A command that may wait is started within at most this (whatever the sender asked).
MAX_SPREAD_SECONDS = 30.0
# How long a command's result is retried while the database is away (see _record_outcome).
RECORD_RETRY_SECONDS = 60.0


class _Connection:
    """What the ``ocpp`` library needs from a connection: ``recv()`` and ``send()``."""

    def __init__(self, consumer: OcppConsumer) -> None:
        self.consumer = consumer
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def recv(self) -> str:
        return await self.queue.get()

    async def send(self, message: str) -> None:
        await self.consumer.send(text_data=message)


def _basic_credentials(headers: list[tuple[bytes, bytes]]) -> tuple[str, str] | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, encoded = value.decode("latin-1").partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            username, sep, password = decoded.partition(":")
            return (username, password) if sep else None
    return None


def _off_thread(fn):
    """Run a cache call in a worker thread, not in Channels' single database thread (in the
    thread's own context: one cache client per thread, not one per station, dbcalls)."""
    return sync_to_async(in_thread_context(fn), thread_sensitive=False)


class OcppConsumer(AsyncWebsocketConsumer):
    ref: services.StationRef | None = None
    cp: CentralSystem | None = None
    relay: Relay | None = None  # third-party mode: frames go to the other backend

    # --- handshake ----------------------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        # A busy process has already refused the handshake (stations/admission.py,
        # AdmissionMiddleware) before this consumer was built.
        await self._connect()

    async def _connect(self) -> None:
        self.ref = None
        self.tasks: set[asyncio.Task] = set()
        self.running_commands: set[int] = set()
        self.closing = False
        self.booted = asyncio.Event()
        self.first_message = asyncio.Event()
        self.last_seen_write = 0.0
        client = self.scope.get("client") or ("", 0)
        self.remote_addr = str(client[0] or "")
        identity = self.scope["url_route"]["kwargs"]["charge_point_id"].rstrip("/")
        # Too many wrong passwords for this identity or from this address: refused before
        # the database or the password is looked at (stations/credentials.py). The cache
        # calls run off the database thread so a reconnect storm does not queue behind it.
        attempts = await _off_thread(credentials.attempt_state)(identity, self.remote_addr)
        if attempts.blocked:
            await self.deny(
                429,
                "Too many failed authentication attempts; try again later.",
                [(b"retry-after", str(attempts.retry_after).encode())],
            )
            return
        found = None
        if identity and "/" not in identity:
            found = await db(services.station_for_handshake, HANDSHAKES)(identity)
        if found is None:
            await db(services.unknown_identity_record, HANDSHAKES)(
                identity or "(empty)", self.remote_addr
            )
            await self.deny(404, "Unknown charge point identity.")
            return
        ref, password_hash = found
        basic = _basic_credentials(self.scope.get("headers", []))
        if (
            basic is None
            or basic[0] != ref.charge_point_id
            or not services.password_matches(basic[1], password_hash)
        ):
            await _off_thread(credentials.attempt_failed)(
                identity, self.remote_addr, conf.auth_attempt_limits()
            )
            await self.deny(
                401, "Wrong or missing credentials.", [(b"www-authenticate", b'Basic realm="OCPP"')]
            )
            return
        if attempts.identity_failures:
            await _off_thread(credentials.attempt_succeeded)(identity, attempts)
        if conf.SUBPROTOCOL not in self.scope.get("subprotocols", []):
            await self.accept()
            await self.close(code=CLOSE_PROTOCOL, reason="Subprotocol ocpp1.6 required.")
            return
        if ref.relay_url:
            await self._relay_connect(ref)
            return
        self.ref = ref
        self.group = commands.station_group(ref.id)
        await membership.join(self.channel_layer, self.group, self.channel_name)
        # Newest wins: older connections of this identity (any process) close themselves;
        # they only mark the station offline if they still hold it (channel_name).
        fragments = await db(services.connection_open, HANDSHAKES)(
            ref.id,
            self.channel_name,
            self.remote_addr,
            ref.organization_id,
            calls_in_flight=ref.calls_in_flight,
        )
        # connection_open wrote last_seen and online: the first messages need not again.
        self.last_seen_write = time.monotonic()
        await self.channel_layer.group_send(
            self.group, {"type": "ocpp.replace", "channel": self.channel_name}
        )
        await self.accept(subprotocol=conf.SUBPROTOCOL)
        await self._push("station.online", {"online": True}, fragments)
        self.connection = _Connection(self)
        self.cp = CentralSystem(
            ref, self.connection, self.on_cp_event, response_timeout=conf.call_timeout()
        )
        self._spawn(self._serve())
        self._spawn(self._after_connect())

    async def deny(
        self, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await deny_handshake(self.scope, self.base_send, status, text, headers)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch hops to the database thread before every event to close stale
        connections; for a station that is a thread hop per frame. Our database calls
        (stations.dbcalls) already close stale connections in the thread that uses them."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- frames -------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if (self.cp is None and self.relay is None) or self.closing:
            return
        if text_data is None:
            await self.close(code=CLOSE_UNSUPPORTED, reason="OCPP-J uses text frames only.")
            return
        if len(text_data.encode()) > conf.max_frame_bytes():
            await self.close(
                code=CLOSE_TOO_BIG, reason=f"Frame larger than {conf.max_frame_bytes()} bytes."
            )
            return
        if self.relay is not None:
            self.relay.from_station(text_data)
            return
        self.connection.queue.put_nowait(text_data)

    async def _serve(self) -> None:
        try:
            await self.cp.start()
        except asyncio.CancelledError:
            raise
        except OSError as exc:  # the socket is gone (uvicorn's ClientDisconnected): no bug
            log.info("%s: connection lost while answering (%r)", self.ref.charge_point_id, exc)
        except Exception:
            log.exception("%s: OCPP loop failed", self.ref.charge_point_id)
            await self.close(code=1011)

    # --- events from the central system (runs inside the OCPP loop: no waiting on calls) --

    async def on_cp_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "message":
            self.first_message.set()
            now = time.monotonic()
            if now - self.last_seen_write >= conf.last_seen_write_every():
                try:
                    came_back = await db(services.station_seen)(self.ref.id, timezone.now())
                except Exception:
                    # The database is away (restart, failover): liveness is written again
                    # with the next message. Raising here would end the OCPP loop and drop
                    # the connection for a write the message does not need; the message's
                    # own handler answers InternalError if it needs the database.
                    log.warning("%s: last_seen not written", self.ref.charge_point_id)
                else:
                    self.last_seen_write = now
                    if came_back:
                        self._spawn(self._resume())
        elif kind == "boot":
            self.booted.set()
            self.ref = dataclasses.replace(self.ref, registration_status=data["status"])
            self.cp.ref = self.ref
            await self._push("station.boot", {"status": data["status"]}, data["fragments"])
            if data["status"] == "Accepted":
                # After our answer is sent: wanted configuration, then queued commands,
                # load management's profiles made by this boot among them.
                self._spawn(self._deliver_pending(after_boot=True))
        elif kind == "push":
            await self._push(data["event"], data.get("data", {}), data.get("fragments", {}))

    async def _push(self, event: str, data: dict, fragments: dict[str, str]) -> None:
        try:
            await push_rendered(
                self.ref.organization_id, event, {"station": self.ref.id, **data}, fragments
            )
        except Exception:  # live updates are best effort
            log.exception("live push failed")

    # --- after connect: boot or resume ----------------------------------------------------

    async def _after_connect(self) -> None:
        """A station that boots gets its state from the boot; one that reconnects without
        booting (allowed by OCPP) is resumed: state refreshed, pending work delivered.
        Load management hears of the connection from an accepted boot (BOOT), else from
        here (ONLINE, ``services.station_online_announce``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_message.wait(), conf.boot_wait())
        await asyncio.sleep(0)  # let the first message's handler mark a boot
        booting = self.booted.is_set() or not self.cp.boot_answered.is_set()
        await self.cp.boot_answered.wait()
        if self.ref is None:  # the socket closed meanwhile
            return
        if not (self.booted.is_set() and self.ref.registration_status == "Accepted"):
            await db(services.station_online_announce)(self.ref.id)
        if not booting and self.ref is not None and self.ref.registration_status == "Accepted":
            await self._resume()

    async def _resume(self) -> None:
        self._spawn(
            self._call_and_record(
                None, v16_call.TriggerMessage(requested_message="StatusNotification")
            )
        )
        await self._deliver_pending(after_boot=False)

    async def _deliver_pending(self, after_boot: bool) -> None:
        """After a boot: all wanted configuration again, and the boot's own load-management
        profiles with the pending commands; on a resume only what is not applied or sent."""
        ref = self.ref
        if ref is None:
            return
        await db(commands.configuration_resend, COMMANDS)(ref.id, after_boot)
        pending = await db(commands.commands_pending, COMMANDS)(
            ref.id, ref.registration_status, ref.last_command_id if after_boot else None
        )
        for command_id in pending:
            if self.ref is None or self.closing:  # the socket closed meanwhile
                return
            await self._run_command(command_id)

    # --- commands -----------------------------------------------------------------------

    async def ocpp_command(self, message: dict[str, Any]) -> None:
        """From any process: a command row to run. Never awaits the station here."""
        if self.ref is None or self.closing:
            return
        command_id = message["command_id"]
        if self.relay is not None:
            self._spawn(self._relay_refuse(command_id))
            return
        self._spawn(self._run_command(command_id, float(message.get("spread") or 0)))

    async def _run_command(self, command_id: int, spread: float = 0.0) -> None:
        if spread > 0:  # it may wait (commands_send_bulk): start at a random moment
            await asyncio.sleep(random.uniform(0, min(spread, MAX_SPREAD_SECONDS)))
        await self.cp.boot_answered.wait()  # a boot in progress: after its answer
        if self.ref is None or self.closing:  # the socket closed meanwhile
            return
        if self.ref.registration_status != "Accepted":
            allowed = await db(commands.commands_pending, COMMANDS)(
                self.ref.id, self.ref.registration_status
            )
            if command_id not in allowed:
                return  # stays pending; delivered after an accepted boot
        claimed = await db(commands.command_claim, COMMANDS)(command_id, self.ref.id)
        if claimed is None:
            return
        action, payload = claimed
        self.running_commands.add(command_id)
        try:
            await self._call_and_record(command_id, commands.build_call(action, payload))
        finally:
            self.running_commands.discard(command_id)

    async def _call_and_record(self, command_id: int | None, payload: Any) -> None:
        """Run one outgoing call; record the outcome on its command row (if any)."""
        error = ""
        response: dict | None = None
        try:
            result = await self.cp.call(payload, suppress=False)
            status, response = commands.result_status(result)
        except TimeoutError:
            status, error = CommandStatus.TIMED_OUT, "No answer from the station."
        except (OcppNotImplemented, NotSupportedError) as exc:
            status, error = CommandStatus.NOT_SUPPORTED, f"{exc.code}: {exc.description}"
        except OCPPError as exc:
            status, error = CommandStatus.ERROR, f"{exc.code}: {exc.description}"
            response = {"errorCode": exc.code, "details": exc.details}
        except asyncio.CancelledError:
            if command_id is not None:
                await db(commands.command_finish, COMMANDS)(
                    command_id,
                    CommandStatus.ERROR,
                    None,
                    "The connection closed before the station answered.",
                )
            raise
        except OSError:  # the socket is gone (uvicorn's ClientDisconnected) as we sent
            status, error = CommandStatus.ERROR, "The connection closed before the call went out."
        except Exception as exc:
            log.exception("%s: call failed", self.ref.charge_point_id)
            status, error = CommandStatus.ERROR, str(exc)
        if command_id is None:
            if status != CommandStatus.ACCEPTED:
                log.info(
                    "%s: %s → %s %s",
                    self.ref.charge_point_id,
                    type(payload).__name__,
                    status,
                    error,
                )
            return
        fragments = await self._record_outcome(command_id, status, response, error)
        if fragments:
            await self._push(
                "station.command", {"command": command_id, "status": status}, fragments
            )

    async def _record_outcome(
        self, command_id: int, status: str, response: dict | None, error: str
    ) -> dict[str, str]:
        """``command_finish``, retried while the database is away (a restart): the station
        has answered and will not answer again, so a failed write would leave the command
        claimed without a result for good. ``command_finish`` records only once."""
        delay, deadline = 0.25, time.monotonic() + RECORD_RETRY_SECONDS
        while True:
            try:
                return await db(commands.command_finish, COMMANDS)(
                    command_id, status, response, error
                )
            except Exception:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "%s: result of command %s not recorded yet, retrying",
                    self.ref.charge_point_id if self.ref else "?",
                    command_id,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)

    # --- replacement and disconnect -------------------------------------------------------

    async def ocpp_replace(self, message: dict[str, Any]) -> None:
        if message["channel"] == self.channel_name or self.ref is None or self.closing:
            return
        log.info("%s: replaced by a newer connection", self.ref.charge_point_id)
        self.closing = True
        await self.close(code=CLOSE_REPLACED, reason="Replaced by a newer connection.")
        await self._teardown()

    async def ocpp_deleted(self, message: dict[str, Any]) -> None:
        """The owner deleted the station: close its socket (it reconnects to a 404)."""
        if self.ref is None or self.closing:
            return
        log.info("%s: station deleted, closing", self.ref.charge_point_id)
        self.closing = True
        await self.close(code=CLOSE_DELETED, reason="Station deleted.")
        await self._teardown()

    async def ocpp_reconnect(self, message: dict[str, Any]) -> None:
        """The station's authentication mode changed: close so that it reconnects and is
        served (or relayed) the new way."""
        if self.ref is None or self.closing:
            return
        log.info("%s: mode changed, asking the station to reconnect", self.ref.charge_point_id)
        self.closing = True
        await self.close(code=CLOSE_RECONNECT, reason="Authentication mode changed: reconnect.")
        await self._teardown()

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self._teardown()
        # Not Channels' own: it leaves ``self.groups`` (none: the station's group is left in
        # _teardown) and then closes stale database connections in Channels' one
        # synchronous thread, a thread hop per disconnect in a queue of its own. Our database
        # calls check their own threads' connections (stations.dbcalls). When a process
        # stopped, its thousands of disconnects queued there one after the other, one of
        # the queues that kept them from finishing within the shutdown's grace.
        raise StopConsumer()

    async def _teardown(self) -> None:
        if self.ref is None or getattr(self, "_tearing_down", False):
            return
        self._tearing_down = True
        ref = self.ref
        self.closing = True
        # The station's tasks stop before anything else is awaited: they read self.ref (a
        # handler finishing its database call while the channel layer was slow to answer
        # here found it None), and the cancelled ones may still record their outcome.
        tasks = [t for t in self.tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.ref = None
        if self.relay is not None:
            await self.relay.close()
        with contextlib.suppress(Exception):
            await membership.leave(self.channel_layer, self.group, self.channel_name)
        fragments = await disconnects.batcher().add(
            (ref.id, self.channel_name, ref.organization_id)
        )
        if fragments is not None:
            with contextlib.suppress(Exception):
                await push_rendered(
                    ref.organization_id,
                    "station.offline",
                    {"station": ref.id, "online": False},
                    fragments,
                )

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- third-party relay (stations/relay.py): the station is served by another backend --

    async def _relay_connect(self, ref: services.StationRef) -> None:
        """Connect to the other backend first; only then does the station count as online.
        No answer: the station's connection is accepted and closed with 1013 (try again
        later) and the reason is recorded on the station for its owner."""
        relay = Relay(ref, self._relay_to_station, self._relay_backend_closed, self._relay_push)
        try:
            await relay.open()
        except RelayUnavailable as exc:
            log.warning("%s: %s", ref.charge_point_id, exc.message)
            await db(services.relay_error_record)(ref.id, exc.message, timezone.now())
            await self.accept(subprotocol=conf.SUBPROTOCOL)
            await self.close(code=CLOSE_TRY_LATER, reason=exc.close_reason)
            return
        try:
            self.group = commands.station_group(ref.id)
            await membership.join(self.channel_layer, self.group, self.channel_name)
            fragments = await db(services.connection_open, HANDSHAKES)(
                ref.id,
                self.channel_name,
                self.remote_addr,
                ref.organization_id,
                calls_in_flight=ref.calls_in_flight,
                announce=True,
            )
            await db(services.relay_error_clear)(ref.id)
            await self.channel_layer.group_send(
                self.group, {"type": "ocpp.replace", "channel": self.channel_name}
            )
        except BaseException:
            await relay.close()  # no backend connection left behind
            raise
        self.ref, self.relay = ref, relay
        await self.accept(subprotocol=conf.SUBPROTOCOL)
        await self._push("station.online", {"online": True}, fragments)
        relay.start()
        # Commands queued before the station came through the relay: refused, not left pending.
        for command_id in await db(commands.commands_pending, COMMANDS)(ref.id, "Accepted"):
            self._spawn(self._relay_refuse(command_id))

    async def _relay_to_station(self, text: str) -> None:
        if not self.closing:
            await self.send(text_data=text)

    async def _relay_push(self, event: str, data: dict, fragments: dict[str, str]) -> None:
        if self.ref is not None:
            await self._push(event, data, fragments)

    async def _relay_backend_closed(self, reason: str) -> None:
        """The other backend closed: so does the station's connection (it reconnects, and
        the portal reconnects to the backend)."""
        if self.ref is None or self.closing:
            return
        self.closing = True
        await self.close(code=CLOSE_TRY_LATER, reason=reason)
        await self._teardown()

    async def _relay_refuse(self, command_id: int) -> None:
        fragments = await db(commands.command_refuse, COMMANDS)(
            command_id, self.ref.id, MANAGED_ELSEWHERE
        )
        if fragments:
            await self._push(
                "station.command", {"command": command_id, "status": CommandStatus.ERROR}, fragments
            )
