"""Stations' business logic: registration and passwords (web side) and what the OCPP consumer
reports (station side). Station-side functions are synchronous, short, and called through
``database_sync_to_async``; each commits before it returns, so the consumer answers the
station only after what it reported is stored.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Lower
from django.utils import timezone

from portal.errors import Conflict
from portal.live import watched
from portal.models import Organization
from portal.prepared_sql import update_returning, update_rows
from stations import authorization, conf, events
from stations.credentials import station_password_hash, station_password_matches
from stations.events import station_event_emit, station_events_emit
from stations.live import (
    commands_fragment,
    power_fragment,
    sessions_fragment,
    station_event,
    station_fragments,
)
from stations.models import (
    ChargingSession,
    Connector,
    RegistrationStatus,
    SessionStatus,
    Station,
    UnknownChargePoint,
    identity_validator,
)

PASSWORD_BYTES = 18  # 24 URL-safe characters; OCPP 1.6 security: 16..40 characters


# --- Web side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What an owner types into the station. ``password`` is shown once and never stored."""

    station: Station
    url: str
    username: str
    password: str


def station_url(station: Station) -> str:
    return f"{conf.public_ws_base()}/{quote(station.charge_point_id, safe='')}"


def _new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def station_register(
    *,
    organization: Organization,
    charge_point_id: str,
    name: str = "",
    connectors: int = 1,
    password: str | None = None,
) -> Credentials:
    """Create a station with ``connectors`` connectors and a fresh OCPP password."""
    charge_point_id = charge_point_id.strip()
    try:
        identity_validator(charge_point_id)
    except ValidationError as exc:
        raise ValidationError({"charge_point_id": exc.messages}) from exc
    if not 1 <= connectors <= 99:
        raise ValidationError({"connectors": ["Between 1 and 99."]})
    if (
        Station.objects.annotate(cpid=Lower("charge_point_id"))
        .filter(cpid=charge_point_id.lower())
        .exists()
    ):
        raise Conflict("A station with this identity is already registered.", code="identity_taken")
    password = password or _new_password()
    try:
        with transaction.atomic():
            station = Station.objects.create(
                organization=organization,
                charge_point_id=charge_point_id,
                name=name.strip(),
                password_hash=station_password_hash(password),
                password_set_at=timezone.now(),
                heartbeat_interval=conf.heartbeat_interval(),
            )
            Connector.objects.bulk_create(
                Connector(station=station, connector_id=n) for n in range(1, connectors + 1)
            )
            UnknownChargePoint.objects.filter(identity__iexact=charge_point_id).delete()
    except IntegrityError as exc:
        raise Conflict(
            "A station with this identity is already registered.", code="identity_taken"
        ) from exc
    station.organization = organization
    station_event(station, "station.added")
    return Credentials(station, station_url(station), station.charge_point_id, password)


def station_rotate_password(*, station: Station) -> Credentials:
    """New password; the old one stops working at the next connection attempt."""
    password = _new_password()
    station.password_hash = station_password_hash(password)
    station.password_set_at = timezone.now()
    station.save(update_fields=["password_hash", "password_set_at"])
    return Credentials(station, station_url(station), station.charge_point_id, password)


def station_update(
    *, station: Station, name: str | None = None, enabled: bool | None = None
) -> Station:
    fields = []
    if name is not None:
        station.name = name.strip()
        fields.append("name")
    if enabled is not None:
        station.enabled = enabled
        fields.append("enabled")
    if fields:
        station.save(update_fields=fields)
        station_event(station, "station.changed")
    return station


def station_delete(*, station: Station) -> None:
    station.delete()


# --- Station side: connection -------------------------------------------------------------


@dataclass(frozen=True)
class StationRef:
    """What the consumer keeps about its station (no ORM instance across awaits)."""

    id: int
    organization_id: int
    charge_point_id: str
    registration_status: str
    heartbeat_interval: int
    # Third-party mode with a URL: the connection is relayed there (stations/relay.py).
    relay_url: str = ""
    # At the handshake: calls sent on an earlier connection still wait for their outcome
    # (connection_open records them as lost).
    calls_in_flight: bool = False
    # At the handshake: the station's newest command row (0: none). Load management's
    # profiles newer than it are this connection's own, made by its boot, and go out with
    # the pending commands after the boot's answer (stations.commands.commands_pending).
    last_command_id: int = 0


def station_for_handshake(identity: str) -> tuple[StationRef, str] | None:
    """The station and its password hash, or None (and the attempt recorded) if unknown."""
    from stations.models import AuthMode, CommandStatus

    with connection.cursor() as cursor:
        cursor.execute(_handshake_sql(connection.vendor), [CommandStatus.PENDING, identity])
        row = cursor.fetchone()
    if row is None:
        return None
    relay_url = row[7] if row[6] == AuthMode.THIRD_PARTY else ""
    return StationRef(
        *row[:5], relay_url=relay_url, calls_in_flight=bool(row[8]), last_command_id=row[9] or 0
    ), row[5]


