"""Reads for drivers: the connectors open to them with the price they would pay, their cards,
vehicles, sessions (priced) and the commands they sent.

Everything a driver reads is filtered by the driver (``user``) here, so a view can never show
another driver's row: what is not theirs is missing (404).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from billing import pricing
from billing.authorization import access_at
from billing.models import (
    Access,
    ConnectorAccess,
    RfidCard,
    SpecialUser,
    Tariff,
    UserGroupMember,
    Vehicle,
)
from billing.services import BUSY_STATUSES, SessionPrice, session_price
from portal.models import Membership, User
from stations.models import AuthMode, ChargingSession, SessionStatus, StationCommand

# --- Who the driver is to each organization -------------------------------------------------


@dataclass(frozen=True)
class DriverStanding:
    """What the driver is to station owners: member of some, special user or group member
    of others, with the prices named for them. Loaded once per request (three queries)."""

    member_of: frozenset[int] = frozenset()
    special_at: frozenset[int] = frozenset()  # special user or member of a user group
    individual: dict[int, Tariff] = field(default_factory=dict)  # organization id → tariff
    group: dict[int, Tariff] = field(default_factory=dict)  # the cheapest group price


def driver_standing(user: User | None) -> DriverStanding:
    if user is None or not user.is_authenticated:
        return DriverStanding()
    member_of = frozenset(
        Membership.objects.filter(user=user).values_list("organization_id", flat=True)
    )
    special_at: set[int] = set()
    individual: dict[int, Tariff] = {}
    for special in SpecialUser.objects.filter(user=user).select_related("tariff"):
        special_at.add(special.organization_id)
        if special.tariff is not None:
            individual[special.organization_id] = special.tariff
    group: dict[int, Tariff] = {}
    for member in UserGroupMember.objects.filter(user=user).select_related("group__tariff"):
        org_id, tariff = member.group.organization_id, member.group.tariff
        special_at.add(org_id)
        # The same choice as the decision (billing.authorization): the cheapest group price.
        if tariff is not None and (
            org_id not in group or _cheapness(tariff) < _cheapness(group[org_id])
        ):
            group[org_id] = tariff
    return DriverStanding(member_of, frozenset(special_at), individual, group)


def _cheapness(tariff: Tariff) -> tuple:
    return (tariff.per_kwh, tariff.per_hour, tariff.pk)


@dataclass(frozen=True)
class DriverPrice:
    """Whether the driver may charge at a connector now, and at what price.

    ``public`` is the connector's public price when the connector is public now (what an
    anonymous visitor of the QR page sees), else None.
    """

    access: str  # the access that applies now (time rules included)
    allowed: bool
    tariff: pricing.Tariff | None
    source: pricing.TariffSource | None
    public: pricing.Tariff | None


def price_for(
    standing: DriverStanding, connector_access: ConnectorAccess, now: datetime
) -> DriverPrice:
    """The same precedence as the decision (billing.authorization.authorize), without sending
    anything, creating an app tag or checking a running session: for showing, not starting.

    ``connector_access`` needs ``connector__station`` and ``tariff`` loaded and ``rules``
    prefetched to keep a list to one query.
    """
    station = connector_access.connector.station
    local = now.astimezone(ZoneInfo(station.time_zone))
    access = access_at(connector_access.access, list(connector_access.rules.all()), local)
    tariff = connector_access.tariff
    public_pricing = tariff.as_pricing() if tariff is not None else None
    shown_public = (public_pricing or pricing.FREE) if access == Access.PUBLIC else None
    org_id = station.organization_id
    if station.auth_mode == AuthMode.NONE:  # anyone who plugs in charges, free
        return DriverPrice(access, True, pricing.FREE, pricing.TariffSource.PRIVATE, pricing.FREE)
    if station.auth_mode != AuthMode.BACKEND:
        return DriverPrice(access, False, None, None, None)
    if org_id in standing.member_of:  # the owner charges free at every own connector
        return DriverPrice(access, True, pricing.FREE, pricing.TariffSource.PRIVATE, shown_public)
    special = org_id in standing.special_at
    if access == Access.PRIVATE or (access == Access.LIMITED and not special):
        return DriverPrice(access, False, None, None, shown_public)
    individual = standing.individual.get(org_id)
    group = standing.group.get(org_id)
    chosen, source = pricing.applicable_tariff(
        private=False,
        individual=individual.as_pricing() if individual is not None else None,
        group=group.as_pricing() if group is not None else None,
        public=public_pricing or pricing.FREE,
    )
    return DriverPrice(access, True, chosen, source, shown_public)


# --- Connectors open to the driver ----------------------------------------------------------


@dataclass(frozen=True)
class OpenConnector:
    connector_access: ConnectorAccess
    price: DriverPrice

    @property
    def connector(self):
        return self.connector_access.connector

    @property
    def station(self):
        return self.connector_access.connector.station

    @property
    def code(self) -> str:
        return self.connector_access.code

    @property
    def available(self) -> bool:
        """Startable now: station connected, connector neither busy nor out of order."""
        return connector_startable(self.connector_access)


def connector_startable(connector_access: ConnectorAccess) -> bool:
    connector = connector_access.connector
    return connector.station.online and connector.status not in (
        *BUSY_STATUSES,
        "Unavailable",
        "Faulted",
    )


def _with_related(queryset: QuerySet) -> QuerySet:
    return queryset.select_related("connector__station", "tariff").prefetch_related("rules")


def connector_access_by_code(code: str) -> ConnectorAccess:
    """The connector behind a printed label's code, or 404 (the QR page is public)."""
    return get_object_or_404(_with_related(ConnectorAccess.objects.all()), code=code)


