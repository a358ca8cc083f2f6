"""The owner's operations on access and prices: tariffs, connector access and its time rules,
special users, user groups and their members, the organization's RFID cards, station
authentication settings.

Every function takes objects already scoped to the tenant (views and viewsets fetch them via
``for_tenant``) and checks that any other object it is handed (a tariff) belongs to the same
organization, so a forged id from another tenant is refused here as well. Field validation
raises ``ValidationError`` with a message per field (forms and the API show it next to the
field); rules of the domain raise ``DomainError``/``Conflict``. CSV imports are in
``billing/imports.py``.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from billing import pricing
from billing.models import (
    Access,
    AccessRule,
    ConnectorAccess,
    Currency,
    RfidCard,
    SpecialUser,
    Tariff,
    UserGroup,
    UserGroupMember,
    normalize_uid,
    uid_validator,
    validate_weekdays,
)
from billing.services import station_auth_mode_set
from portal.errors import Conflict, DomainError
from portal.models import Organization, User
from stations.models import AuthMode, Connector, Station, StationCommand

# --- accounts -----------------------------------------------------------------------------


def user_by_account_name(account_name: str) -> User:
    """The user with this account name (case-insensitive), or a clear refusal."""
    name = (account_name or "").strip()
    user = User.objects.filter(username__iexact=name).first() if name else None
    if user is None:
        raise DomainError(
            _("No account named '%(name)s'.") % {"name": name}, code="unknown_account"
        )
    return user


def _same_org(organization_id: int, tariff: Tariff | None) -> None:
    # Views and serializers offer only the org's tariffs; this guards forged ids.
    if tariff is not None and tariff.organization_id != organization_id:
        raise DomainError(_("Unknown price."), code="unknown_tariff")


# --- tariffs ------------------------------------------------------------------------------


def tariff_check(
    *, per_kwh: Any, per_hour: Any, currency: str, vat_percent: Any
) -> dict[str, list[str]]:
    """Field errors of a tariff with the pricing core's own messages ("The price per kWh
    cannot be negative."), one field at a time so each message lands next to its field."""
    errors: dict[str, list[str]] = {}
    values = {"per_kwh": per_kwh, "per_hour": per_hour, "vat_percent": vat_percent}
    for field, value in values.items():
        if value is None:
            errors[field] = [_("Enter a number.")]
            continue
        try:
            pricing.Tariff(**{field: Decimal(str(value).strip())})
        except InvalidOperation:
            errors[field] = [_("Enter a number, e.g. 0.45.")]
        except pricing.PricingError as exc:
            errors[field] = [str(exc)]
    if currency not in Currency.values:
        errors["currency"] = [_("Unknown currency: use CHF or EUR.")]
    return errors


def _tariff_save(tariff: Tariff) -> Tariff:
    errors = tariff_check(
        per_kwh=tariff.per_kwh,
        per_hour=tariff.per_hour,
        currency=tariff.currency,
        vat_percent=tariff.vat_percent,
    )
    tariff.name = (tariff.name or "").strip()
    if not tariff.name:
        errors["name"] = [_("Give the price a name, e.g. 'Public' or 'Staff'.")]
    elif (
        Tariff.objects.filter(organization_id=tariff.organization_id, name__iexact=tariff.name)
        .exclude(pk=tariff.pk)
        .exists()
    ):
        errors["name"] = [_("A price named '%(name)s' already exists.") % {"name": tariff.name}]
    if errors:
        raise ValidationError(errors)
    # Digits and decimal places (max_digits) are the model fields' to check.
    tariff.clean_fields(exclude=["organization"])
    tariff.save()
    return tariff


def tariff_create(
    *,
    organization: Organization,
    name: str,
    per_kwh: Decimal = Decimal("0"),
    per_hour: Decimal = Decimal("0"),
    currency: str = Currency.CHF,
    vat_percent: Decimal = Decimal("8.1"),
) -> Tariff:
    return _tariff_save(
        Tariff(
            organization=organization,
            name=name,
            per_kwh=per_kwh,
            per_hour=per_hour,
            currency=currency,
            vat_percent=vat_percent,
        )
    )