@functools.cache
def _handshake_sql(vendor: str) -> str:
    """The handshake's one query (parameters: the pending status, the identity), built once
    per database vendor: every reconnect runs it, and the ORM spent twice as long building
    it as the database did answering (with the EXISTS, 0.6 ms more per handshake than
    without, measured on SQLite). Whether calls sent on an earlier connection wait for an
    outcome (``calls_in_flight``) is read here, not in a round trip of its own: rarely true,
    and a reconnect storm would pay it for every station."""
    from stations.models import StationCommand

    quote = connection.ops.quote_name
    station, command = Station._meta, StationCommand._meta

    def column(meta, name: str) -> str:
        return quote(meta.get_field(name).column)

    fields = (
        "id",
        "organization",
        "charge_point_id",
        "registration_status",
        "heartbeat_interval",
        "password_hash",
        "auth_mode",
        "third_party_url",
    )
    in_flight = (
        f"SELECT 1 FROM {quote(command.db_table)} c"
        f" WHERE c.{column(command, 'station')} = s.{column(station, 'id')}"
        f" AND c.{column(command, 'status')} = %s AND c.{column(command, 'sent_at')} IS NOT NULL"
    )
    newest = (
        f"SELECT MAX(c.{column(command, 'id')}) FROM {quote(command.db_table)} c"
        f" WHERE c.{column(command, 'station')} = s.{column(station, 'id')}"
    )
    return (
        f"SELECT {', '.join(f's.{column(station, name)}' for name in fields)},"
        f" EXISTS ({in_flight}), ({newest})"
        f" FROM {quote(station.db_table)} s WHERE s.{column(station, 'charge_point_id')} = %s"
    )


def unknown_identity_record(identity: str, remote_addr: str) -> None:
    identity = identity[:200]
    now = timezone.now()
    with transaction.atomic():
        updated = UnknownChargePoint.objects.filter(identity=identity).update(
            last_seen=now, remote_addr=remote_addr[:64], attempts=F("attempts") + 1
        )
        if not updated:
            try:
                with transaction.atomic():
                    UnknownChargePoint.objects.create(
                        identity=identity, remote_addr=remote_addr[:64]
                    )
            except IntegrityError:
                pass


def password_matches(password: str, password_hash: str) -> bool:
    """Constant-time check of a station's password (see stations/credentials.py)."""
    return station_password_matches(password, password_hash)


def connection_open(
    station_id: int,
    channel_name: str,
    remote_addr: str,
    organization_id: int | None = None,
    *,
    calls_in_flight: bool = False,
    announce: bool = False,
) -> dict[str, str]:
    """This connection now holds the station; returns live fragments to push.

    ``announce``: load management hears ONLINE now (a relayed station, which boots with the
    other backend); otherwise the consumer tells it after the first message
    (``station_online_announce``).

    ``calls_in_flight`` (``StationRef``, read at the handshake): calls sent on an earlier
    connection wait for an outcome. None can come now (``commands_lost_on_reconnect``)."""
    from stations import commands

    now = timezone.now()
    update_rows(
        Station,
        {
            "online": True,
            "channel_name": channel_name,
            "connected_at": now,
            "last_seen": now,
            "remote_addr": remote_addr[:64],
        },
        {"id": station_id},
    )
    attended_lost = calls_in_flight and commands.commands_lost_on_reconnect(station_id, now)
    # ONLINE only when asked: nearly every connection begins with a BootNotification, whose
    # BOOT event tells load management all that ONLINE would (station_online_announce).
    if announce:
        station_event_emit(events.ONLINE, station_id)
    fragments = _fragments(station_id, organization_id)
    if attended_lost and fragments:  # a browser watches: its command log changed
        fragments.update(commands_fragment(Station.objects.get(pk=station_id)))
    return fragments


def station_online_announce(station_id: int) -> None:
    """The station's connection began without a boot that was accepted (a reconnect without
    rebooting, which OCPP allows, or a boot that failed or was refused): load management
    hears ONLINE. An accepted boot is a BOOT event instead, which covers it; so a reconnect
    storm runs the load-management hook once per station, not twice."""
    station_event_emit(events.ONLINE, station_id)


