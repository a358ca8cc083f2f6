"""Access and prices: identity tokens (RFID cards, vehicles, app tags), tariffs, access per
connector with time-of-day rules, special users and user groups, invoices.

The arithmetic is in ``billing/pricing.py`` (pure); the decision in ``billing/authorization.py``.
Tenant-owned rows use ``TenantQuerySet``; a driver's own rows (cards they added, vehicles) are
read through selectors that filter by the user.
"""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing import pricing
from portal.querysets import TenantQuerySet

uid_validator = RegexValidator(
    r"^[0-9A-F]{4,20}$", _("4 to 20 hexadecimal digits (the card's UID).")
)
car_id_validator = RegexValidator(
    r"^[0-9A-Z]{4,20}$",
    _("4 to 20 letters or digits (the identifier the station reads from the car)."),
)


def normalize_uid(value: str) -> str:
    """Upper-case without separators: ``de:ad:be:ef`` → ``DEADBEEF``."""
    return "".join(ch for ch in (value or "").strip().upper() if ch not in ": -.")


class RfidCard(models.Model):
    """An RFID card. ``uid`` is what stations send as idTag; one UID, at most one user.

    A driver adds their own cards (``organization`` empty); an owner may add cards for their
    drivers or for the organization itself (``organization`` set; without a user the card is
    one of the organization's own, which may charge wherever the organization may).
    """

    organization = models.ForeignKey(
        "portal.Organization",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="rfid_cards",
        help_text=_("Set when an owner added the card."),
    )
    uid = models.CharField(_("UID"), max_length=20, unique=True, validators=[uid_validator])
    user = models.ForeignKey(
        "portal.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="rfid_cards"
    )
    label = models.CharField(_("label"), max_length=80, blank=True)
    blocked = models.BooleanField(_("blocked"), default=False)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["uid"]

    def __str__(self) -> str:
        return f"{self.uid} ({self.label})" if self.label else self.uid

    def save(self, *args, **kwargs) -> None:
        self.uid = normalize_uid(self.uid)
        super().save(*args, **kwargs)


