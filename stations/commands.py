"""The command channel: any process can send any call to any station.

``command_send`` validates the payload against the OCPP 1.6 schema, stores a
``StationCommand`` (pending) and, after commit, tells the station's group. The connection
holding the station claims the row (a conditional UPDATE, so a command runs once even while an
old and a new connection briefly overlap), runs the call as a task and records the result.
Channel-layer messages can expire or be dropped, so the database is the truth: a connection
also picks up pending commands when the station boots or resumes, and a periodic task records
commands nobody claimed as ``offline``.

Load management's charging profiles (a SetChargingProfile no person asked for, see
``unattended``) are never sent by a connection's pending-command scan: load management
re-sends what it wants after every reconnect and boot, and a stale lease delivered after a
newer one would raise a station's limit above what load management counts it at. One whose
message was lost stays pending and is recorded as ``offline`` by the periodic sweep.

(Sending them while claiming the row alongside, instead of after the claim, was tried: no
measurable gain in the load-management benchmark, and with the database away during the
send a station could hold a profile the database never recorded as sent.)
"""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone
from ocpp.charge_point import camel_to_snake_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, _validate_payload
from ocpp.v16 import call as v16_call

from portal.errors import DomainError
from portal.layer import group_send, group_send_many
from portal.models import User
from portal.prepared_sql import IdQuery, insert_returning_pk, update_returning
from stations.live import station_event
from stations.models import (
    LEASE_SUPERSEDED,
    CommandStatus,
    ConfigurationKey,
    Station,
    StationCommand,
)

SUPPORTED_ACTIONS = (
    "RemoteStartTransaction",
    "RemoteStopTransaction",
    "Reset",
    "UnlockConnector",
    "ChangeConfiguration",
    "GetConfiguration",
    "TriggerMessage",
    "SetChargingProfile",
    "ClearChargingProfile",
    "DataTransfer",
)
# What a station in BootNotification status Pending may receive (OCPP 1.6 §4.2.1).
ALLOWED_WHILE_PENDING = (
    "ChangeConfiguration",
    "GetConfiguration",
    "TriggerMessage",
    "DataTransfer",
)


def unattended(action: str, requested_by_id: int | None) -> bool:
    """A charging profile no person asked for: load management's lease or fail-safe profile,
    re-sent by its sender whenever it wants it again (see the module docstring)."""
    return action == "SetChargingProfile" and requested_by_id is None


UNATTENDED = models.Q(action="SetChargingProfile", requested_by__isnull=True)


def station_group(station_id: int) -> str:
    return f"ocpp-station-{station_id}"


def build_call(action: str, payload: dict[str, Any]) -> Any:
    """The ``ocpp`` library's dataclass for this call (payload in OCPP camelCase)."""
    cls = getattr(v16_call, action)
    return cls(**camel_to_snake_case(payload))


def command_validate(action: str, payload: dict[str, Any]) -> None:
    """Raise DomainError unless ``payload`` is a valid OCPP 1.6 ``action`` request."""
    if action not in SUPPORTED_ACTIONS:
        raise DomainError(f"Unsupported command {action!r}.", code="unsupported_command")
    if not isinstance(payload, dict):
        raise DomainError("The payload must be a JSON object.", code="invalid_payload")
    try:
        _validate_payload(Call("check", action, dict(payload)), "1.6")
        build_call(action, payload)
    except OCPPError as exc:
        cause = exc.details.get("cause") if isinstance(exc.details, dict) else None
        raise DomainError(
            f"Invalid {action} payload: {cause or exc.description}", code="invalid_payload"
        ) from exc
    except TypeError as exc:
        raise DomainError(f"Invalid {action} payload: {exc}", code="invalid_payload") from exc


def _notify(station_id: int, command_id: int) -> None:
    group_send(station_group(station_id), {"type": "ocpp.command", "command_id": command_id})