def connections_closed(
    closed: Sequence[tuple[int, str, int | None]],
) -> list[dict[str, str] | None]:
    """For each ``(station, channel name, organization)`` of a closed connection: offline,
    unless another connection took over meanwhile (then nothing changes, and None).

    Every connection of a process closes at once when it stops (a restart: 2,500 a process
    at 10,000 stations), and the process has a few seconds to record them before it is
    stopped for good: on PostgreSQL one statement records them all (stations.disconnects
    gathers them)."""
    if not closed:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _connections_closed_sql(),
                [[c[0] for c in closed], [c[1] for c in closed]],
            )
            offline = {row[0] for row in cursor.fetchall()}
    else:
        offline = {
            station_id
            for station_id, channel_name, _org in closed
            if update_rows(
                Station,
                {"online": False, "channel_name": ""},
                {"id": station_id, "channel_name": channel_name},
            )
        }
    # One delivery for all (a stopping process closes thousands: one hook call each was a
    # sixth of its CPU in the stop, docs/BENCHMARKS.md).
    station_events_emit(
        events.OFFLINE,
        [station_id for station_id, _c, _o in closed if station_id in offline],
        data={"reason": "disconnected"},
    )
    return [
        _fragments(station_id, organization_id) if station_id in offline else None
        for station_id, _channel_name, organization_id in closed
    ]


@functools.cache
def _connections_closed_sql() -> str:
    """Two parameters: the stations' ids and the channel names each must still hold."""
    meta = Station._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    pk, online, channel = (
        quote(meta.get_field(name).column) for name in ("id", "online", "channel_name")
    )
    return (
        f"UPDATE {table} SET {online} = false, {channel} = '' "
        f"FROM unnest(%s::bigint[], %s::text[]) AS closed(station, channel) "
        f"WHERE {table}.{pk} = closed.station AND {table}.{channel} = closed.channel "
        f"RETURNING {table}.{pk}"
    )


def station_seen(station_id: int, now: datetime) -> bool:
    """Record activity; True if the station had been marked offline (it is back)."""
    # Every connected station, every few minutes: SQL built once (portal/prepared_sql.py).
    came_back = update_rows(
        Station, {"online": True, "last_seen": now}, {"id": station_id, "online": False}
    )
    if not came_back:
        update_rows(Station, {"last_seen": now}, {"id": station_id})
    else:
        station_event_emit(events.ONLINE, station_id)
    return bool(came_back)


def _fragments(station_id: int, organization_id: int | None = None) -> dict[str, str]:
    """The station's live fragments; the caller that knows the organization saves the
    query while no browser watches it."""
    if organization_id is not None and not watched(organization_id):
        return {}
    station = Station.objects.select_related("organization").filter(pk=station_id).first()
    return station_fragments(station) if station else {}


# --- Station side: messages ---------------------------------------------------------------

EPOCH_SANITY = datetime(2015, 1, 1, tzinfo=UTC)


def plausible(ts: datetime | None, now: datetime) -> datetime:
    """The station's time if its clock looks synchronised, else the server's receive time."""
    if ts is None or ts < EPOCH_SANITY or ts > now + timedelta(days=1):
        return now
    return ts


def boot(station_id: int, info: dict[str, str], now: datetime) -> tuple[str, int, dict]:
    """Store what the station reports; Accepted unless the owner disabled it.

    One UPDATE … RETURNING (portal/prepared_sql.py) in the usual case: every station of a
    fleet boots again after a restart, and loading and saving the row through the ORM cost
    several times the round trip. A changed registration status takes a second UPDATE."""
    interval = conf.heartbeat_interval()
    row = update_returning(
        Station,
        {
            **{field: value or "" for field, value in info.items()},
            "last_boot_at": now,
            "last_seen": now,
            "heartbeat_interval": interval,
        },
        {"id": station_id},
        ("enabled", "organization", "registration_status"),
    )
    if row is None:
        raise Station.DoesNotExist(f"station {station_id} was deleted")
    enabled, organization_id, registered = row
    status = RegistrationStatus.ACCEPTED if enabled else RegistrationStatus.REJECTED
    if status != registered:
        update_rows(Station, {"registration_status": status}, {"id": station_id})
    if status == RegistrationStatus.ACCEPTED:
        station_event_emit(events.BOOT, station_id, organization_id=organization_id)
    return status, interval, _fragments(station_id, organization_id)


