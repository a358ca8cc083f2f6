"""The OCPP 1.6J central system for one connection, on the ``ocpp`` library's ChargePoint.

We parse and validate frames ourselves so that every bad input gets the OCPP **1.6** CALLERROR
(the library answers ``FormatViolation``, a 2.0.1 code, and ignores unparsable JSON):

=====================================================  =============================
input                                                  CALLERROR
=====================================================  =============================
not JSON                                               FormationViolation
JSON but not ``[type, id, ...]`` / wrong element count  ProtocolError
unknown MessageTypeId                                   ProtocolError
unknown action (not in OCPP 1.6)                        NotImplemented
1.6 action we do not handle (e.g. SignCertificate)      NotSupported
schema: wrong JSON type, string too long                TypeConstraintViolation
schema: required field missing                          OccurenceConstraintViolation
schema: value not allowed (enum, bounds), bad timestamp PropertyConstraintViolation
unstorable: NUL, lone surrogate, beyond 64 bits/10^15   PropertyConstraintViolation
schema: unknown field, anything else                    FormationViolation
handler failure (a bug, the database down)              InternalError
=====================================================  =============================

The unique id of the answer is the CALL's; when it cannot be read it is ``"-1"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from jsonschema.exceptions import ValidationError as SchemaValidationError
from jsonschema.exceptions import best_match
from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import (
    FormationViolationError,
    InternalError,
    NotSupportedError,
    OccurenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)
from ocpp.exceptions import (
    NotImplementedError as OcppNotImplemented,
)
from ocpp.messages import Call, CallError, CallResult, MessageType, get_validator
from ocpp.routing import on
from ocpp.v16 import ChargePoint as V16ChargePoint
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, RegistrationStatus

from stations import metering, services
from stations.conf import VENDOR_ID
from stations.dbcalls import db

log = logging.getLogger(__name__)
_UNIQUE_ID = re.compile(r'^\s*\[\s*\d+\s*,\s*"([^"\\]{1,36})"')

_V16_ACTIONS = {a.value for a in Action}
# What the database columns hold: integers of any size are valid JSON and pass the schemas
# ("type": "integer"), but beyond 64 bits they fail inside the query (InternalError), and in
# the shared meter batch they would fail every station's samples. Meter readings (Wh, W, A)
# beyond 10^15 are nonsense and would overflow the session's energy once rounded.
_INT64 = 2**63 - 1
_INT32 = 2**31 - 1
_MAX_READING = 1e15
_MAX_UNANSWERED_RESULTS = 8


def _unstorable(value: Any) -> str | None:
    """Why a schema-valid payload cannot be stored as it is, or None.

    NUL characters (PostgreSQL text refuses them), lone surrogates (``"\\ud800"`` is valid
    JSON but no UTF-8), integers beyond 64 bits and infinite numbers (``1e999``)."""
    if isinstance(value, dict):
        for item in value.values():
            if problem := _unstorable(item):
                return problem
    elif isinstance(value, list):
        for item in value:
            if problem := _unstorable(item):
                return problem
    elif isinstance(value, str):
        if "\x00" in value:
            return "Strings must not contain NUL characters."
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "Strings must be valid Unicode (no lone surrogates)."
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        if not -_INT64 <= value <= _INT64:
            return "Integers must fit in 64 bits."
    elif isinstance(value, float) and not math.isfinite(value):
        return "Numbers must be finite."
    return None


def _check_reading(name: str, value: int) -> None:
    if not 0 <= value <= _MAX_READING:
        raise PropertyConstraintViolationError(
            details={"cause": f"{name} must be a meter reading in Wh, 0..10^15."}
        )


def _check_samples(samples: list[dict[str, Any]]) -> None:
    """Readings the batch writer can store: finite and within 10^15 (checked here because
    one bad sample would fail the whole batch, shared by every station of the process)."""
    for sample in samples:
        for key, value in sample.items():
            if isinstance(value, float) and not (
                math.isfinite(value) and abs(value) <= _MAX_READING
            ):
                raise PropertyConstraintViolationError(
                    details={"cause": f"sampledValue {key} {value!r} is out of range."}
                )


def parse_time(value: str) -> datetime:
    """OCPP dateTime → aware datetime (naive means UTC). Bad → PropertyConstraintViolation."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise PropertyConstraintViolationError(
            details={"cause": f"Not an ISO 8601 date-time: {value!r}"}
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def schema_error(exc: SchemaValidationError) -> OCPPError:
    cause = {"cause": exc.message, "path": "/".join(str(p) for p in exc.absolute_path)}
    if exc.validator in ("type", "maxLength"):
        return TypeConstraintViolationError(details=cause)
    if exc.validator == "required":
        return OccurenceConstraintViolationError(details=cause)
    if exc.validator in (
        "enum",
        "minimum",
        "maximum",
        "multipleOf",
        "pattern",
        "format",
        "minLength",
        "exclusiveMinimum",
        "exclusiveMaximum",
    ):
        return PropertyConstraintViolationError(details=cause)
    return FormationViolationError(details=cause)