def command_send(
    *,
    station: Station,
    action: str,
    payload: dict[str, Any] | None = None,
    requested_by: User | None = None,
) -> StationCommand:
    """Record the command and deliver it after commit; offline station → ``offline`` now."""
    payload = payload or {}
    command_validate(action, payload)
    command = StationCommand(
        station=station, action=action, payload=payload, requested_by=requested_by
    )
    if not Station.objects.filter(pk=station.pk, online=True).exists():
        command.status = CommandStatus.OFFLINE
        command.finished_at = timezone.now()
        command.error = "The station is not connected."
        command.save()
    else:
        command.save()
        station_id, command_id = station.pk, command.pk
        transaction.on_commit(lambda: _notify(station_id, command_id))
    station_event(
        station,
        "station.command",
        commands=True,
        data={"command": command.pk, "status": command.status},
    )
    return command


def configuration_set(
    *, station: Station, key: str, value: str, requested_by: User | None = None
) -> StationCommand:
    """Wanted configuration: stored, sent now, re-sent on boot and reconnect until applied."""
    with transaction.atomic():
        ConfigurationKey.objects.update_or_create(
            station=station, key=key, defaults={"value": value}
        )
        return command_send(
            station=station,
            action="ChangeConfiguration",
            payload={"key": key, "value": value},
            requested_by=requested_by,
        )


# --- Station side (called through database_sync_to_async by the consumer) -------------------


def command_claim(command_id: int, station_id: int) -> tuple[str, dict] | None:
    """Claim a pending command for this connection; (action, payload) or None if taken, or
    if it is a load-management lease that a newer one of the same profile replaces (then
    recorded as such, never sent).

    Leases can reach a connection out of order: renewals wait a random moment before they
    are claimed (``spread``), and meanwhile the next recompute sends the same connector a
    change. A renewal delivered after that change would put the station back on the old
    current, above what load management counts it at: in the Redis-restart fault test a
    16 A renewal arrived after the 6 A decrease that followed it, while the neighbour on the
    same phase took the 26 A the decrease had freed (42 A on a 32 A line)."""
    superseded = _superseded_lease_sql(connection.vendor)
    claimed = _update_returning(
        command_id,
        {"sent_at": timezone.now()},
        ("action", "payload"),
        where={"station": station_id, "status": CommandStatus.PENDING, "sent_at": None},
        extra=f"NOT ({superseded})",
    )
    if claimed is None:
        _update_returning(
            command_id,
            {
                "status": CommandStatus.ERROR,
                "finished_at": timezone.now(),
                "error": LEASE_SUPERSEDED,
            },
            ("action",),
            where={"station": station_id, "status": CommandStatus.PENDING, "sent_at": None},
            extra=superseded,
        )
    return claimed


@functools.cache
def _superseded_lease_sql(vendor: str) -> str:
    """SQL (no parameters) true for a command row that is a load-management lease with a
    newer lease of the same station, connector and profile id (``UNATTENDED``). Built once
    per database vendor: every command claim on the OCPP path uses it."""
    meta = StationCommand._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)

    def column(alias: str, name: str) -> str:
        return f"{alias}.{quote(meta.get_field(name).column)}"

    def key(alias: str, *path: str) -> str:
        payload = column(alias, "payload")
        if vendor == "postgresql":
            return f"({payload} #>> '{{{','.join(path)}}}')"
        return f"json_extract({payload}, '$.{'.'.join(path)}')"

    def lease(alias: str) -> str:
        return (
            f"{column(alias, 'action')} = 'SetChargingProfile'"
            f" AND {column(alias, 'requested_by')} IS NULL"
        )

    same_profile = " AND ".join(
        f"{key('newer', *path)} = {key(table, *path)}"
        for path in (("connectorId",), ("csChargingProfiles", "chargingProfileId"))
    )
    return (
        f"{lease(table)} AND EXISTS (SELECT 1 FROM {table} newer"
        f" WHERE {column('newer', 'station')} = {column(table, 'station')}"
        f" AND {column('newer', 'id')} > {column(table, 'id')}"
        f" AND {lease('newer')} AND {same_profile})"
    )