def status_notification(
    station_id: int,
    connector_id: int,
    status: str,
    error_code: str,
    info: str,
    vendor_error_code: str,
    timestamp: datetime | None,
    now: datetime,
    organization_id: int | None = None,
) -> dict[str, str]:
    # A station re-reports its statuses on every reconnect: only a change is an event (load
    # management recomputes on events; a fleet reconnecting at once would otherwise ask for
    # a recompute per connector for nothing). The common case, the same status again, is one
    # UPDATE that matches on the old status; a change or a new connector takes one more.
    # The UPDATEs are built once (portal/prepared_sql.py), not by the ORM for every message.
    if connector_id == 0:
        same = {"id": station_id, "status": status, "error_code": error_code}
        changed = not update_rows(Station, {"last_seen": now}, same)
        if changed:
            update_rows(
                Station,
                {"status": status, "error_code": error_code, "last_seen": now},
                {"id": station_id},
            )
    else:
        values = {
            "status": status,
            "error_code": error_code,
            "info": info,
            "vendor_error_code": vendor_error_code,
            "status_at": timestamp,
            "updated_at": now,
        }
        connector = {"station": station_id, "connector_id": connector_id}
        changed = not update_rows(Connector, values, {**connector, "status": status})
        if changed and not update_rows(Connector, values, connector):
            try:
                with transaction.atomic():
                    Connector.objects.create(
                        station_id=station_id, connector_id=connector_id, **values
                    )
            except IntegrityError:  # created meanwhile by a replaced connection's message
                update_rows(Connector, values, connector)
    if changed:
        station_event_emit(
            events.STATUS, station_id, connector_id=connector_id, data={"status": status}
        )
    return _fragments(station_id, organization_id)


def authorize(
    ref: StationRef, connector_id: int | None, id_tag: str, now: datetime
) -> authorization.AuthorizationResult:
    return authorization.authorize(
        authorization.AuthorizationRequest(
            organization_id=ref.organization_id,
            station_id=ref.id,
            charge_point_id=ref.charge_point_id,
            connector_id=connector_id,
            id_tag=id_tag,
            time=now,
        )
    )


def _start_key(connector_id: int, id_tag: str, timestamp: str, meter_start: int) -> str:
    raw = f"{connector_id}|{id_tag}|{timestamp}|{meter_start}"
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class StartResult:
    transaction_id: int
    id_tag_info: dict
    duplicate: bool
    fragments: dict[str, str]


def start_transaction(
    ref: StationRef,
    connector_id: int,
    id_tag: str,
    meter_start: int,
    timestamp_raw: str,
    timestamp: datetime,
    reservation_id: int | None,
    now: datetime,
) -> StartResult:
    """Idempotent: the same (connector, idTag, timestamp, meterStart) gets the same id.

    A non-accepted idTag still gets a transaction (OCPP: the station must be answered with a
    transactionId; it then stops the transaction with reason DeAuthorized).
    """
    key = _start_key(connector_id, id_tag, timestamp_raw, meter_start)
    existing = ChargingSession.objects.filter(station_id=ref.id, idempotency_key=key).first()
    if existing is not None:
        return StartResult(existing.pk, {"status": existing.auth_status}, True, {})
    result = authorize(ref, connector_id, id_tag, timestamp if timestamp <= now else now)
    try:
        with transaction.atomic():
            session = ChargingSession.objects.create(
                station_id=ref.id,
                connector_id=connector_id,
                id_tag=id_tag,
                auth_status=result.status,
                user_id_ref=result.user_id,
                card_id_ref=result.card_id,
                tariff_snapshot=result.tariff,
                reservation_id=reservation_id,
                meter_start=meter_start,
                last_meter_wh=meter_start,
                started_at=plausible(timestamp, now),
                station_started_at=timestamp,
                start_received_at=now,
                idempotency_key=key,
            )
    except IntegrityError:  # the same start raced in on another connection
        session = ChargingSession.objects.get(station_id=ref.id, idempotency_key=key)
        return StartResult(session.pk, {"status": session.auth_status}, True, {})
    _abandon_older_sessions(ref.id, connector_id, session)
    station_event_emit(
        events.SESSION_STARTED,
        ref.id,
        organization_id=ref.organization_id,
        connector_id=connector_id,
        data={"transaction_id": session.pk, "accepted": result.accepted},
    )
    station = Station.objects.select_related("organization").get(pk=ref.id)
    fragments = {**station_fragments(station), **sessions_fragment(station)}
    return StartResult(session.pk, result.id_tag_info(), False, fragments)


def _abandon_older_sessions(station_id: int, connector_id: int, newer: ChargingSession) -> int:
    """A connector runs one transaction at a time: open sessions that started before ``newer``
    lost their StopTransaction (power cut, station reset, firmware bug). Close them with the
    energy their meter values showed so they stop showing as charging; a late
    StopTransaction still completes them with the real meterStop."""
    return (
        ChargingSession.objects.filter(
            station_id=station_id,
            connector_id=connector_id,
            status=SessionStatus.ACTIVE,
            started_at__lte=newer.started_at,
        )
        .exclude(pk=newer.pk)
        .update(
            # energy_wh already follows the meter values; meter_stop stays unknown.
            status=SessionStatus.ABANDONED,
            power_w=None,
            stopped_at=newer.started_at,
            stop_received_at=newer.start_received_at,
            stop_reason="NoStopTransaction",
        )
    )