def tariff_update(*, tariff: Tariff, **fields: Any) -> Tariff:
    """Change a tariff. Past sessions keep their frozen snapshot (billing.authorization)."""
    for field in ("name", "per_kwh", "per_hour", "currency", "vat_percent"):
        if field in fields:
            setattr(tariff, field, fields[field])
    return _tariff_save(tariff)


def tariff_uses(tariff: Tariff) -> list[str]:
    """Where a tariff is in use, for the refusal to delete it."""
    uses = [
        _("connector %(c)s") % {"c": a.connector}
        for a in tariff.connectors.select_related("connector__station")
    ]
    uses += [
        _("special user %(u)s") % {"u": s.user.username}
        for s in tariff.special_users.select_related("user")
    ]
    uses += [_("group %(g)s") % {"g": g.name} for g in tariff.user_groups.all()]
    return uses


def tariff_delete(*, tariff: Tariff) -> None:
    """Refused while connectors, special users or groups use it (the models PROTECT it)."""
    try:
        with transaction.atomic():
            tariff.delete()
    except ProtectedError as exc:
        raise Conflict(
            _("The price '%(name)s' is still used by %(uses)s; choose another price there first.")
            % {"name": tariff.name, "uses": ", ".join(tariff_uses(tariff))},
            code="tariff_in_use",
        ) from exc


# --- connector access and time rules ------------------------------------------------------


def connector_access_for(connector: Connector) -> ConnectorAccess:
    """The connector's access row, created (private, as a missing row means) on first edit."""
    return ConnectorAccess.objects.get_or_create(
        connector=connector, defaults={"access": Access.PRIVATE}
    )[0]


def _access_check(access: str) -> None:
    if access not in Access.values:
        raise ValidationError(
            {"access": [_("Choose private, limited or public, not '%(a)s'.") % {"a": access}]}
        )


def connector_access_set(
    *,
    connector: Connector,
    access: str,
    tariff: Tariff | None,
    rules: list[dict[str, Any]] | None = None,
) -> ConnectorAccess:
    """Set a connector's access and public price; ``rules`` (when given) replace its time
    rules in order. All or nothing: a bad rule leaves the connector as it was."""
    _access_check(access)
    _same_org(connector.station.organization_id, tariff)
    with transaction.atomic():
        row = connector_access_for(connector)
        row.access = access
        row.tariff = tariff
        row.save(update_fields=["access", "tariff"])
        if rules is not None:
            row.rules.all().delete()
            for n, rule in enumerate(rules):
                try:
                    access_rule_add(connector_access=row, **rule)
                except ValidationError as exc:
                    raise ValidationError(
                        {
                            "rules": [
                                _("Rule %(n)s: %(e)s") % {"n": n + 1, "e": m} for m in _flat(exc)
                            ]
                        }
                    ) from exc
    return row