def _update_returning(
    command_id: int,
    values: dict[str, Any],
    returning: tuple[str, ...],
    where: dict[str, Any],
    extra: str = "",
    extra_params: tuple[Any, ...] = (),
) -> tuple | None:
    """UPDATE one command row (if it matches ``where``; ``None`` means IS NULL) and read
    columns of it in the same statement (portal/prepared_sql.py: built once, not by the ORM
    on every call). Every command is claimed and finished on the OCPP path, and a second
    query to read the row back cost as much as the update (load management sends many
    setpoints a second)."""
    return update_returning(
        StationCommand,
        values,
        {"id": command_id, **where},
        returning,
        extra=extra,
        extra_params=extra_params,
    )


def command_refuse(command_id: int, station_id: int, error: str) -> dict[str, str] | None:
    """Claim a pending command and record it as an error without sending it (a relayed
    station, stations/relay.py: the other backend manages it). None if another took it."""
    if command_claim(command_id, station_id) is None:
        return None
    return command_finish(command_id, CommandStatus.ERROR, None, error)


def _pending_query(
    station_id: int, accepted: bool, own_after: int | None = None
) -> models.QuerySet:
    qs = StationCommand.objects.filter(
        station_id=station_id, status=CommandStatus.PENDING, sent_at__isnull=True
    )
    if not accepted:
        qs = qs.filter(action__in=ALLOWED_WHILE_PENDING)
    if own_after is None:
        qs = qs.exclude(UNATTENDED)  # their sender re-sends them (module docstring)
    else:  # but those made by this connection's boot are its own to send
        qs = qs.exclude(UNATTENDED & models.Q(id__lte=own_after))
    return qs.order_by("created_at", "id").values_list("pk")


# Read at every boot and reconnect of every station: built once (portal/prepared_sql.py).
_PENDING = {
    accepted: IdQuery(functools.partial(_pending_query, accepted=accepted))
    for accepted in (True, False)
}
_PENDING_AFTER_BOOT = IdQuery(
    lambda station_id, own_after: _pending_query(station_id, True, own_after), keys=2
)
_WANTED_CONFIGURATION = IdQuery(
    lambda station_id: ConfigurationKey.objects.filter(station_id=station_id).values_list(
        "key", "value", "applied_value"
    )
)


def commands_pending(
    station_id: int, registration_status: str, booted_after_command: int | None = None
) -> list[int]:
    """Unclaimed commands this station may receive now, oldest first.

    ``booted_after_command``: after an accepted boot, the station's newest command id at the
    connection's handshake (``StationRef.last_command_id``). Load management's profiles are
    otherwise left to their sender, but those newer than it were made by this boot (its
    fail-safe profile, ``stations.events.BOOT``), and the connection sends them itself."""
    if booted_after_command is not None and registration_status == "Accepted":
        rows = _PENDING_AFTER_BOOT.rows(station_id, booted_after_command)
    else:
        rows = _PENDING[registration_status == "Accepted"].rows(station_id)
    return [row[0] for row in rows]


def configuration_resend(station_id: int, everything: bool) -> list[int]:
    """Queue ChangeConfiguration for wanted keys: all (after a boot) or those not applied."""
    commands = []
    for key, value, applied_value in _WANTED_CONFIGURATION.rows(station_id):
        if not everything and applied_value == value:
            continue
        commands.append(
            StationCommand(
                station_id=station_id,
                action="ChangeConfiguration",
                payload={"key": key, "value": value},
            )
        )
    if commands:
        StationCommand.objects.bulk_create(commands)
    return [c.pk for c in commands if c.pk]