def connectors_open_to(user: User, now: datetime | None = None) -> list[OpenConnector]:
    """Connectors of stations unlocked by this portal where the driver may charge now: public
    ones (by their access now: time rules included) and those of owners who named the driver
    a special user or put them in a user group, with live availability and the driver's price.

    Candidates are narrowed in the database (public by default or by some rule, or of an
    owner who knows the driver); the time rules are evaluated here, in each station's zone.
    """
    now = now or timezone.now()
    standing = driver_standing(user)
    maybe_open = Q(access=Access.PUBLIC) | Q(rules__access=Access.PUBLIC)
    if standing.special_at:
        maybe_open |= Q(connector__station__organization_id__in=standing.special_at)
    candidates = _with_related(
        ConnectorAccess.objects.filter(
            pk__in=ConnectorAccess.objects.filter(maybe_open).values("pk"),
            connector__station__auth_mode=AuthMode.BACKEND,
            connector__station__enabled=True,
        ).order_by(
            "connector__station__name",
            "connector__station__charge_point_id",
            "connector__connector_id",
        )
    )
    found = []
    for connector_access in candidates:
        price = price_for(standing, connector_access, now)
        if price.allowed:
            found.append(OpenConnector(connector_access, price))
    return found


# --- The driver's own rows ------------------------------------------------------------------


def driver_cards(user: User) -> QuerySet[RfidCard]:
    return RfidCard.objects.filter(user=user).select_related("organization").order_by("uid")


def driver_card(user: User, pk: int) -> RfidCard:
    return get_object_or_404(driver_cards(user), pk=pk)


def driver_vehicles(user: User) -> QuerySet[Vehicle]:
    return Vehicle.objects.filter(user=user)


def driver_vehicle(user: User, pk: int) -> Vehicle:
    return get_object_or_404(driver_vehicles(user), pk=pk)


def driver_sessions(user: User) -> QuerySet[ChargingSession]:
    """The driver's sessions, newest first (``user_id_ref`` is set by the decision)."""
    return ChargingSession.objects.filter(user_id_ref=user.pk).select_related("station")


def driver_session(user: User, pk: int) -> ChargingSession:
    return get_object_or_404(driver_sessions(user), pk=pk)


def driver_running_sessions(user: User) -> QuerySet[ChargingSession]:
    return driver_sessions(user).filter(status=SessionStatus.ACTIVE)


def driver_commands(user: User) -> QuerySet[StationCommand]:
    """Start and stop commands the driver sent (to show their result)."""
    return StationCommand.objects.filter(
        requested_by=user, action__in=("RemoteStartTransaction", "RemoteStopTransaction")
    ).select_related("station")


def driver_command(user: User, pk: int) -> StationCommand:
    return get_object_or_404(driver_commands(user), pk=pk)


@dataclass(frozen=True)
class SessionRow:
    session: ChargingSession
    price: SessionPrice
    duration: timedelta

    @property
    def running(self) -> bool:
        return self.session.status == SessionStatus.ACTIVE

    @property
    def duration_text(self) -> str:
        return format_duration(self.duration)

    @property
    def power_kw(self) -> Decimal | None:
        """The last reported power (live while charging), in kW to one decimal."""
        if self.session.power_w is None:
            return None
        return (Decimal(str(self.session.power_w)) / 1000).quantize(Decimal("0.1"))


def session_rows(
    sessions: Iterable[ChargingSession], now: datetime | None = None
) -> list[SessionRow]:
    """Each session with its cost (a running one up to ``now``) and how long it is connected."""
    now = now or timezone.now()
    rows = []
    for session in sessions:
        end = session.stopped_at or now
        rows.append(
            SessionRow(
                session,
                session_price(session, now=now),
                max(end - session.started_at, timedelta(0)),
            )
        )
    return rows


CSV_COLUMNS = [
    "session_id",
    "station",
    "connector",
    "started",
    "stopped",
    "kwh",
    "duration",
    "price",
    "currency",
    "vat_percent",
    "vat",
]


def format_duration(duration: timedelta) -> str:
    """``H:MM:SS`` (hours may exceed 24: a car left plugged in over the weekend)."""
    seconds = int(duration.total_seconds())
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _cell(value: str) -> str:
    # A station name is free text from an owner: keep spreadsheets from running it as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def sessions_csv(rows: Iterable[SessionRow]) -> str:
    """The driver's sessions as CSV; money and energy as exact decimal strings, times in UTC
    ISO 8601."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        session, price = row.session, row.price.price
        writer.writerow(
            [
                session.pk,
                _cell(session.station.label),
                session.connector_id,
                session.started_at.astimezone(ZoneInfo("UTC")).isoformat(),
                session.stopped_at.astimezone(ZoneInfo("UTC")).isoformat()
                if session.stopped_at
                else "",
                str(price.energy_kwh),
                format_duration(row.duration),
                str(price.total),
                price.currency,
                str(price.vat_percent),
                str(price.vat_amount),
            ]
        )
    return out.getvalue()