def _flat(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [f"{field}: {m}" for field, msgs in exc.message_dict.items() for m in msgs]
    return list(exc.messages)


def access_rule_add(
    *,
    connector_access: ConnectorAccess,
    weekdays: str,
    start_time: time,
    end_time: time,
    access: str,
) -> AccessRule:
    """Append a time rule (the first matching rule wins, so new ones go last)."""
    weekdays = "".join(sorted(set(weekdays or "")))
    errors: dict[str, list[str]] = {}
    try:
        validate_weekdays(weekdays)
    except ValidationError as exc:
        errors["weekdays"] = [
            _("Choose at least one weekday.") if not weekdays else exc.messages[0]
        ]
    if access not in Access.values:
        errors["access"] = [_("Choose private, limited or public.")]
    if start_time is None:
        errors["start_time"] = [_("Enter a start time.")]
    if end_time is None:
        errors["end_time"] = [_("Enter an end time.")]
    elif start_time == end_time:
        errors["end_time"] = [_("The window is empty: start and end are the same time.")]
    if errors:
        raise ValidationError(errors)
    last = connector_access.rules.order_by("-position").values_list("position", flat=True).first()
    return AccessRule.objects.create(
        connector_access=connector_access,
        position=0 if last is None else last + 1,
        weekdays=weekdays,
        start_time=start_time,
        end_time=end_time,
        access=access,
    )


def access_rule_remove(*, rule: AccessRule) -> None:
    rule.delete()


# --- special users ------------------------------------------------------------------------


def special_user_add(
    *, organization: Organization, account_name: str, tariff: Tariff | None = None, note: str = ""
) -> SpecialUser:
    user = user_by_account_name(account_name)
    _same_org(organization.pk, tariff)
    if SpecialUser.objects.filter(organization=organization, user=user).exists():
        raise Conflict(
            _("'%(name)s' is already a special user.") % {"name": user.username},
            code="already_special",
        )
    try:
        with transaction.atomic():
            return SpecialUser.objects.create(
                organization=organization, user=user, tariff=tariff, note=note.strip()
            )
    except IntegrityError as exc:  # a concurrent add of the same name
        raise Conflict(
            _("'%(name)s' is already a special user.") % {"name": user.username},
            code="already_special",
        ) from exc


def special_user_update(
    *, special_user: SpecialUser, tariff: Tariff | None, note: str | None = None
) -> SpecialUser:
    _same_org(special_user.organization_id, tariff)
    special_user.tariff = tariff
    if note is not None:
        special_user.note = note.strip()
    special_user.save(update_fields=["tariff", "note"])
    return special_user


def special_user_remove(*, special_user: SpecialUser) -> None:
    special_user.delete()


# --- user groups --------------------------------------------------------------------------


def _group_name_check(organization_id: int, name: str, exclude_pk: int | None = None) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": [_("Give the group a name.")]})
    if (
        UserGroup.objects.filter(organization_id=organization_id, name__iexact=name)
        .exclude(pk=exclude_pk)
        .exists()
    ):
        raise ValidationError(
            {"name": [_("A group named '%(name)s' already exists.") % {"name": name}]}
        )
    return name


def group_create(
    *, organization: Organization, name: str, tariff: Tariff | None = None
) -> UserGroup:
    name = _group_name_check(organization.pk, name)
    _same_org(organization.pk, tariff)
    return UserGroup.objects.create(organization=organization, name=name, tariff=tariff)


def group_update(*, group: UserGroup, **fields: Any) -> UserGroup:
    if "name" in fields:
        group.name = _group_name_check(group.organization_id, fields["name"], group.pk)
    if "tariff" in fields:
        _same_org(group.organization_id, fields["tariff"])
        group.tariff = fields["tariff"]
    group.save(update_fields=["name", "tariff"])
    return group


def group_delete(*, group: UserGroup) -> None:
    group.delete()


def group_member_add(*, group: UserGroup, account_name: str) -> tuple[UserGroupMember, bool]:
    """Add a driver by account name; adding an existing member again changes nothing."""
    user = user_by_account_name(account_name)
    return UserGroupMember.objects.get_or_create(group=group, user=user)


def group_member_remove(*, group: UserGroup, user_id: int) -> bool:
    """Remove a member; False when they were not one (removing twice is harmless)."""
    return UserGroupMember.objects.filter(group=group, user_id=user_id).delete()[0] > 0


# --- the organization's RFID cards --------------------------------------------------------


def uid_clean(value: str) -> str:
    """The normalized UID (``de:ad:be:ef`` → ``DEADBEEF``) or a message saying what is wrong."""
    uid = normalize_uid(value)
    if not uid:
        raise ValidationError(_("Enter the card's UID."), code="required")
    try:
        uid_validator(uid)
    except ValidationError as exc:
        raise ValidationError(
            _("'%(uid)s' is not a valid UID: 4 to 20 hexadecimal digits (0-9, A-F).")
            % {"uid": value.strip()},
            code="uid",
        ) from exc
    return uid


# Deliberately the same words whoever holds the card: a UID must not reveal its owner.
CARD_TAKEN = gettext_lazy("This card is already registered.")


def card_taken(uid: str) -> bool:
    """Whether any card anywhere has this UID. The refusal never says whose it is."""
    return RfidCard.objects.filter(uid=uid).exists()


def expiry_from_date(day: date | None) -> datetime | None:
    """A card valid *through* ``day``: it expires at the following midnight, portal time."""
    if day is None:
        return None
    return timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))


