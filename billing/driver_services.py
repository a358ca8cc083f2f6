"""A driver's own identifiers: RFID cards they add by UID, vehicles for CarID.

Every operation takes the acting user and works only on that user's rows; a row of another
user is treated as missing by the selectors that load it (the views answer 404). A UID or a
car identifier belongs to at most one user: a clash is refused without saying whose it is.
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import selectors, services
from billing.models import RfidCard, Vehicle, car_id_validator, normalize_uid, uid_validator
from portal.errors import Conflict, DomainError
from portal.models import Membership, User
from stations.models import ChargingSession, Connector, StationCommand

LABEL_MAX = 80


def _label(label: str) -> str:
    label = (label or "").strip()
    if len(label) > LABEL_MAX:
        raise DomainError(
            _("The label is too long: at most %(max)d characters.") % {"max": LABEL_MAX},
            code="invalid",
        )
    return label


def _validated(value: str, validator, what: str) -> str:
    normalized = normalize_uid(value)
    if not normalized:
        raise DomainError(_("Enter the %(what)s.") % {"what": what}, code="invalid")
    try:
        validator(normalized)
    except ValidationError as exc:
        raise DomainError(
            _("%(value)s is not a valid %(what)s: %(rule)s")
            % {"value": value.strip(), "what": what, "rule": " ".join(exc.messages)},
            code="invalid",
        ) from exc
    return normalized


def card_add(*, user: User, uid: str, label: str = "") -> RfidCard:
    """Register a card for the driver (no organization: the driver's own card).

    The UID is normalized (``de:ad:be:ef`` → ``DEADBEEF``). If any card anywhere already has
    this UID the answer is the same, whoever holds it, so that nobody can probe whose it is.
    """
    normalized = _validated(uid, uid_validator, _("card UID"))
    label = _label(label)
    taken = Conflict(_("This card is already registered."), code="duplicate_uid")
    if RfidCard.objects.filter(uid=normalized).exists():
        raise taken
    try:
        with transaction.atomic():  # the unique index settles a race between two adds
            return RfidCard.objects.create(user=user, uid=normalized, label=label)
    except IntegrityError as exc:
        raise taken from exc


def card_block(*, user: User, card: RfidCard, blocked: bool = True) -> RfidCard:
    """Block (lost card) or unblock one of the driver's cards.

    An organization's card that was handed to the driver may be blocked by the driver (it is
    theirs to lose) but only unblocked by the organization that blocked or issued it.
    """
    _check_own(user, card)
    if not blocked and card.organization_id is not None and card.blocked:
        raise DomainError(
            _("This card was issued by a station owner; ask them to unblock it."),
            code="issued_card",
        )
    card.blocked = blocked
    card.save(update_fields=["blocked"])
    return card


def card_expiry_set(*, user: User, card: RfidCard, expires_at: datetime | None) -> RfidCard:
    """Give one of the driver's own cards an expiry (or none)."""
    _check_own(user, card)
    if card.organization_id is not None:
        raise DomainError(
            _("This card was issued by a station owner; ask them to change it."),
            code="issued_card",
        )
    card.expires_at = expires_at
    card.save(update_fields=["expires_at"])
    return card


def card_remove(*, user: User, card: RfidCard) -> None:
    """Delete a card the driver added. A card an owner issued is blocked instead: the owner's
    records (and past sessions) keep referring to it."""
    _check_own(user, card)
    if card.organization_id is not None:
        raise DomainError(
            _("This card was issued by a station owner: block it, or ask them to remove it."),
            code="issued_card",
        )
    card.delete()


def _check_own(user: User, card: RfidCard) -> None:
    # Views load cards through selectors.driver_cards(user) already; this guards other callers.
    if card.user_id != user.pk:
        raise DomainError(_("This is not one of your cards."), code="not_yours")


def vehicle_add(*, user: User, car_id: str, label: str = "") -> Vehicle:
    """Register a car by the identifier a station with auto car detection reads from it."""
    normalized = _validated(car_id, car_id_validator, _("car identifier"))
    label = _label(label)
    taken = Conflict(_("This car identifier is already registered."), code="duplicate_car_id")
    if Vehicle.objects.filter(car_id=normalized).exists():
        raise taken
    try:
        with transaction.atomic():
            return Vehicle.objects.create(user=user, car_id=normalized, label=label)
    except IntegrityError as exc:
        raise taken from exc


def vehicle_remove(*, user: User, vehicle: Vehicle) -> None:
    if vehicle.user_id != user.pk:
        raise DomainError(_("This is not one of your vehicles."), code="not_yours")
    vehicle.delete()


def driver_charging_start(
    *, user: User, connector: Connector, now: datetime | None = None
) -> StationCommand:
    """App and QR start by a driver: refuse a connector that is not open to them before
    anything else, so that the answer for someone else's private connector says nothing about
    it (online or not, busy or not); then the service decides and sends RemoteStart."""
    now = now or timezone.now()
    connector_access = getattr(connector, "access", None)
    if connector_access is None:  # never opened: private, the owner's organization only
        allowed = Membership.objects.filter(
            user=user, organization_id=connector.station.organization_id
        ).exists()
    else:
        standing = selectors.driver_standing(user)
        allowed = selectors.price_for(standing, connector_access, now).allowed
    if not allowed:
        raise DomainError(_("You may not charge at this connector."), code="refused")
    return services.charging_start(user=user, connector=connector, now=now)


def driver_charging_stop(*, user: User, session: ChargingSession) -> StationCommand:
    """App stop of the driver's own running session (loaded through the driver's selectors)."""
    return services.charging_stop(user=user, session=session)