RESULT_STATUS = {
    "Accepted": CommandStatus.ACCEPTED,
    "RebootRequired": CommandStatus.ACCEPTED,
    "Unlocked": CommandStatus.ACCEPTED,
    "Rejected": CommandStatus.REJECTED,
    "UnlockFailed": CommandStatus.REJECTED,
    "Unknown": CommandStatus.REJECTED,
    "UnknownMessageId": CommandStatus.NOT_SUPPORTED,
    "UnknownVendorId": CommandStatus.NOT_SUPPORTED,
    "NotSupported": CommandStatus.NOT_SUPPORTED,
    "NotImplemented": CommandStatus.NOT_SUPPORTED,
}


def result_status(response: Any) -> tuple[str, dict]:
    """Our status and the JSON-able response of a ``call_result`` dataclass."""
    data = dataclasses.asdict(response) if dataclasses.is_dataclass(response) else {}
    data = {k: v for k, v in data.items() if v is not None}
    status = data.get("status")
    if status is None:
        return CommandStatus.ACCEPTED, data  # GetConfiguration, DataTransfer without status
    return RESULT_STATUS.get(str(status), CommandStatus.REJECTED), data


#: The outcome recorded for a call still unanswered when its station opened a new connection
#: (``commands_lost_on_reconnect``). Provisional: the old connection's own outcome replaces it.
LOST_ON_RECONNECT = (
    "No answer recorded: the station reconnected before its answer to this call arrived."
)


@functools.cache
def _unfinished_or_provisional_sql(vendor: str) -> str:
    """SQL (two parameters: the error status and text) true for a command row without an
    outcome or with the provisional one of ``commands_lost_on_reconnect``."""
    meta = StationCommand._meta
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    return (
        f"{column('finished_at')} IS NULL OR ({column('status')} = %s AND {column('error')} = %s)"
    )


def command_finish(
    command_id: int, status: str, response: dict | None = None, error: str = ""
) -> dict[str, str]:
    """Record the outcome (once: a later one only replaces the provisional outcome of
    ``commands_lost_on_reconnect``); applies wanted configuration; returns live fragments."""
    from stations.live import commands_fragment

    now = timezone.now()
    row = _update_returning(
        command_id,
        {"status": status, "response": response, "error": error[:255], "finished_at": now},
        ("action", "requested_by", "station", "payload"),
        where={},
        extra=_unfinished_or_provisional_sql(connection.vendor),
        extra_params=(CommandStatus.ERROR, LOST_ON_RECONNECT),
    )
    updated = row is not None
    if row is None:  # finished before (e.g. a late answer after a time-out): only show it
        row = StationCommand.objects.values_list(
            "action", "requested_by_id", "station_id", "payload"
        ).get(pk=command_id)
    action, requested_by_id, station_id, payload = row
    if unattended(action, requested_by_id):
        # Load management's setpoints (many per minute): its own view shows them; rendering
        # the station's command log for each would cost more than the command itself.
        return {}
    if updated and action == "ChangeConfiguration":
        key, value = payload.get("key"), payload.get("value")
        applied = status == CommandStatus.ACCEPTED
        ConfigurationKey.objects.filter(station_id=station_id, key=key).update(
            last_result=(response or {}).get("status", status),
            **({"applied_value": value, "applied_at": now} if applied else {}),
        )
    return commands_fragment(Station.objects.select_related("organization").get(pk=station_id))


def commands_expire_unclaimed(now: datetime, after_seconds: int) -> int:
    """Pending commands no connection claimed (station gone, message dropped) → offline."""
    cutoff = now - timedelta(seconds=after_seconds)
    return StationCommand.objects.filter(
        status=CommandStatus.PENDING, sent_at__isnull=True, created_at__lt=cutoff
    ).update(
        status=CommandStatus.OFFLINE, finished_at=now, error="No connection picked the command up."
    )