class CentralSystem(V16ChargePoint):
    """Handlers answer only after their writes committed. Outgoing calls run as tasks started
    by the consumer, never awaited here: this coroutine is the one that reads the answers."""

    def __init__(
        self,
        ref: services.StationRef,
        connection: Any,
        on_event: Callable[[str, dict], Awaitable[None]],
        response_timeout: float,
    ):
        super().__init__(ref.charge_point_id, connection, response_timeout=response_timeout)
        self.ref = ref
        self.on_event = on_event  # consumer callback: pushes, follow-up work
        # Cleared while a BootNotification is handled, set once its answer is sent: calls of
        # ours wait for it, so that none reaches the station before the boot's answer (the
        # boot itself makes load management send the fail-safe profile).
        self.boot_answered = asyncio.Event()
        self.boot_answered.set()

    # --- framing and validation ---------------------------------------------------------

    async def call_error(self, unique_id: str, error: OCPPError) -> None:
        details = error.details if isinstance(error.details, dict) else {}
        await self._send(CallError(unique_id, error.code, error.description, details).to_json())

    async def route_message(self, raw_msg: str) -> None:
        try:
            msg = json.loads(raw_msg)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            match = _UNIQUE_ID.match(raw_msg)
            await self.call_error(
                match.group(1) if match else "-1",
                FormationViolationError(details={"cause": "The frame is not valid JSON."}),
            )
            return
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            unique_id = (
                msg[1]
                if isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str)
                else "-1"
            )
            await self.call_error(
                unique_id,
                ProtocolError(details={"cause": "Expected [MessageTypeId, UniqueId, ...]."}),
            )
            return
        type_id, unique_id = msg[0], msg[1]
        if type_id == MessageType.Call:
            await self._route_call(msg, unique_id)
        elif type_id == MessageType.CallResult and len(msg) == 3:
            self._queue_response(CallResult(unique_id, msg[2]))
        elif type_id == MessageType.CallError and len(msg) == 5:
            self._queue_response(CallError(unique_id, *msg[2:]))
        else:
            await self.call_error(
                unique_id,
                ProtocolError(
                    details={
                        "cause": f"MessageTypeId {type_id!r} with {len(msg)} elements is not "
                        "a CALL (2), CALLRESULT (3) or CALLERROR (5 elements)."
                    }
                ),
            )

    def _queue_response(self, response: CallResult | CallError) -> None:
        """Hand an answer to the waiting ``call()``. Answers nobody waits for are dropped
        (OCPP-J: ignore them): queued, they would pile up until our next call, which reads
        them one by one recursively in the library (a RecursionError after ~1,000)."""
        if not self._call_lock.locked() or (
            self._response_queue.qsize() >= _MAX_UNANSWERED_RESULTS
        ):
            log.debug(
                "%s: dropped an answer to no call (%.40r)", self.ref.charge_point_id, response
            )
            return
        self._response_queue.put_nowait(response)

    async def _route_call(self, msg: list, unique_id: str) -> None:
        if len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], dict):
            await self.call_error(
                unique_id,
                ProtocolError(details={"cause": "A CALL is [2, UniqueId, Action, {payload}]."}),
            )
            return
        action, payload = msg[2], msg[3]
        if action not in self.route_map:
            # OCPP-J 1.6 table 7: NotImplemented = "Requested Action is not known by receiver",
            # NotSupported = "recognized but not supported". (The ocpp library's classes carry
            # these two descriptions swapped, so we give our own.)
            if action in _V16_ACTIONS:
                error = NotSupportedError(
                    description="Requested Action is recognized but not supported by the receiver",
                    details={"cause": f"{action} is not handled by this central system."},
                )
            else:
                error = OcppNotImplemented(
                    description="Requested Action is not known by receiver",
                    details={"cause": f"{action} is not an OCPP 1.6 action."},
                )
            await self.call_error(unique_id, error)
            return
        try:
            validator = get_validator(MessageType.Call, action, "1.6")
            error = best_match(validator.iter_errors(payload))
        except OSError:
            error = None
        if error is not None:
            await self.call_error(unique_id, schema_error(error))
            return
        if problem := _unstorable(payload):
            await self.call_error(
                unique_id, PropertyConstraintViolationError(details={"cause": problem})
            )
            return
        booting = action == "BootNotification"
        if booting:
            self.boot_answered.clear()  # before the consumer hears of the message
        try:
            await self.on_event("message", {"action": action})
            if action == "MeterValues":
                await self._meter_values_fast(unique_id, payload)
                return
            # Schema already checked: the handlers are registered with skip_schema_validation.
            await self._handle_call(Call(unique_id, action, payload))
        finally:
            if booting:
                self.boot_answered.set()

    async def _handle_call(self, msg: Call) -> None:
        """The library's ``_handle_call`` without its traceback for every refusal: it logs
        ``exception`` for any error a handler raises, so a station sending connector 500
        would fill the log with tracebacks. OCPP errors are answers; anything else is ours
        (InternalError, logged with its traceback)."""
        handler = self.route_map[msg.action]["_on_action"]
        try:
            response = await handler(**camel_to_snake_case(msg.payload))
        except OCPPError as exc:
            await self.call_error(msg.unique_id, exc)
            return
        except Exception:
            log.exception("%s: %s failed", self.ref.charge_point_id, msg.action)
            await self.call_error(msg.unique_id, InternalError(details={"cause": msg.action}))
            return
        payload = snake_to_camel_case(remove_nones(serialize_as_dict(response)))
        await self._send(msg.create_call_result(payload).to_json())

    async def _meter_values_fast(self, unique_id: str, payload: dict) -> None:
        """MeterValues are most of a fleet's frames. The library would first convert every
        key of every sampled value to snake_case with regular expressions, which costs more
        than the rest of the handler; the payload is schema-checked already and
        ``metering.parse_meter_values`` reads the OCPP (camelCase) keys directly."""
        try:
            await self.meter_values(
                payload["connectorId"], payload["meterValue"], payload.get("transactionId")
            )
        except OCPPError as exc:
            await self.call_error(unique_id, exc)
            return
        except Exception:
            log.exception("%s: MeterValues failed", self.ref.charge_point_id)
            await self.call_error(unique_id, InternalError(details={"cause": "MeterValues"}))
            return
        await self._send(CallResult(unique_id, {}).to_json())

    # --- handlers -----------------------------------------------------------------------

    @on(Action.boot_notification, skip_schema_validation=True)
    async def on_boot(
        self, charge_point_vendor: str, charge_point_model: str, **kw: Any
    ) -> call_result.BootNotification:
        now = timezone.now()
        info = {
            "vendor": charge_point_vendor,
            "model": charge_point_model,
            "serial_number": kw.get("charge_point_serial_number")
            or kw.get("charge_box_serial_number")
            or "",
            "firmware_version": kw.get("firmware_version") or "",
            "iccid": kw.get("iccid") or "",
            "meter_type": kw.get("meter_type") or "",
        }
        status, interval, fragments = await db(services.boot)(self.ref.id, info, now)
        await self.on_event("boot", {"status": status, "fragments": fragments})
        return call_result.BootNotification(
            current_time=now.isoformat(), interval=interval, status=RegistrationStatus(status)
        )

    @on(Action.heartbeat, skip_schema_validation=True)
    async def on_heartbeat(self) -> call_result.Heartbeat:
        await self.on_event("heartbeat", {})
        return call_result.Heartbeat(current_time=timezone.now().isoformat())

    @on(Action.status_notification, skip_schema_validation=True)
    async def on_status(
        self,
        connector_id: int,
        error_code: str,
        status: str,
        timestamp: str | None = None,
        info: str | None = None,
        vendor_error_code: str | None = None,
        **_: Any,
    ) -> call_result.StatusNotification:
        if connector_id < 0 or connector_id > 99:
            raise PropertyConstraintViolationError(details={"cause": "connectorId must be 0..99."})
        ts = parse_time(timestamp) if timestamp else None
        fragments = await db(services.status_notification)(
            self.ref.id,
            connector_id,
            status,
            error_code,
            info or "",
            vendor_error_code or "",
            ts,
            timezone.now(),
            self.ref.organization_id,
        )
        await self.on_event(
            "push",
            {
                "event": "station.status",
                "fragments": fragments,
                "data": {"connector": connector_id, "status": status},
            },
        )
        return call_result.StatusNotification()

    @on(Action.authorize, skip_schema_validation=True)
    async def on_authorize(self, id_tag: str) -> call_result.Authorize:
        result = await db(services.authorize)(self.ref, None, id_tag, timezone.now())
        return call_result.Authorize(id_tag_info=result.id_tag_info())

    @on(Action.start_transaction, skip_schema_validation=True)
    async def on_start(
        self,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        timestamp: str,
        reservation_id: int | None = None,
    ) -> call_result.StartTransaction:
        if connector_id < 1 or connector_id > 99:
            raise PropertyConstraintViolationError(
                details={"cause": "connectorId must be 1..99 for a transaction."}
            )
        _check_reading("meterStart", meter_start)
        if reservation_id is not None and not -_INT32 <= reservation_id <= _INT32:
            raise PropertyConstraintViolationError(
                details={"cause": "reservationId must fit in 32 bits."}
            )
        ts = parse_time(timestamp)
        result = await db(services.start_transaction)(
            self.ref,
            connector_id,
            id_tag,
            meter_start,
            timestamp,
            ts,
            reservation_id,
            timezone.now(),
        )
        if result.fragments:
            await self.on_event(
                "push",
                {
                    "event": "session.started",
                    "fragments": result.fragments,
                    "data": {"transaction": result.transaction_id},
                },
            )
        return call_result.StartTransaction(
            transaction_id=result.transaction_id, id_tag_info=result.id_tag_info
        )

    @on(Action.stop_transaction, skip_schema_validation=True)
    async def on_stop(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        transaction_data: list | None = None,
    ) -> call_result.StopTransaction:
        _check_reading("meterStop", meter_stop)
        ts = parse_time(timestamp)
        samples = []
        if transaction_data:
            try:
                samples = metering.parse_meter_values(transaction_data, parse_time)
            except metering.BadSampledValue as exc:
                raise PropertyConstraintViolationError(details={"cause": str(exc)}) from exc
            _check_samples(samples)
        result = await db(services.stop_transaction)(
            self.ref, transaction_id, meter_stop, ts, reason or "", id_tag, timezone.now()
        )
        if samples and result.session_id:
            await metering.batcher().add(self.ref.id, 0, result.session_id, samples)
        if result.fragments:
            await self.on_event(
                "push",
                {
                    "event": "session.stopped",
                    "fragments": result.fragments,
                    "data": {"transaction": result.session_id},
                },
            )
        return call_result.StopTransaction(id_tag_info=result.id_tag_info)

    @on(Action.meter_values, skip_schema_validation=True)
    async def on_meter_values(
        self, connector_id: int, meter_value: list, transaction_id: int | None = None
    ) -> call_result.MeterValues:
        await self.meter_values(connector_id, meter_value, transaction_id)
        return call_result.MeterValues()

    async def meter_values(
        self, connector_id: int, meter_value: list, transaction_id: int | None
    ) -> None:
        """Parse (PropertyConstraintViolation on a bad value) and hand to the batch writer,
        which answers only after the batch is committed."""
        if connector_id < 0 or connector_id > 99:  # a small integer column in the batch
            raise PropertyConstraintViolationError(details={"cause": "connectorId must be 0..99."})
        try:
            samples = metering.parse_meter_values(meter_value, parse_time)
        except metering.BadSampledValue as exc:
            raise PropertyConstraintViolationError(details={"cause": str(exc)}) from exc
        _check_samples(samples)
        await metering.batcher().add(self.ref.id, connector_id, transaction_id, samples)

    @on(Action.data_transfer, skip_schema_validation=True)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None
    ) -> call_result.DataTransfer:
        # Our vendor extensions towards the central system: docs/OCPP.md ("Inputs").
        from ocpp.v16.enums import DataTransferStatus

        if vendor_id != VENDOR_ID:
            return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)
        if message_id != "Inputs":
            return call_result.DataTransfer(status=DataTransferStatus.unknown_message_id)
        try:
            inputs = services.inputs_parse(data)
        except RecursionError:  # JSON nested thousands deep
            return call_result.DataTransfer(
                status=DataTransferStatus.rejected, data="data is nested too deeply"
            )
        except ValueError as exc:
            return call_result.DataTransfer(status=DataTransferStatus.rejected, data=str(exc))
        await db(services.inputs_reported)(self.ref, inputs, timezone.now())
        return call_result.DataTransfer(status=DataTransferStatus.accepted)

    @on(Action.firmware_status_notification, skip_schema_validation=True)
    async def on_firmware_status(self, status: str) -> call_result.FirmwareStatusNotification:
        log.info("%s firmware status %s", self.ref.charge_point_id, status)
        return call_result.FirmwareStatusNotification()

    @on(Action.diagnostics_status_notification, skip_schema_validation=True)
    async def on_diagnostics_status(self, status: str) -> call_result.DiagnosticsStatusNotification:
        log.info("%s diagnostics status %s", self.ref.charge_point_id, status)
        return call_result.DiagnosticsStatusNotification()
