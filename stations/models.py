"""Stations, connectors, charging sessions as physical facts, meter samples, commands, wanted
configuration and unknown identities.

Tenant-owned rows use ``TenantQuerySet``; ``tenant_path`` names the lookup to the organization.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.querysets import TenantQuerySet

# OCPP-J: the identity is the last path segment. Up to 48 characters (the 2.0.1 limit, which
# all 1.6 stations we know respect), no slash, no whitespace, no colon (it would break the
# Basic auth user name); case-insensitively unique.
identity_validator = RegexValidator(
    r"^[^/\s%?#:]{1,48}$",
    # "%%": Django formats validator messages with %-parameters.
    _("1 to 48 characters without spaces or any of / %% ? # :"),
)


class RegistrationStatus(models.TextChoices):
    NEVER = "", _("Never booted")
    ACCEPTED = "Accepted", _("Accepted")
    PENDING = "Pending", _("Pending")
    REJECTED = "Rejected", _("Rejected")


def validate_ws_url(value: str) -> None:
    """Only ``ws://`` or ``wss://`` URLs with a host: what an OCPP-J backend listens on."""
    from urllib.parse import urlsplit

    from django.core.exceptions import ValidationError

    parts = urlsplit(value or "")
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValidationError(
            _(
                "Enter the other backend's address starting with ws:// or wss://, e.g. "
                "wss://backend.example.com/ocpp/."
            ),
            code="ws_url",
        )


class AuthMode(models.TextChoices):
    """How a station is unlocked (DESIGN.md, authentication modes)."""

    NONE = "none", _("None: charges as soon as a car is plugged in")
    BACKEND = "backend", _("This portal: RFID, app, QR code, CarID")
    THIRD_PARTY = "ocpp_third_party", _("Another OCPP backend")