@dataclass(frozen=True)
class StopResult:
    session_id: int | None
    id_tag_info: dict | None
    counted: bool  # False: duplicate or unknown, nothing changed
    fragments: dict[str, str]


def stop_transaction(
    ref: StationRef,
    transaction_id: int,
    meter_stop: int,
    timestamp: datetime,
    reason: str,
    id_tag: str | None,
    now: datetime,
) -> StopResult:
    """Never refused (OCPP). Unknown or already stopped: answered, nothing counted twice.

    ``transactionId = -1`` (the station never got our StartTransaction answer): the newest
    open session of this station with that idTag (or any) whose meterStart fits.
    """
    sessions = ChargingSession.objects.filter(station_id=ref.id)
    session = None
    if transaction_id > 0:
        session = sessions.filter(pk=transaction_id).first()
    elif transaction_id == -1:
        open_sessions = sessions.filter(status=SessionStatus.ACTIVE, meter_start__lte=meter_stop)
        if id_tag:
            open_sessions = open_sessions.filter(id_tag=id_tag)
        session = open_sessions.order_by("-started_at", "-id").first()
    info = None
    if id_tag:
        info = authorize(ref, session.connector_id if session else None, id_tag, now).id_tag_info()
    if session is None:
        return StopResult(None, info, False, {})
    fragments = _session_complete(ref, session, meter_stop, timestamp, reason, id_tag, now)
    if fragments is None:
        return StopResult(session.pk, info, False, {})
    return StopResult(session.pk, info, True, fragments)


def _session_complete(
    ref: StationRef,
    session: ChargingSession,
    meter_stop: int,
    timestamp: datetime,
    reason: str,
    id_tag: str | None,
    now: datetime,
) -> dict[str, str] | None:
    """Complete a running (or abandoned) session once: energy = meterStop − meterStart.
    Returns the live fragments, or None if it was completed already (nothing counted)."""
    with transaction.atomic():
        counted = ChargingSession.objects.filter(
            pk=session.pk, status__in=(SessionStatus.ACTIVE, SessionStatus.ABANDONED)
        ).update(
            status=SessionStatus.COMPLETED,
            meter_stop=meter_stop,
            energy_wh=max(0, meter_stop - session.meter_start),
            last_meter_wh=meter_stop,
            power_w=None,
            stopped_at=max(plausible(timestamp, now), session.started_at),
            station_stopped_at=timestamp,
            stop_received_at=now,
            stop_reason=reason or "Local",
            stop_id_tag=id_tag or "",
        )
    if not counted:
        return None
    station_event_emit(
        events.SESSION_STOPPED,
        ref.id,
        organization_id=ref.organization_id,
        connector_id=session.connector_id,
        data={"transaction_id": session.pk},
    )
    station = Station.objects.select_related("organization").get(pk=ref.id)
    fragments = {**station_fragments(station), **sessions_fragment(station)}
    fragments[f"power-{ref.id}-{session.connector_id}"] = power_fragment(
        ref.id, session.connector_id, None
    )
    return fragments


# --- Station side: load-shedding inputs (DataTransfer "Inputs", docs/OCPP.md) ---------------


def inputs_parse(data: str | None) -> dict[str, bool]:
    """``{"in1": bool, "in2": bool}`` from the DataTransfer's data string, or ValueError."""
    import json

    try:
        value = json.loads(data or "")
    except ValueError:
        raise ValueError('data must be JSON such as {"in1": false, "in2": true}') from None
    if not isinstance(value, dict) or {"in1", "in2"} - value.keys():
        raise ValueError("data needs both in1 and in2")
    if not all(isinstance(value[k], bool) for k in ("in1", "in2")):
        raise ValueError("in1 and in2 must be true or false")
    return {"in1": value["in1"], "in2": value["in2"]}


def inputs_reported(ref: StationRef, inputs: dict[str, bool], now: datetime) -> None:
    """The station's shedding inputs changed (or were re-sent): load management decides."""
    station_event_emit(
        events.INPUTS,
        ref.id,
        organization_id=ref.organization_id,
        data={**inputs, "time": now.isoformat()},
    )


# --- The station page: display, commands, advanced settings, deletion ----------------------
# Each setting is wanted configuration (commands.configuration_set): stored, sent now and
# re-sent on every boot and reconnect until the station accepts it. Vendor keys: docs/OCPP.md.

if TYPE_CHECKING:
    from portal.models import User
    from stations.display_image import DisplayImage
    from stations.models import StationCommand

