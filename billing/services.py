"""Access-and-pricing operations: pricing sessions, driver starts and stops, station modes.

CSV imports are in ``billing/imports.py``, QR labels in ``billing/labels.py``, invoices and
reports in ``billing/invoices.py`` and ``billing/reports.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from billing import pricing
from billing.authorization import authorize, snapshot_tariff
from billing.models import AppTag
from portal.errors import Conflict, DomainError
from portal.models import User
from stations import conf
from stations.authorization import AuthorizationRequest, AuthorizationResult
from stations.commands import command_send, configuration_set, station_reconnect_request
from stations.models import (
    AuthMode,
    ChargingSession,
    Connector,
    SessionStatus,
    Station,
    StationCommand,
)
from stations.services import auto_car_detection_set


@dataclass(frozen=True)
class SessionPrice:
    """What a session costs (``price``) and, when it is free, what it would have cost."""

    price: pricing.PriceBreakdown
    notional: pricing.PriceBreakdown | None

    @property
    def value(self) -> pricing.PriceBreakdown:
        """The notional price of a free session, else the price (for reports)."""
        return self.notional if self.notional is not None else self.price


def session_price(session: ChargingSession, now: datetime | None = None) -> SessionPrice:
    """Price a session from its frozen tariff: energy so far and connected time so far.

    Deterministic: pricing the same session twice gives the same result; a running session is
    priced up to ``now``.
    """
    tariff, source, notional_tariff = snapshot_tariff(session.tariff_snapshot)
    end = session.stopped_at or now or timezone.now()
    connected = max(end - session.started_at, timedelta(0))
    price = pricing.session_price(
        tariff, energy_wh=session.energy_wh, connected=connected, source=source
    )
    notional = None
    if tariff.is_free and notional_tariff is not None:
        notional = pricing.session_price(
            notional_tariff, energy_wh=session.energy_wh, connected=connected, source=source
        )
    return SessionPrice(price, notional)


def app_tag_for(user: User) -> str:
    """The driver's idTag for app and QR starts (created on first use)."""
    return AppTag.objects.get_or_create(user=user)[0].id_tag


def start_decision(user: User, connector: Connector, now: datetime) -> AuthorizationResult:
    """What the station would be told if this driver started now at this connector."""
    station = connector.station
    return authorize(
        AuthorizationRequest(
            organization_id=station.organization_id,
            station_id=station.pk,
            charge_point_id=station.charge_point_id,
            connector_id=connector.connector_id,
            id_tag=app_tag_for(user),
            time=now,
        )
    )


START_REFUSALS = {
    "Invalid": "You may not charge at this connector.",
    "Blocked": "Your access is blocked.",
    "Expired": "Your access has expired.",
    "ConcurrentTx": "You are already charging at another connector; stop that session first.",
}
BUSY_STATUSES = ("Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Reserved")


def charging_start(
    *, user: User, connector: Connector, now: datetime | None = None
) -> StationCommand:
    """App and QR start: decide first (same rules as the station's own request), then send
    RemoteStartTransaction with the driver's app tag. The station answers Accepted/Rejected;
    the session appears when the station sends StartTransaction."""
    now = now or timezone.now()
    station = connector.station
    if station.auth_mode != AuthMode.BACKEND:
        raise DomainError(
            "This station is not unlocked through this portal.", code="not_backend_mode"
        )
    if not station.online:
        raise Conflict("The station is offline; try again when it is connected.", code="offline")
    if connector.status in BUSY_STATUSES or connector.status in ("Unavailable", "Faulted"):
        raise Conflict(
            f"The connector is {connector.get_status_display().lower()}.", code="connector_busy"
        )
    decision = start_decision(user, connector, now)
    if not decision.accepted:
        raise DomainError(START_REFUSALS.get(decision.status, decision.status), code="refused")
    return command_send(
        station=station,
        action="RemoteStartTransaction",
        payload={"connectorId": connector.connector_id, "idTag": app_tag_for(user)},
        requested_by=user,
    )