class Station(models.Model):
    """A charge point speaking OCPP 1.6J. ``charge_point_id`` is its global identity."""

    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.CASCADE, related_name="stations"
    )
    charge_point_id = models.CharField(
        _("charge point identity"), max_length=48, unique=True, validators=[identity_validator]
    )
    name = models.CharField(_("name"), max_length=120, blank=True)
    enabled = models.BooleanField(
        _("enabled"), default=True, help_text=_("A disabled station's boot is rejected.")
    )
    password_hash = models.CharField(max_length=256, blank=True)
    password_set_at = models.DateTimeField(null=True, blank=True)
    # From BootNotification.
    vendor = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=20, blank=True)
    serial_number = models.CharField(max_length=25, blank=True)
    firmware_version = models.CharField(max_length=50, blank=True)
    iccid = models.CharField(max_length=20, blank=True)
    meter_type = models.CharField(max_length=25, blank=True)
    registration_status = models.CharField(
        max_length=10, choices=RegistrationStatus.choices, blank=True, default=""
    )
    last_boot_at = models.DateTimeField(null=True, blank=True)
    heartbeat_interval = models.PositiveIntegerField(default=300)
    # Access: how the station is unlocked; the decision itself lives in billing.
    auth_mode = models.CharField(
        _("authentication mode"), max_length=20, choices=AuthMode.choices, default=AuthMode.BACKEND
    )
    third_party_url = models.CharField(
        _("third-party backend URL"), max_length=300, blank=True, validators=[validate_ws_url]
    )
    auto_car_detection = models.BooleanField(
        _("auto car detection"),
        default=False,
        help_text=_("The station reads the car's identifier (needed for CarID)."),
    )
    # Advanced settings (station page); applied over OCPP as wanted configuration.
    modbus_tcp = models.BooleanField(
        _("Modbus TCP"), default=False, help_text=_("The station's Modbus TCP interface.")
    )
    # Display personalisation: what the owner chose ("design:<key>", "name" or "upload") and
    # the exact DataTransfer DisplayImage payload sent (raw RGB frames: lossless, re-sendable).
    display_source = models.CharField(_("display"), max_length=40, blank=True)
    display_payload = models.JSONField(null=True, blank=True)
    display_notes = models.JSONField(default=list, blank=True)
    display_updated_at = models.DateTimeField(null=True, blank=True)
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        default="Europe/Zurich",
        help_text=_("Access rules by time of day are evaluated in this time zone."),
    )
    # Connector 0 (the whole station) status.
    status = models.CharField(max_length=20, blank=True)
    error_code = models.CharField(max_length=30, blank=True)
    # Live connection.
    online = models.BooleanField(default=False)
    last_seen = models.DateTimeField(null=True, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    channel_name = models.CharField(
        max_length=200, blank=True, help_text=_("Channel of the connection holding the socket.")
    )
    remote_addr = models.CharField(max_length=64, blank=True)
    # Third-party relay (docs/OCPP.md): why the last relay attempt failed; cleared when the
    # other backend answers again.
    relay_error = models.CharField(_("relay error"), max_length=255, blank=True)
    relay_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["name", "charge_point_id"]
        constraints = [
            models.UniqueConstraint(Lower("charge_point_id"), name="station_identity_ci_unique"),
        ]
        indexes = [models.Index(fields=["online", "last_seen"])]

    def __str__(self) -> str:
        return self.name or self.charge_point_id

    def clean(self) -> None:
        from zoneinfo import available_timezones

        from django.core.exceptions import ValidationError

        errors = {}
        if self.auth_mode == AuthMode.THIRD_PARTY and not self.third_party_url:
            errors["third_party_url"] = _("Enter the other backend's ws:// or wss:// URL.")
        if self.time_zone not in available_timezones():
            errors["time_zone"] = _("Unknown time zone; use a name such as Europe/Zurich.")
        if errors:
            raise ValidationError(errors)

    @property
    def managed_elsewhere(self) -> bool:
        return self.auth_mode == AuthMode.THIRD_PARTY

    @property
    def label(self) -> str:
        return self.name or self.charge_point_id

    @property
    def third_party_url_shown(self) -> str:
        """The third-party URL without the password of its user info (shown on pages)."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.third_party_url or "")
        if parts.password is None:
            return self.third_party_url
        netloc = f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc))


class ConnectorStatus(models.TextChoices):
    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EVSE = "SuspendedEVSE"
    SUSPENDED_EV = "SuspendedEV"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"
    UNKNOWN = "Unknown"


class Connector(models.Model):
    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="connectors")
    connector_id = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(99)]
    )
    status = models.CharField(
        max_length=20, choices=ConnectorStatus.choices, default=ConnectorStatus.UNKNOWN
    )
    error_code = models.CharField(max_length=30, blank=True, default="NoError")
    info = models.CharField(max_length=50, blank=True)
    vendor_error_code = models.CharField(max_length=50, blank=True)
    status_at = models.DateTimeField(null=True, blank=True, help_text=_("Station's timestamp."))
    updated_at = models.DateTimeField(default=timezone.now)
    power_w = models.FloatField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "station__organization"

    class Meta:
        ordering = ["station_id", "connector_id"]
        constraints = [
            models.UniqueConstraint(fields=["station", "connector_id"], name="connector_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.station} #{self.connector_id}"


class SessionStatus(models.TextChoices):
    ACTIVE = "active", _("Charging")
    COMPLETED = "completed", _("Completed")
    # A newer transaction started on the connector before this one's StopTransaction came:
    # closed at its last meter reading; a late StopTransaction still completes it.
    ABANDONED = "abandoned", _("Ended without stop message")


class ChargingSession(models.Model):
    """One OCPP transaction. ``transaction_id`` is the primary key: unique and positive.

    ``idempotency_key`` de-duplicates StartTransaction re-sent after a reconnect (same station,
    connector, idTag, station timestamp and meterStart → same transaction).
    """

    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="sessions")
    connector_id = models.PositiveSmallIntegerField()
    id_tag = models.CharField(max_length=20)
    auth_status = models.CharField(max_length=20, default="Accepted")
    user_id_ref = models.BigIntegerField(null=True, blank=True, help_text=_("From the policy."))
    card_id_ref = models.BigIntegerField(null=True, blank=True, help_text=_("From the policy."))
    reservation_id = models.IntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=SessionStatus.choices, default=SessionStatus.ACTIVE
    )
    meter_start = models.BigIntegerField(help_text=_("Wh"))
    meter_stop = models.BigIntegerField(null=True, blank=True, help_text=_("Wh"))
    energy_wh = models.BigIntegerField(default=0)
    last_meter_wh = models.FloatField(null=True, blank=True)
    power_w = models.FloatField(null=True, blank=True)
    # Effective times: the station's when its clock is plausible, else the server's.
    started_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    station_started_at = models.DateTimeField(help_text=_("As the station reported it."))
    station_stopped_at = models.DateTimeField(null=True, blank=True)
    start_received_at = models.DateTimeField(default=timezone.now)
    stop_received_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=20, blank=True)
    stop_id_tag = models.CharField(max_length=20, blank=True)
    # What the policy decided at the start: the tariff that applies, frozen (later price
    # changes never reprice a past session). Opaque here; billing reads it.
    tariff_snapshot = models.JSONField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=64)
    # A relayed station's session (third-party mode): the other backend's transactionId,
    # which the station uses in MeterValues and StopTransaction. Never priced here.
    external_transaction_id = models.BigIntegerField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "station__organization"

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["station", "idempotency_key"], name="session_start_idempotent"
            ),
        ]
        indexes = [
            models.Index(fields=["station", "connector_id", "status"]),
            # "Is this identifier charging anywhere?" on every Authorize/StartTransaction.
            models.Index(
                fields=["id_tag"],
                condition=models.Q(status="active"),
                name="session_active_id_tag",
            ),
            models.Index(fields=["user_id_ref", "started_at"], name="session_driver"),
            models.Index(
                fields=["station", "external_transaction_id"],
                condition=models.Q(external_transaction_id__isnull=False),
                name="session_external_tx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.station} c{self.connector_id}"

    @property
    def transaction_id(self) -> int:
        return self.pk

    @property
    def energy_kwh(self) -> Decimal:
        """For people: energy is counted in Wh (OCPP's unit) and read in kWh."""
        return Decimal(self.energy_wh) / 1000


class MeterSample(models.Model):
    """One sampled instant; compact: one row per timestamp, columns per measurand."""

    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(
        ChargingSession, null=True, blank=True, on_delete=models.CASCADE, related_name="samples"
    )
    connector_id = models.PositiveSmallIntegerField()
    time = models.DateTimeField()
    energy_wh = models.FloatField(null=True, blank=True)
    power_w = models.FloatField(null=True, blank=True)
    current_l1 = models.FloatField(null=True, blank=True)
    current_l2 = models.FloatField(null=True, blank=True)
    current_l3 = models.FloatField(null=True, blank=True)
    voltage = models.FloatField(null=True, blank=True)
    soc = models.FloatField(null=True, blank=True)
    context = models.CharField(max_length=20, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "station__organization"

    class Meta:
        ordering = ["time", "id"]
        indexes = [models.Index(fields=["session", "time"])]
        constraints = [
            # A MeterValues (or StopTransaction) the station sends again because our answer
            # was lost merges into the rows it wrote the first time (stations/metering.py).
            models.UniqueConstraint(
                fields=["station", "connector_id", "time", "context"],
                name="metersample_one_row_per_instant",
            )
        ]

    def __str__(self) -> str:
        return f"{self.station_id} c{self.connector_id} @ {self.time:%Y-%m-%d %H:%M:%S}"


class CommandStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    ACCEPTED = "accepted", _("Accepted")
    REJECTED = "rejected", _("Rejected")
    NOT_SUPPORTED = "not_supported", _("Not supported")
    ERROR = "error", _("Error")
    TIMED_OUT = "timed_out", _("Timed out")
    OFFLINE = "offline", _("Station offline")


#: The outcome recorded for a load-management lease that a newer one replaced before it was
#: sent (stations/commands.py, command_claim): routine, not a failure.
LEASE_SUPERSEDED = "Not sent: a newer charging profile replaced it."


class StationCommand(models.Model):
    """A call to a station and its result. Claimed by one connection (``sent_at``)."""

    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="commands")
    action = models.CharField(max_length=40)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=15, choices=CommandStatus.choices, default=CommandStatus.PENDING
    )
    response = models.JSONField(null=True, blank=True)
    error = models.CharField(max_length=255, blank=True)
    requested_by = models.ForeignKey(
        "portal.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "station__organization"

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["station", "status"]),
            # Newer commands of a station (a lease replaced by a newer one is never sent,
            # stations/commands.py: command_claim): a range, not every command it ever had.
            models.Index(fields=["station", "id"], name="stations_command_newer"),
        ]

    def __str__(self) -> str:
        return f"{self.action} → {self.station} ({self.status})"

    @property
    def superseded(self) -> bool:
        """A lease replaced by a newer one before it went out (shown as such, not as an
        error: load management does this every few seconds)."""
        return self.status == CommandStatus.ERROR and self.error == LEASE_SUPERSEDED

    @property
    def charging_profile(self) -> ChargingProfileSummary | None:
        """What a SetChargingProfile sets, for the command log; None for other commands or
        a payload without a schedule period."""
        if self.action != "SetChargingProfile" or not isinstance(self.payload, dict):
            return None
        return ChargingProfileSummary.of(self.payload)