VENDOR_ID = "org.chargeportal"
CABLE_LOCK_KEY = "UnlockConnectorOnEVSideDisconnect"
MIN_COMMUNICATION_VERSION = (0, 0, 7)
# Connector states with a car at the plug (OCPP 1.6 ChargePointStatus).
CAR_PLUGGED = ("Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing")
CARID_RECENT_DAYS = 30


def auto_car_detection_key() -> str:
    return conf._get("OCPP_AUTO_CAR_DETECTION_KEY", "AutoCarDetection")


def modbus_tcp_key() -> str:
    return conf._get("OCPP_MODBUS_TCP_KEY", "ModbusTcpEnabled")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def display_set(
    *, station: Station, image: DisplayImage, source: str, requested_by: User | None = None
) -> StationCommand:
    """Store what the display shows (a ``display_image.DisplayImage``) and push it to the
    station (DataTransfer DisplayImage); the command row carries the result."""
    import json

    from stations import commands

    payload = image.station_payload()
    with transaction.atomic():
        station.display_source = source[:40]
        station.display_payload = payload
        station.display_notes = list(image.notes)
        station.display_updated_at = timezone.now()
        station.save(
            update_fields=[
                "display_source",
                "display_payload",
                "display_notes",
                "display_updated_at",
            ]
        )
        return commands.command_send(
            station=station,
            action="DataTransfer",
            payload={
                "vendorId": VENDOR_ID,
                "messageId": "DisplayImage",
                "data": json.dumps(payload, separators=(",", ":")),
            },
            requested_by=requested_by,
        )


def display_resend(*, station: Station, requested_by: User | None = None) -> StationCommand:
    """Send the stored image again (e.g. the station was offline or replaced)."""
    from portal.errors import DomainError
    from stations import display_image

    if not station.display_payload:
        raise DomainError("Choose a design or upload an image first.", code="no_display_image")
    image = display_image.from_payload(station.display_payload)
    return display_set(
        station=station, image=image, source=station.display_source, requested_by=requested_by
    )


def show_meter(
    *, station: Station, connector_id: int, requested_by: User | None = None
) -> StationCommand:
    """Ask the station to show its meter register on the display (DataTransfer ShowMeter)."""
    import json

    from portal.errors import DomainError
    from stations import commands

    if not station.connectors.filter(connector_id=connector_id).exists():
        raise DomainError(f"The station has no connector {connector_id}.", code="no_connector")
    return commands.command_send(
        station=station,
        action="DataTransfer",
        payload={
            "vendorId": VENDOR_ID,
            "messageId": "ShowMeter",
            "data": json.dumps({"connectorId": connector_id, "seconds": 30}),
        },
        requested_by=requested_by,
    )


@dataclass(frozen=True)
class RegisterReading:
    connector_id: int
    energy_wh: float
    time: datetime
    source: str  # "meter values" | "session start" | "session stop"


def last_register_readings(station: Station) -> list[RegisterReading]:
    """Per connector, the newest energy register the portal knows: the latest meter sample
    with energy, or a session's meterStop/meterStart, whichever is newer."""
    from stations.models import MeterSample

    readings: dict[int, RegisterReading] = {}
    for connector in station.connectors.all():
        cid = connector.connector_id
        sample = (
            MeterSample.objects.filter(station=station, connector_id=cid, energy_wh__isnull=False)
            .order_by("-time", "-id")
            .only("energy_wh", "time")
            .first()
        )
        if sample is not None:
            readings[cid] = RegisterReading(cid, sample.energy_wh, sample.time, "meter values")
        session = (
            ChargingSession.objects.filter(station=station, connector_id=cid)
            .order_by("-started_at", "-id")
            .first()
        )
        if session is not None:
            if session.meter_stop is not None and session.stopped_at:
                candidate = RegisterReading(
                    cid, float(session.meter_stop), session.stopped_at, "session stop"
                )
            else:
                candidate = RegisterReading(
                    cid, float(session.meter_start), session.started_at, "session start"
                )
            if cid not in readings or candidate.time > readings[cid].time:
                readings[cid] = candidate
    return [readings[k] for k in sorted(readings)]