def commands_lost_on_reconnect(station_id: int, now: datetime) -> bool:
    """Calls a station's earlier connections sent without a recorded outcome → error, when
    the station opens a new connection (``stations.services.connection_open``); True if one
    of them shows in the station's command log (all but load management's profiles).

    OCPP-J answers a call on the connection that carried it, and a station that opened a new
    one has left the old: no answer can come any more. Without this, a call of a process that
    was killed (SIGKILL, out of memory) stayed "sent" on the station's page until the periodic
    sweep, ``OCPP_COMMAND_LOST_AFTER`` (two minutes by default) later. The outcome is
    provisional: an old connection still alive elsewhere may have received the answer just
    before the station left and be writing it (``_record_outcome`` retries while the database
    is away); its own outcome then replaces this one (``command_finish``)."""
    lost = StationCommand.objects.filter(
        station_id=station_id,
        status=CommandStatus.PENDING,
        sent_at__isnull=False,
        sent_at__lte=now,
        finished_at__isnull=True,
    )
    attended = lost.exclude(UNATTENDED).exists()
    lost.update(status=CommandStatus.ERROR, finished_at=now, error=LOST_ON_RECONNECT)
    return attended


def commands_expire_lost(now: datetime, after_seconds: float) -> int:
    """Commands a connection claimed and sent but never recorded an outcome for: the process
    holding the connection died (killed, out of memory) between sending and recording. After
    the call time-out and the time a recorded answer is retried, no answer can come: → error,
    so that nobody (load management, a page) waits for them for good."""
    cutoff = now - timedelta(seconds=after_seconds)
    return StationCommand.objects.filter(
        status=CommandStatus.PENDING, sent_at__lt=cutoff, finished_at__isnull=True
    ).update(
        status=CommandStatus.ERROR,
        finished_at=now,
        error="The connection was lost before the station's answer was recorded.",
    )


def commands_send_bulk(
    items: list[tuple[Station, str, dict[str, Any]]],
    *,
    requested_by: User | None = None,
    schema_checked: bool = False,
    spread_seconds: float = 0.0,
    notify: bool = True,
) -> list[StationCommand]:
    """Many commands at once (load management's setpoints each cycle): validated, stored in
    one query, delivered after commit. Unlike ``command_send`` no page fragments are pushed
    per command: the caller pushes its own summary. Offline stations → ``offline`` at once.

    ``schema_checked``: the payloads come from a builder whose every output is tested against
    the OCPP schema (``loadmgmt.profiles``), so the per-payload validation (a third of the
    cost of sending 40 setpoints) is skipped; the station's connection validates the frame
    again before it goes out.

    ``spread_seconds``: the commands need not go out at once (load management's renewals);
    each connection starts its command at a random moment within this time, so that hundreds
    of them do not hold up the stations' own messages.

    ``notify=False``: the connections are not told; for commands made while a station's
    accepted boot is handled (``stations.events.BOOT``), which its connection sends with the
    pending commands once the boot is answered. Told, each boot of a reconnect storm cost a
    channel-layer send, a hop to the sender thread and a dispatch in the consumer."""
    now = timezone.now()
    commands = []
    for station, action, payload in items:
        if not schema_checked:
            command_validate(action, payload)
        elif action not in SUPPORTED_ACTIONS:
            raise DomainError(f"Unsupported command {action!r}.", code="unsupported_command")
        command = StationCommand(
            station=station, action=action, payload=payload, requested_by=requested_by
        )
        if not station.online:
            command.status = CommandStatus.OFFLINE
            command.finished_at = now
            command.error = "The station is not connected."
        commands.append(command)
    insert_returning_pk(commands)
    pending = [(c.station_id, c.pk) for c in commands if c.status == CommandStatus.PENDING]

    extra = {"spread": spread_seconds} if spread_seconds > 0 else {}

    def deliver() -> None:
        group_send_many(
            (station_group(station_id), {"type": "ocpp.command", "command_id": cid, **extra})
            for station_id, cid in pending
        )

    if pending and notify:
        transaction.on_commit(deliver)
    return commands


def station_reconnect_request(station_id: int) -> None:
    """After commit, ask the connection holding the station to close so that the station
    reconnects (e.g. its authentication mode changed between relayed and served here)."""

    def send() -> None:
        group_send(station_group(station_id), {"type": "ocpp.reconnect"})

    transaction.on_commit(send)