def charging_stop(*, user: User, session: ChargingSession) -> StationCommand:
    """App stop: only the driver's own running session."""
    if session.user_id_ref != user.pk or session.status != SessionStatus.ACTIVE:
        raise DomainError("This is not a running session of yours.", code="not_yours")
    return command_send(
        station=session.station,
        action="RemoteStopTransaction",
        payload={"transactionId": session.pk},
        requested_by=user,
    )


def auth_mode_configuration(mode: str, third_party_url: str) -> dict[str, str]:
    """The station configuration keys a mode needs (vendor keys: docs/OCPP.md)."""
    wanted: dict[str, str] = {}
    if free_vend := conf.free_vend_key():
        wanted[free_vend] = "true" if mode == AuthMode.NONE else "false"
    if mode == AuthMode.THIRD_PARTY and (url_key := conf.backend_url_key()):
        wanted[url_key] = third_party_url
    return wanted


def station_auth_mode_set(
    *,
    station: Station,
    mode: str,
    third_party_url: str = "",
    auto_car_detection: bool | None = None,
    requested_by: User | None = None,
    check_reachable: bool = True,
) -> list[StationCommand]:
    """Switch how a station is unlocked; the keys the mode needs are configured on the
    station (kept as wanted configuration: re-sent until the station accepts them).

    A third-party URL that is new (or newly chosen) is first checked: a quick websocket
    connection with ocpp1.6, as the station's relay would open it (stations/relay.py). No
    answer → DomainError and nothing changes. ``check_reachable=False`` skips it."""
    from django.core.exceptions import ValidationError

    previous = (station.auth_mode, station.third_party_url, station.auto_car_detection)
    station.auth_mode = mode
    station.third_party_url = third_party_url if mode == AuthMode.THIRD_PARTY else ""
    # Car detection is a station setting with a vendor key of its own: switched through the
    # stations service below (which sends the key and guards CarID), not set here.
    car_detection_change = (
        auto_car_detection is not None and auto_car_detection != station.auto_car_detection
    )
    try:
        station.full_clean(exclude=["password_hash", "organization"])
    except ValidationError as exc:
        raise DomainError(
            " ".join(m for msgs in exc.message_dict.values() for m in msgs), code="invalid"
        ) from exc
    newly_third_party = mode == AuthMode.THIRD_PARTY and previous[:2] != (
        mode,
        station.third_party_url,
    )
    if check_reachable and newly_third_party:
        from stations import relay

        if (
            why := relay.backend_check(station.third_party_url, station.charge_point_id)
        ) is not None:
            url = relay.shown_url(station.third_party_url)
            station.auth_mode, station.third_party_url, station.auto_car_detection = previous
            raise DomainError(
                f"The backend at {url} does not answer: {why}.", code="backend_unreachable"
            )
    relay_changed = (previous[0] == AuthMode.THIRD_PARTY) != (mode == AuthMode.THIRD_PARTY) or (
        mode == AuthMode.THIRD_PARTY and previous[1] != station.third_party_url
    )
    with transaction.atomic():
        station.save(update_fields=["auth_mode", "third_party_url"])
        commands = []
        if car_detection_change:
            try:
                commands.append(
                    auto_car_detection_set(
                        station=station, enabled=auto_car_detection, requested_by=requested_by
                    )
                )
            except DomainError:  # CarID in use: nothing changes (the page says why)
                station.auth_mode, station.third_party_url, station.auto_car_detection = previous
                raise
        commands += [
            configuration_set(station=station, key=key, value=value, requested_by=requested_by)
            for key, value in auth_mode_configuration(mode, station.third_party_url).items()
        ]
        if relay_changed:
            # A connected station is served (or relayed) as it was when it connected: ask it
            # to reconnect, so that the new mode takes effect now.
            station_reconnect_request(station.pk)
        return commands