def communication_version(station: Station) -> tuple[int, ...] | None:
    """The station's communication version, from the firmware version it reported at boot:
    the number after ``comm`` if the string names one (``fw 2.1.0 comm 0.0.7``), else its
    first dotted number (``0.0.7``, ``v1.4.2-pico``). None: unknown (never booted, no number).
    """
    import re

    text = station.firmware_version or ""
    match = re.search(r"comm\w*[\s:=_/-]*v?(\d+(?:\.\d+)+)", text, re.IGNORECASE) or re.search(
        r"(\d+(?:\.\d+)+)", text
    )
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def cable_lock_set(
    *, station: Station, fixed: bool, requested_by: User | None = None
) -> StationCommand:
    """Fix the cable lock (``UnlockConnectorOnEVSideDisconnect`` = false) or release it.

    Fixing is refused unless the communication version is at least 0.0.7 and no car is
    plugged in (the lock must close on an empty plug: the car would otherwise be held)."""
    from portal.errors import DomainError
    from stations import commands

    if fixed:
        version = communication_version(station)
        if version is None:
            raise DomainError(
                "The station's communication version is unknown (it has not reported a "
                "firmware version yet). Fixing the cable lock needs version 0.0.7 or later; "
                "let the station connect and try again.",
                code="version_unknown",
            )
        if version < MIN_COMMUNICATION_VERSION:
            raise DomainError(
                f"The station's communication version is {_version_text(version)}; fixing the "
                "cable lock needs 0.0.7 or later (stations made before 31.12.2022 may need a "
                "firmware update).",
                code="version_too_old",
            )
        plugged = list(
            station.connectors.filter(status__in=CAR_PLUGGED).values_list("connector_id", "status")
        )
        if plugged:
            which = ", ".join(f"connector {c} ({s})" for c, s in plugged)
            raise DomainError(
                f"A car is plugged in ({which}). Unplug the car, leave the cable in the "
                "station, then fix the cable lock.",
                code="car_plugged",
            )
    return commands.configuration_set(
        station=station, key=CABLE_LOCK_KEY, value=_bool(not fixed), requested_by=requested_by
    )


def carid_in_use(station: Station, now: datetime | None = None) -> str:
    """Why switching auto car detection off would break CarID (empty: it would not).

    Rule (docs/OCPP.md): CarID is in use at a station when, in the last 30 days, a session
    there started with an identifier that is a registered vehicle's CarID, or when the
    station is in backend mode and a driver who charged there has a vehicle registered.
    Vehicles belong to billing: looked up by app label, never imported."""
    from django.apps import apps

    from stations.models import AuthMode

    try:
        vehicle_model = apps.get_model("billing", "Vehicle")
    except LookupError:  # pragma: no cover - billing not installed
        return ""
    now = now or timezone.now()
    recent_tags = ChargingSession.objects.filter(
        station=station, started_at__gte=now - timedelta(days=CARID_RECENT_DAYS)
    ).values("id_tag")
    if vehicle_model.objects.filter(car_id__in=recent_tags).exists():
        return (
            f"cars identified themselves by CarID at this station in the last "
            f"{CARID_RECENT_DAYS} days"
        )
    if station.auth_mode == AuthMode.BACKEND:
        drivers = ChargingSession.objects.filter(station=station, user_id_ref__isnull=False).values(
            "user_id_ref"
        )
        if vehicle_model.objects.filter(user_id__in=drivers).exists():
            return "drivers who charge here have vehicles registered for CarID"
    return ""


def auto_car_detection_set(
    *, station: Station, enabled: bool, confirmed: bool = False, requested_by: User | None = None
) -> StationCommand:
    """Switch the station's communication with the car (needed for CarID). Switching it off
    while CarID is in use needs ``confirmed`` (the page asks); nothing changes otherwise."""
    from portal.errors import DomainError
    from stations import commands

    if not enabled and not confirmed and (reason := carid_in_use(station)):
        raise DomainError(
            f"CarID is in use: {reason}. Without auto car detection those cars are no longer "
            "recognised and need a card or the app. Confirm to switch it off anyway.",
            code="carid_in_use",
        )
    with transaction.atomic():
        station.auto_car_detection = enabled
        station.save(update_fields=["auto_car_detection"])
        return commands.configuration_set(
            station=station,
            key=auto_car_detection_key(),
            value=_bool(enabled),
            requested_by=requested_by,
        )


def modbus_tcp_set(
    *, station: Station, enabled: bool, requested_by: User | None = None
) -> StationCommand:
    from stations import commands

    with transaction.atomic():
        station.modbus_tcp = enabled
        station.save(update_fields=["modbus_tcp"])
        return commands.configuration_set(
            station=station, key=modbus_tcp_key(), value=_bool(enabled), requested_by=requested_by
        )