def expiry_date(expires_at: datetime | None) -> date | None:
    """The last day a card is valid (inverse of ``expiry_from_date``)."""
    if expires_at is None:
        return None
    return (timezone.localtime(expires_at) - timedelta(microseconds=1)).date()


def card_add(
    *,
    organization: Organization,
    uid: str,
    account_name: str = "",
    label: str = "",
    expires: date | None = None,
) -> RfidCard:
    """Add a card for one of the organization's drivers (``account_name``) or for the
    organization itself. A UID is unique across the platform; the clash is refused without
    saying who has the card."""
    try:
        uid = uid_clean(uid)
    except ValidationError as exc:
        raise ValidationError({"uid": exc.messages}) from exc
    user = user_by_account_name(account_name) if (account_name or "").strip() else None
    if card_taken(uid):
        raise ValidationError({"uid": [CARD_TAKEN]}, code="card_taken")
    try:
        with transaction.atomic():
            return RfidCard.objects.create(
                organization=organization,
                uid=uid,
                user=user,
                label=(label or "").strip()[:80],
                expires_at=expiry_from_date(expires),
            )
    except IntegrityError as exc:  # a concurrent registration of the same UID
        raise ValidationError({"uid": [CARD_TAKEN]}, code="card_taken") from exc


def card_update(
    *,
    card: RfidCard,
    label: str | None = None,
    blocked: bool | None = None,
    expires: Any = ...,
) -> RfidCard:
    """Block/unblock, relabel, set or clear the expiry (``expires=None`` clears it)."""
    if label is not None:
        card.label = label.strip()[:80]
    if blocked is not None:
        card.blocked = blocked
    if expires is not ...:
        card.expires_at = expiry_from_date(expires)
    card.save(update_fields=["label", "blocked", "expires_at"])
    return card


def card_delete(*, card: RfidCard) -> None:
    card.delete()


# --- station authentication settings ------------------------------------------------------


def station_access_settings_set(
    *,
    station: Station,
    auth_mode: str,
    third_party_url: str = "",
    auto_car_detection: bool = False,
    time_zone: str | None = None,
    requested_by: User | None = None,
) -> list[StationCommand]:
    """Save a station's authentication settings. When the mode, the URL or car detection
    changes, the configuration keys the mode needs are (re)sent to the station as wanted
    configuration (``billing.services.station_auth_mode_set``); the time zone is ours only."""
    if auth_mode not in AuthMode.values:
        raise ValidationError({"auth_mode": [_("Choose an authentication mode.")]})
    url = (third_party_url or "").strip() if auth_mode == AuthMode.THIRD_PARTY else ""
    changed = (
        station.auth_mode != auth_mode
        or station.third_party_url != url
        or station.auto_car_detection != auto_car_detection
    )
    with transaction.atomic():
        if time_zone is not None and time_zone != station.time_zone:
            station.time_zone = time_zone
            station.full_clean(exclude=["password_hash", "organization"])
            station.save(update_fields=["time_zone"])
        if not changed:
            return []
        return station_auth_mode_set(
            station=station,
            mode=auth_mode,
            third_party_url=url,
            auto_car_detection=auto_car_detection,
            requested_by=requested_by,
        )