@dataclass(frozen=True)
class ChargingProfileSummary:
    """A SetChargingProfile in a line: load management sends one per connector every few
    seconds, and their JSON buried the owner's own commands in the log."""

    connector: int
    purpose: str
    stack_level: int
    limit: float
    unit: str
    phases: int | None
    valid_to: datetime | None

    @classmethod
    def of(cls, payload: dict[str, Any]) -> ChargingProfileSummary | None:
        profile = payload.get("csChargingProfiles")
        if not isinstance(profile, dict):
            return None
        schedule = profile.get("chargingSchedule")
        periods = schedule.get("chargingSchedulePeriod") if isinstance(schedule, dict) else None
        if not isinstance(periods, list) or not periods or not isinstance(periods[0], dict):
            return None
        valid_to = None
        if isinstance(profile.get("validTo"), str):
            with contextlib.suppress(ValueError):
                valid_to = datetime.fromisoformat(profile["validTo"].replace("Z", "+00:00"))
        return cls(
            connector=payload.get("connectorId", 0),
            purpose=str(profile.get("chargingProfilePurpose", "")),
            stack_level=profile.get("stackLevel", 0),
            limit=periods[0].get("limit", 0),
            unit=str(schedule.get("chargingRateUnit", "")),
            phases=periods[0].get("numberPhases"),
            valid_to=valid_to,
        )


class ConfigurationKey(models.Model):
    """Wanted configuration: re-sent on boot and reconnect until the station accepted it."""

    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="configuration")
    key = models.CharField(max_length=50)
    value = models.CharField(max_length=500)
    applied_value = models.CharField(max_length=500, null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    last_result = models.CharField(max_length=20, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "station__organization"

    class Meta:
        ordering = ["station_id", "key"]
        constraints = [
            models.UniqueConstraint(fields=["station", "key"], name="configuration_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.station}: {self.key}={self.value}"


class UnknownChargePoint(models.Model):
    """An identity that tried to connect without being registered (admins and owners see it)."""

    identity = models.CharField(max_length=200, unique=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=1)
    remote_addr = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return self.identity