class Vehicle(models.Model):
    """A driver's car for CarID: the identifier a station with auto car detection reads."""

    user = models.ForeignKey("portal.User", on_delete=models.CASCADE, related_name="vehicles")
    car_id = models.CharField(
        _("car identifier"), max_length=20, unique=True, validators=[car_id_validator]
    )
    label = models.CharField(_("label"), max_length=80, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["label", "car_id"]

    def __str__(self) -> str:
        return self.label or self.car_id

    def save(self, *args, **kwargs) -> None:
        self.car_id = normalize_uid(self.car_id)
        super().save(*args, **kwargs)


def new_app_tag() -> str:
    # 20 upper-case hex characters, the longest idTag OCPP 1.6 allows; unguessable, so a
    # station cannot charge in a driver's name by inventing it.
    return "A" + secrets.token_hex(10).upper()[:19]


class AppTag(models.Model):
    """The idTag the portal sends in RemoteStartTransaction for a driver (app and QR starts)."""

    user = models.OneToOneField("portal.User", on_delete=models.CASCADE, related_name="app_tag")
    id_tag = models.CharField(max_length=20, unique=True, default=new_app_tag)

    def __str__(self) -> str:
        return f"{self.user} ({self.id_tag})"


class Currency(models.TextChoices):
    CHF = "CHF", "CHF"
    EUR = "EUR", "EUR"


money_validators = [MinValueValidator(Decimal("0"))]


class Tariff(models.Model):
    """A named price an owner assigns to connectors, special users or user groups.

    Prices include VAT (as drivers see them); per kWh and per hour of connection.
    """

    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.CASCADE, related_name="tariffs"
    )
    name = models.CharField(_("name"), max_length=80)
    per_kwh = models.DecimalField(
        _("price per kWh"),
        max_digits=8,
        decimal_places=4,
        default=Decimal("0"),
        validators=[*money_validators, MaxValueValidator(pricing.MAX_PER_KWH)],
    )
    per_hour = models.DecimalField(
        _("price per hour connected"),
        max_digits=8,
        decimal_places=4,
        default=Decimal("0"),
        validators=[*money_validators, MaxValueValidator(pricing.MAX_PER_HOUR)],
    )
    currency = models.CharField(
        _("currency"), max_length=3, choices=Currency.choices, default=Currency.CHF
    )
    vat_percent = models.DecimalField(
        _("VAT rate (%)"),
        max_digits=5,
        decimal_places=2,
        default=Decimal("8.1"),
        validators=[*money_validators, MaxValueValidator(pricing.MAX_VAT_PERCENT)],
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="tariff_name_unique"),
            models.CheckConstraint(
                condition=models.Q(per_kwh__gte=0, per_hour__gte=0, vat_percent__gte=0),
                name="tariff_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.per_kwh:.2f}/kWh, {self.per_hour:.2f}/h {self.currency})"

    def clean(self) -> None:
        try:
            self.as_pricing()
        except pricing.PricingError as exc:
            raise ValidationError(str(exc)) from exc

    def as_pricing(self) -> pricing.Tariff:
        return pricing.Tariff(
            per_kwh=Decimal(self.per_kwh),
            per_hour=Decimal(self.per_hour),
            currency=self.currency,
            vat_percent=Decimal(self.vat_percent),
        )


class Access(models.TextChoices):
    PRIVATE = "private", _("Private: the owner's organization only, free")
    LIMITED = "limited", _("Limited: the owner and special users")
    PUBLIC = "public", _("Public: everyone")


def new_label_code() -> str:
    # Short enough for a printed label's URL, 40 bits: not guessable by enumeration.
    return secrets.token_urlsafe(5).replace("-", "x").replace("_", "y")


class ConnectorAccess(models.Model):
    """Who may charge at a connector and at what public price. Missing row: private.

    ``code`` is the connector's short code on its printed QR label (``/c/<code>``).
    """

    connector = models.OneToOneField(
        "stations.Connector", on_delete=models.CASCADE, related_name="access"
    )
    access = models.CharField(
        _("access"), max_length=10, choices=Access.choices, default=Access.PRIVATE
    )
    tariff = models.ForeignKey(
        Tariff,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="connectors",
        verbose_name=_("price"),
        help_text=_("What everyone pays (and special users without a price of their own)."),
    )
    code = models.CharField(max_length=12, unique=True, default=new_label_code, editable=False)

    objects = TenantQuerySet.as_manager()
    tenant_path = "connector__station__organization"

    def __str__(self) -> str:
        return f"{self.connector}: {self.access}"


WEEKDAY_DIGITS = "1234567"  # ISO weekdays, Monday = 1


def validate_weekdays(value: str) -> None:
    if not value or any(ch not in WEEKDAY_DIGITS for ch in value) or len(set(value)) != len(value):
        raise ValidationError(_("Weekdays as digits 1 (Monday) to 7 (Sunday), e.g. 12345."))


class AccessRule(models.Model):
    """Access for a time window on some weekdays, in the station's time zone.

    The first rule (by position) whose window contains the moment wins; otherwise the
    connector's own access applies. A window whose end is before its start runs over midnight
    (22:00–06:00); it belongs to the weekday it starts on.
    """

    connector_access = models.ForeignKey(
        ConnectorAccess, on_delete=models.CASCADE, related_name="rules"
    )
    position = models.PositiveSmallIntegerField(default=0)
    weekdays = models.CharField(
        _("weekdays"), max_length=7, default="12345", validators=[validate_weekdays]
    )
    start_time = models.TimeField(_("from"))
    end_time = models.TimeField(_("until"))
    access = models.CharField(_("access"), max_length=10, choices=Access.choices)

    objects = TenantQuerySet.as_manager()
    tenant_path = "connector_access__connector__station__organization"

    class Meta:
        ordering = ["connector_access_id", "position", "id"]

    def __str__(self) -> str:
        return f"{self.weekdays} {self.start_time:%H:%M}–{self.end_time:%H:%M}: {self.access}"

    def clean(self) -> None:
        if self.start_time is not None and self.start_time == self.end_time:
            raise ValidationError(_("The window is empty: start and end are the same time."))


class SpecialUser(models.Model):
    """A driver an owner named by account name: may charge at limited connectors, optionally
    at an individual price (else their group's, else the connector's)."""

    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.CASCADE, related_name="special_users"
    )
    user = models.ForeignKey("portal.User", on_delete=models.CASCADE, related_name="+")
    tariff = models.ForeignKey(
        Tariff,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="special_users",
        verbose_name=_("individual price"),
    )
    note = models.CharField(_("note"), max_length=120, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["user__username"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="special_user_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization}"


class UserGroup(models.Model):
    """Drivers who share a price rule (members imported by CSV or added by account name)."""

    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.CASCADE, related_name="user_groups"
    )
    name = models.CharField(_("name"), max_length=80)
    tariff = models.ForeignKey(
        Tariff,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="user_groups",
        verbose_name=_("group price"),
    )
    members = models.ManyToManyField(
        "portal.User", through="UserGroupMember", related_name="+", blank=True
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="user_group_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class UserGroupMember(models.Model):
    group = models.ForeignKey(UserGroup, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey("portal.User", on_delete=models.CASCADE, related_name="+")
    added_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "group__organization"

    class Meta:
        ordering = ["group_id", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["group", "user"], name="user_group_member_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.group}"


class BillingProfile(models.Model):
    """What an owner's invoices say about the owner."""

    organization = models.OneToOneField(
        "portal.Organization", on_delete=models.CASCADE, related_name="billing_profile"
    )
    legal_name = models.CharField(_("name on invoices"), max_length=120)
    address = models.TextField(_("address"), blank=True)
    vat_id = models.CharField(_("VAT number"), max_length=40, blank=True)
    iban = models.CharField(_("IBAN for payouts"), max_length=40, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    def __str__(self) -> str:
        return self.legal_name


class PlatformSettings(models.Model):
    """One row: what the platform keeps of owners' revenue (set by the admin)."""

    commission_percent = models.DecimalField(
        _("platform commission (%)"),
        max_digits=5,
        decimal_places=2,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
    )

    class Meta:
        verbose_name = _("platform settings")
        verbose_name_plural = _("platform settings")

    def __str__(self) -> str:
        return f"Commission {self.commission_percent}%"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1  # a singleton
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> PlatformSettings:
        return cls.objects.get_or_create(pk=1)[0]


class Invoice(models.Model):
    """A driver's monthly invoice from one owner; numbers are sequential per owner.

    Amounts are frozen at issue: the lines copy each session's price.
    """

    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.PROTECT, related_name="invoices"
    )
    user = models.ForeignKey("portal.User", on_delete=models.PROTECT, related_name="invoices")
    number = models.PositiveIntegerField()
    year = models.PositiveSmallIntegerField()
    month = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(12)]
    )
    currency = models.CharField(max_length=3, choices=Currency.choices)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    vat_amount = models.DecimalField(max_digits=12, decimal_places=2)
    net_amount = models.DecimalField(max_digits=12, decimal_places=2)
    issued_at = models.DateTimeField(default=timezone.now)
    # Copied at issue so a later change of the owner's address does not rewrite old invoices.
    issuer_name = models.CharField(max_length=120)
    issuer_address = models.TextField(blank=True)
    issuer_vat_id = models.CharField(max_length=40, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["-year", "-month", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "number"], name="invoice_number"),
            models.UniqueConstraint(
                fields=["organization", "user", "year", "month", "currency"],
                name="invoice_per_month",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization} #{self.number} ({self.year}-{self.month:02d})"


class InvoiceLine(models.Model):
    """One invoiced session, copied: an issued invoice outlives the station (the law keeps
    invoices; deleting a station leaves its lines with the station's name on them)."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    session = models.OneToOneField(
        "stations.ChargingSession",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="invoice_line",
    )
    description = models.CharField(max_length=200)
    started_at = models.DateTimeField(null=True)
    station_name = models.CharField(max_length=120, blank=True)
    connector_id = models.PositiveSmallIntegerField(null=True)
    vat_percent = models.DecimalField(max_digits=5, decimal_places=2, null=True)
    energy_kwh = models.DecimalField(max_digits=10, decimal_places=3)
    connected_hours = models.DecimalField(max_digits=10, decimal_places=4)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    vat_amount = models.DecimalField(max_digits=12, decimal_places=2)

    objects = TenantQuerySet.as_manager()
    tenant_path = "invoice__organization"

    class Meta:
        ordering = ["invoice_id", "started_at", "id"]

    def __str__(self) -> str:
        return self.description
