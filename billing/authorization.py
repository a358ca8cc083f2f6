"""The authorization decision: (station, connector, identifier, time) → status + tariff.

Called by stations through ``stations.authorization.authorize`` (the dotted path in
``OCPP_AUTHORIZE_POLICY``) for Authorize, StartTransaction and StopTransaction, and by the
portal's own app and QR starts before it sends RemoteStartTransaction. Rules (DESIGN.md):

- authentication mode ``none``: everything is accepted and free (no driver to bill); the
  session belongs to the station, with the connector's price kept as its notional value.
  ``ocpp_third_party``: this portal does not unlock the station: Invalid (such a station's
  traffic is relayed to its own backend, which answers; see stations/relay.py).
- the identifier is an RFID card UID, a driver's app tag (app and QR starts) or, only on
  stations with auto car detection, a vehicle's CarID. Unknown: Invalid. A blocked card:
  Blocked; past its expiry: Expired.
- who: the owner (a member of the station's organization, or one of the organization's own
  cards) charges free at every connector of the owner; a special user (named by the owner, or
  in one of the owner's user groups) may charge at limited and public connectors; anyone else
  only at public ones.
- price precedence: individual > group (the cheapest of the driver's groups) > the connector's.
- one transaction per identifier: the same identifier charging at another connector is
  ConcurrentTx.

The access that applies is the connector's, unless one of its time rules covers the moment
in the station's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing import pricing
from billing.models import (
    Access,
    AccessRule,
    AppTag,
    RfidCard,
    SpecialUser,
    Tariff,
    UserGroup,
    Vehicle,
    normalize_uid,
)
from portal.models import Membership
from stations.authorization import (
    ACCEPTED,
    BLOCKED,
    CONCURRENT_TX,
    EXPIRED,
    INVALID,
    AuthorizationRequest,
    AuthorizationResult,
)
from stations.models import AuthMode, ChargingSession, Connector, SessionStatus, Station

ACCESS_RANK = {Access.PRIVATE: 0, Access.LIMITED: 1, Access.PUBLIC: 2}


@dataclass(frozen=True)
class Identity:
    kind: str  # "card", "app", "car"
    user_id: int | None
    card: RfidCard | None = None
    owner_card: bool = False  # one of the station organization's own cards, without a user


def access_at(default: str, rules: list[AccessRule], local: datetime) -> str:
    """The access that applies at ``local`` (a naive or aware time in the station's zone)."""
    weekday = str(local.isoweekday())
    previous_day = str((local.isoweekday() - 2) % 7 + 1)
    now = local.time().replace(tzinfo=None)
    for rule in rules:
        start, end = rule.start_time, rule.end_time
        if start < end:
            if weekday in rule.weekdays and start <= now < end:
                return rule.access
        elif (weekday in rule.weekdays and now >= start) or (
            previous_day in rule.weekdays and now < end
        ):  # over midnight: the part after midnight belongs to the day the window started
            return rule.access
    return default


def tariff_snapshot(
    tariff: pricing.Tariff,
    source: pricing.TariffSource,
    *,
    name: str = "",
    notional: pricing.Tariff | None = None,
) -> dict:
    """The frozen tariff as JSON (strings for Decimals, never floats)."""

    def plain(t: pricing.Tariff) -> dict:
        return {
            "per_kwh": str(t.per_kwh),
            "per_hour": str(t.per_hour),
            "currency": t.currency,
            "vat_percent": str(t.vat_percent),
        }

    snapshot = {**plain(tariff), "source": str(source), "name": name}
    snapshot["notional"] = plain(notional) if notional is not None else None
    return snapshot


def _identify(station: Station, id_tag: str) -> Identity | None:
    tag = normalize_uid(id_tag)
    card = (
        RfidCard.objects.filter(uid=tag)
        .only("id", "organization_id", "user_id", "blocked", "expires_at")
        .first()
    )
    if card is not None:
        if card.user_id is None:
            if card.organization_id != station.organization_id:
                return None  # another organization's own card: unknown here
            return Identity("card", None, card, owner_card=True)
        return Identity("card", card.user_id, card)
    app = AppTag.objects.filter(id_tag=id_tag.strip()).only("user_id").first()
    if app is not None:
        return Identity("app", app.user_id)
    if station.auto_car_detection:
        vehicle = Vehicle.objects.filter(car_id=tag).only("user_id").first()
        if vehicle is not None:
            return Identity("car", vehicle.user_id)
    return None


ConnectorChoice = tuple[int, str, Tariff | None, list[AccessRule]]


def _connector_accesses(station: Station, connector_id: int | None) -> list[ConnectorChoice]:
    """(connector number, default access, public tariff, time rules) for one connector or all
    of the station's. A connector without access settings (or not reported yet) is private."""
    connectors = Connector.objects.filter(station=station).select_related("access__tariff")
    if connector_id is not None:
        connectors = connectors.filter(connector_id=connector_id)
    connectors = list(connectors.prefetch_related("access__rules"))
    choices: list[ConnectorChoice] = []
    for connector in connectors:
        access = getattr(connector, "access", None)
        if access is None:
            choices.append((connector.connector_id, Access.PRIVATE, None, []))
        else:
            choices.append(
                (connector.connector_id, access.access, access.tariff, list(access.rules.all()))
            )
    if not choices:  # nothing reported yet: private until the owner opens it
        choices.append((connector_id or 0, Access.PRIVATE, None, []))
    return choices


def _is_owner(station: Station, identity: Identity) -> bool:
    if identity.owner_card:
        return True
    return Membership.objects.filter(
        organization_id=station.organization_id, user_id=identity.user_id
    ).exists()


def _special_tariffs(station: Station, user_id: int) -> tuple[bool, Tariff | None, Tariff | None]:
    """(is special user, individual tariff, best group tariff)."""
    special = (
        SpecialUser.objects.filter(organization_id=station.organization_id, user_id=user_id)
        .select_related("tariff")
        .first()
    )
    groups = list(
        UserGroup.objects.filter(
            organization_id=station.organization_id, memberships__user_id=user_id
        ).select_related("tariff")
    )
    priced = [g.tariff for g in groups if g.tariff is not None]
    group_tariff = min(priced, key=lambda t: (t.per_kwh, t.per_hour, t.pk)) if priced else None
    individual = special.tariff if special is not None else None
    return (special is not None or bool(groups)), individual, group_tariff


def _concurrent(request: AuthorizationRequest, station: Station, id_tag: str) -> bool:
    """The identifier already has a running transaction at another connector."""
    # As sent and normalized: both spellings of one card are one identifier.
    tags = {id_tag, normalize_uid(id_tag)}
    running = ChargingSession.objects.filter(id_tag__in=tags, status=SessionStatus.ACTIVE)
    if request.connector_id is None:
        # Authorize: a tag presented at the station where it charges may be a stop.
        return running.exclude(station_id=station.pk).exists()
    return running.exclude(station_id=station.pk, connector_id=request.connector_id).exists()


def authorize(request: AuthorizationRequest) -> AuthorizationResult:
    station = (
        Station.objects.filter(pk=request.station_id)
        .only("id", "organization_id", "auth_mode", "auto_car_detection", "time_zone")
        .first()
    )
    if station is None:
        return AuthorizationResult(status=INVALID, reason="unknown station")
    accesses = _connector_accesses(station, request.connector_id)
    if station.auth_mode == AuthMode.THIRD_PARTY:
        return AuthorizationResult(status=INVALID, reason="station is managed by another backend")
    if station.auth_mode == AuthMode.NONE:
        public = next((t for _, _, t, _ in accesses if t is not None), None)
        notional = public.as_pricing() if public else None
        return AuthorizationResult(
            status=ACCEPTED,
            tariff=tariff_snapshot(pricing.FREE, pricing.TariffSource.PRIVATE, notional=notional),
            reason="no authentication: charges when plugged in",
        )

    identity = _identify(station, request.id_tag)
    if identity is None:
        return AuthorizationResult(status=INVALID, reason="unknown identifier")
    card = identity.card
    ids = {"user_id": identity.user_id, "card_id": card.id if card else None}
    if card is not None and card.blocked:
        return AuthorizationResult(status=BLOCKED, reason="card blocked", **ids)
    if card is not None and card.expires_at is not None and card.expires_at <= request.time:
        return AuthorizationResult(
            status=EXPIRED, expiry_date=card.expires_at, reason="card expired", **ids
        )
    expiry = card.expires_at if card is not None else None

    owner = _is_owner(station, identity)
    special, individual, group = (
        (False, None, None)
        if owner or identity.user_id is None
        else _special_tariffs(station, identity.user_id)
    )
    local = request.time.astimezone(ZoneInfo(station.time_zone))
    best: tuple[pricing.Tariff, pricing.TariffSource, str, pricing.Tariff | None] | None = None
    for _number, default_access, public, rules in accesses:
        access = access_at(default_access, rules, local)
        public_pricing = public.as_pricing() if public is not None else None
        if owner:
            choice = (pricing.FREE, pricing.TariffSource.PRIVATE, "", public_pricing)
        elif access == Access.PRIVATE or (access == Access.LIMITED and not special):
            continue
        else:
            try:
                tariff, source = pricing.applicable_tariff(
                    private=False,
                    individual=individual.as_pricing() if individual else None,
                    group=group.as_pricing() if group else None,
                    public=public_pricing or pricing.FREE,
                )
            except LookupError:
                continue
            name = {
                pricing.TariffSource.INDIVIDUAL: individual.name if individual else "",
                pricing.TariffSource.GROUP: group.name if group else "",
            }.get(source, public.name if public else "")
            notional = public_pricing if tariff.is_free else None
            choice = (tariff, source, name, notional)
        if best is None:
            best = choice
    if best is None:
        reason = "not allowed at this connector" if accesses else "connector not open"
        return AuthorizationResult(status=INVALID, reason=reason, **ids)
    if _concurrent(request, station, request.id_tag):
        return AuthorizationResult(status=CONCURRENT_TX, reason="already charging elsewhere", **ids)
    tariff, source, name, notional = best
    return AuthorizationResult(
        status=ACCEPTED,
        expiry_date=expiry,
        tariff=tariff_snapshot(tariff, source, name=name, notional=notional),
        reason="owner" if owner else f"{source} price",
        **ids,
    )


def snapshot_tariff(
    snapshot: dict | None,
) -> tuple[pricing.Tariff, pricing.TariffSource, pricing.Tariff | None]:
    """The tariff, its source and the notional tariff from a stored snapshot."""
    if not snapshot:
        return pricing.FREE, pricing.TariffSource.PRIVATE, None

    def parse(data: dict) -> pricing.Tariff:
        return pricing.Tariff(
            per_kwh=Decimal(data["per_kwh"]),
            per_hour=Decimal(data["per_hour"]),
            currency=data["currency"],
            vat_percent=Decimal(data["vat_percent"]),
        )

    notional = parse(snapshot["notional"]) if snapshot.get("notional") else None
    return parse(snapshot), pricing.TariffSource(snapshot.get("source", "public")), notional