def station_delete_confirmed(*, station: Station, typed_name: str) -> None:
    """Delete the station and all its data once the owner typed its name; then the
    connection holding its socket (any process) closes it. Issued invoices keep their lines
    (billing copies the station's name; the session link is cleared)."""
    from portal.errors import DomainError
    from portal.layer import group_send
    from stations import commands

    expected = station.label
    if typed_name.strip() != expected:
        raise DomainError(
            f"Type the station's name exactly ({expected}) to delete it.", code="name_mismatch"
        )
    station_id, organization = station.pk, station.organization
    with transaction.atomic():
        station.delete()

    def disconnect() -> None:
        group_send(commands.station_group(station_id), {"type": "ocpp.deleted"})
        from portal.live import org_group, push

        push(org_group(organization.pk), "station.deleted", data={"station": station_id})

    transaction.on_commit(disconnect)


# --- Station side: third-party relay (stations/relay.py, docs/OCPP.md) ----------------------
# The other backend answers the station; these only record what passed, read-only: no
# authorization, no price (tariff_snapshot None), no driver.


def relay_error_record(station_id: int, error: str, now: datetime) -> None:
    """The other backend did not answer: shown to the owner on the station's pages."""
    Station.objects.filter(pk=station_id).update(relay_error=error[:255], relay_error_at=now)


def relay_error_clear(station_id: int) -> None:
    Station.objects.filter(pk=station_id).exclude(relay_error="").update(
        relay_error="", relay_error_at=None
    )


def relay_boot(
    station_id: int, info: dict[str, str], status: str, interval: int | None, now: datetime
) -> dict[str, str]:
    """The station's BootNotification and the other backend's answer (its status and
    heartbeat interval, which offline detection then uses). No boot event: the portal
    configures nothing on a relayed station."""
    fields = {key: (value or "") for key, value in info.items()}
    if status in RegistrationStatus.values:
        fields["registration_status"] = status
    if isinstance(interval, int) and 0 < interval <= 7 * 86400:
        fields["heartbeat_interval"] = interval
    Station.objects.filter(pk=station_id).update(**fields, last_boot_at=now, last_seen=now)
    return _fragments(station_id)


def relay_session_id(station_id: int, external_id: int | None) -> int | None:
    """Our session of the other backend's transactionId (newest), or None."""
    if external_id is None:
        return None
    return (
        ChargingSession.objects.filter(station_id=station_id, external_transaction_id=external_id)
        .order_by("-started_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )


def relay_start_transaction(
    ref: StationRef,
    connector_id: int,
    id_tag: str,
    meter_start: int,
    timestamp_raw: str,
    timestamp: datetime,
    reservation_id: int | None,
    external_id: int,
    auth_status: str,
    now: datetime,
) -> tuple[int, dict[str, str]]:
    """Record a session the other backend started (its transactionId, its idTagInfo status).
    Idempotent like ``start_transaction``: a re-sent start is the same session (it keeps the
    newest transactionId the backend gave, the one the station uses from then on)."""
    key = _start_key(connector_id, id_tag, timestamp_raw, meter_start)
    existing = ChargingSession.objects.filter(station_id=ref.id, idempotency_key=key).first()
    if existing is not None:
        if existing.external_transaction_id != external_id:
            ChargingSession.objects.filter(pk=existing.pk).update(
                external_transaction_id=external_id
            )
        return existing.pk, {}
    try:
        with transaction.atomic():
            session = ChargingSession.objects.create(
                station_id=ref.id,
                connector_id=connector_id,
                id_tag=id_tag,
                auth_status=auth_status[:20],
                tariff_snapshot=None,
                reservation_id=reservation_id,
                meter_start=meter_start,
                last_meter_wh=meter_start,
                started_at=plausible(timestamp, now),
                station_started_at=timestamp,
                start_received_at=now,
                idempotency_key=key,
                external_transaction_id=external_id,
            )
    except IntegrityError:
        session = ChargingSession.objects.get(station_id=ref.id, idempotency_key=key)
        return session.pk, {}
    _abandon_older_sessions(ref.id, connector_id, session)
    station_event_emit(
        events.SESSION_STARTED,
        ref.id,
        organization_id=ref.organization_id,
        connector_id=connector_id,
        data={"transaction_id": session.pk, "accepted": auth_status == "Accepted"},
    )
    station = Station.objects.select_related("organization").get(pk=ref.id)
    return session.pk, {**station_fragments(station), **sessions_fragment(station)}


def relay_stop_transaction(
    ref: StationRef,
    external_id: int,
    meter_stop: int,
    timestamp: datetime,
    reason: str,
    id_tag: str | None,
    now: datetime,
) -> tuple[int | None, dict[str, str]]:
    """Complete the session of the other backend's transactionId (energy = meterStop −
    meterStart); unknown or already completed: nothing changes."""
    session_id = relay_session_id(ref.id, external_id)
    if session_id is None:
        return None, {}
    session = ChargingSession.objects.get(pk=session_id)
    fragments = _session_complete(ref, session, meter_stop, timestamp, reason, id_tag, now)
    return session.pk, fragments or {}
