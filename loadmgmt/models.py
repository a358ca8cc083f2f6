"""Load-management configuration and meters: what the owner draws and what meters report.

* ``StationLimits``: per station, the owner's and the installer's current limits, the phase
  rotation, phase switching, the fail-safe current, the shedding inputs' wiring, the priority.
  A station without a row has the defaults (``StationLimits.defaults``).
* ``TreeNode``: a point of the supply tree above the groups (house connection, distribution
  board) with a fuse limit per phase, a safety margin, a fallback limit for a stale meter and
  the cloud shedding signal.
* ``LoadGroup``: a static group of stations on one supply line (``LoadGroupMember``: a station
  is in at most one group, a database constraint).
* ``Meter``: the reference meter of a node (at most one per node); ``MeterReading``: its time
  series, the latest reading also kept on the meter row for fast reads.

Every rule is checked in ``loadmgmt/services.py`` with a clear message; the constraints here
are the last line of defence against races. Tenant-owned rows use ``TenantQuerySet``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from loadmgmt.engine import model as engine
from portal.querysets import TenantQuerySet

#: Per-phase voltage the pages use to show power (230 V: 16 A × 3 = 11 kW, 32 A × 3 = 22 kW).
PHASE_VOLTAGE = 230
IEC_MIN_CURRENT = engine.IEC_MIN_CURRENT  # 6 A
STATION_MAX_CURRENT = engine.MAX_CURRENT  # 32 A
#: The largest fuse limit a node or group may declare (A per phase).
NODE_MAX_LIMIT = 100_000


def power_kw(current: int | float, phases: int = 3) -> float:
    """Power at ``current`` A per phase on ``phases`` phases at 230 V, in kW, rounded *down* to
    0.1 kW (so that 16 A × 3 reads 11 kW and 32 A × 3 reads 22 kW, the names everyone uses)."""
    return int(current * PHASE_VOLTAGE * phases / 100) / 10


class PhaseRotation(models.TextChoices):
    """Which grid phase each station phase is wired to (the engine's ``PhaseRotation``)."""

    L1_L2_L3 = "L1-L2-L3", "L1-L2-L3"
    L2_L3_L1 = "L2-L3-L1", "L2-L3-L1"
    L3_L1_L2 = "L3-L1-L2", "L3-L1-L2"

    @classmethod
    def to_engine(cls, value: str) -> engine.PhaseRotation:
        return engine.PhaseRotation[value.replace("-", "_")]


class SheddingInputs(models.TextChoices):
    """How the station's load-shedding inputs are wired (ripple control receiver)."""

    NONE = "none", _("Not wired")
    IN1_IN2 = "in1_in2", _("IN1+IN2: shed to no charging")
    IN2 = "in2", _("IN2 only: shed to 6 A")


class ShedSignal(models.TextChoices):
    """Cloud load-shedding state of a node (the engine's ``ShedMode``)."""

    NONE = "none", _("None")
    TO_ZERO = "to_zero", _("Shed to no charging")
    TO_MIN = "to_min", _("Shed to the minimum current")


class FailureAction(models.TextChoices):
    """What the stations of a group do when they lose the portal."""

    FAIL_SAFE = "fail_safe", _("Fall back to each station's fail-safe current")
    STOP = "stop", _("Stop charging")
    KEEP_LAST = "keep_last", _("Keep the last setpoint")


class StationLimits(models.Model):
    """Load-management settings of one station (``stations`` never imports this app)."""

    station = models.OneToOneField(
        "stations.Station", on_delete=models.CASCADE, related_name="load_limits"
    )
    max_current = models.PositiveSmallIntegerField(
        _("max current (A)"), default=STATION_MAX_CURRENT, help_text=_("6 to 32 A in 1 A steps.")
    )
    min_current = models.PositiveSmallIntegerField(
        _("min current (A)"),
        default=IEC_MIN_CURRENT,
        help_text=_("At least 6 A (IEC 61851); some cars need more to start."),
    )
    installer_max = models.PositiveSmallIntegerField(
        _("installer's max current (A)"),
        default=STATION_MAX_CURRENT,
        help_text=_("The hard limit of the installation: nothing overrides it."),
    )
    phase_rotation = models.CharField(
        _("phase rotation"),
        max_length=8,
        choices=PhaseRotation.choices,
        default=PhaseRotation.L1_L2_L3,
        help_text=_("Which grid phases the station's L1, L2, L3 are wired to."),
    )
    can_switch_phases = models.BooleanField(_("can switch from 3 to 1 phase"), default=False)
    fail_safe_current = models.PositiveSmallIntegerField(
        _("fail-safe current (A)"),
        default=0,
        help_text=_(
            "What the station offers when it loses the portal: 0 A (stop) or 6 A up to the "
            "installer's max."
        ),
    )
    shedding_inputs = models.CharField(
        _("load-shedding inputs"),
        max_length=8,
        choices=SheddingInputs.choices,
        default=SheddingInputs.NONE,
    )
    priority = models.SmallIntegerField(
        _("priority"), default=0, help_text=_("0 to 9: a higher priority is served first.")
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "station__organization"

    class Meta:
        verbose_name = _("station limits")
        verbose_name_plural = _("station limits")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_current__gte=IEC_MIN_CURRENT)
                & models.Q(min_current__lte=models.F("max_current"))
                & models.Q(max_current__lte=models.F("installer_max"))
                & models.Q(installer_max__lte=STATION_MAX_CURRENT),
                name="station_limits_currents_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.station}: {self.min_current}-{self.max_current} A"

    @classmethod
    def defaults(cls, station) -> StationLimits:
        """The settings of a station that has no row yet (unsaved)."""
        return cls(station=station)

    @property
    def effective_max(self) -> int:
        return min(self.max_current, self.installer_max)

    @property
    def max_power_kw(self) -> float:
        return power_kw(self.effective_max, 3)


class TreeNode(models.Model):
    """A point of the supply tree above the groups: house connection, distribution board."""

    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.CASCADE, related_name="load_nodes"
    )
    name = models.CharField(_("name"), max_length=120)
    # RESTRICT: a node with children is never deleted by itself (the service says why); the
    # organization's deletion still cascades through the whole tree.
    parent = models.ForeignKey(
        "self",
        on_delete=models.RESTRICT,
        null=True,
        blank=True,
        related_name="children",
        verbose_name=_("parent"),
    )
    limit_l1 = models.PositiveIntegerField(_("limit L1 (A)"))
    limit_l2 = models.PositiveIntegerField(_("limit L2 (A)"))
    limit_l3 = models.PositiveIntegerField(_("limit L3 (A)"))
    safety_margin = models.PositiveIntegerField(
        _("safety margin (A)"),
        default=0,
        help_text=_("Kept free below the limit when a meter measures the node."),
    )
    fallback_limit = models.PositiveIntegerField(
        _("fallback limit when the meter is stale (A)"),
        null=True,
        blank=True,
        help_text=_(
            "What the cars below may draw per phase while the meter is silent; empty: 0 A."
        ),
    )
    shed_signal = models.CharField(
        _("cloud shedding signal"),
        max_length=8,
        choices=ShedSignal.choices,
        default=ShedSignal.NONE,
    )
    shed_since = models.DateTimeField(null=True, blank=True)
    shed_source = models.CharField(max_length=60, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="treenode_name_unique"),
            models.CheckConstraint(
                condition=~models.Q(parent=models.F("id")), name="treenode_not_own_parent"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def limits(self) -> tuple[int, int, int]:
        return (self.limit_l1, self.limit_l2, self.limit_l3)


class LoadGroup(models.Model):
    """A static group: stations on one supply line with a max current per phase."""

    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.CASCADE, related_name="load_groups"
    )
    name = models.CharField(_("name"), max_length=120)
    max_current = models.PositiveIntegerField(
        _("max current per phase (A)"), help_text=_("The supply line's fuse.")
    )
    failure_action = models.CharField(
        _("on connection failure"),
        max_length=10,
        choices=FailureAction.choices,
        default=FailureAction.FAIL_SAFE,
    )
    node = models.ForeignKey(
        TreeNode,
        on_delete=models.RESTRICT,
        null=True,
        blank=True,
        related_name="groups",
        verbose_name=_("parent node"),
    )
    stations = models.ManyToManyField(
        "stations.Station", through="LoadGroupMember", related_name="load_groups", blank=True
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="loadgroup_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class LoadGroupMember(models.Model):
    """A station in a group. ``station`` is unique: a station is in at most one group."""

    group = models.ForeignKey(LoadGroup, on_delete=models.CASCADE, related_name="members")
    station = models.OneToOneField(
        "stations.Station", on_delete=models.CASCADE, related_name="load_group_member"
    )

    objects = TenantQuerySet.as_manager()
    tenant_path = "group__organization"

    class Meta:
        ordering = ["group_id", "station_id"]

    def __str__(self) -> str:
        return f"{self.station} in {self.group}"


class Meter(models.Model):
    """The reference meter of a node: measures everything below it, cars or not.

    Readings arrive by REST (``token``: only its SHA-256 is stored, the token is shown once) or
    by MQTT on ``mqtt_topic``. The latest reading is kept here; the series in ``MeterReading``.
    """

    node = models.OneToOneField(TreeNode, on_delete=models.CASCADE, related_name="meter")
    name = models.CharField(_("name"), max_length=120)
    token_hash = models.CharField(max_length=64, editable=False)
    token_set_at = models.DateTimeField(null=True, blank=True)
    mqtt_topic = models.CharField(_("MQTT topic"), max_length=200, unique=True)
    stale_after = models.PositiveIntegerField(
        _("stale after (s)"),
        default=60,
        help_text=_("A reading older than this makes the node stale (fallback limit applies)."),
    )
    last_current_l1 = models.FloatField(null=True, blank=True)
    last_current_l2 = models.FloatField(null=True, blank=True)
    last_current_l3 = models.FloatField(null=True, blank=True)
    last_power_w = models.FloatField(null=True, blank=True)
    last_reading_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "node__organization"

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def last_current(self) -> tuple[float, float, float] | None:
        if self.last_reading_at is None:
            return None
        return (
            self.last_current_l1 or 0.0,
            self.last_current_l2 or 0.0,
            self.last_current_l3 or 0.0,
        )

    def is_stale(self, now: datetime) -> bool:
        """No reading yet, or the last one is older than ``stale_after`` seconds at ``now``."""
        if self.last_reading_at is None:
            return True
        return now - self.last_reading_at > timedelta(seconds=self.stale_after)


class MeterReading(models.Model):
    """One reading of a meter: current per phase (A), optionally power (W)."""

    id = models.BigAutoField(primary_key=True)
    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="readings")
    time = models.DateTimeField()
    l1 = models.FloatField()
    l2 = models.FloatField()
    l3 = models.FloatField()
    power_w = models.FloatField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "meter__node__organization"

    class Meta:
        ordering = ["-time"]
        indexes = [models.Index(fields=["meter", "-time"], name="meterreading_meter_time")]

    def __str__(self) -> str:
        return f"{self.meter} {self.time:%Y-%m-%d %H:%M:%S}: {self.l1}/{self.l2}/{self.l3} A"


# --- Live state: what the recompute decided, what was sent, what each station accepted ------


class ConnectorSetpoint(models.Model):
    """One connector's load-management state (the engine's "station" is a connector).

    * ``target_*``, ``decision``, ``reason``: the last plan;
    * ``sent_*``: the last SetChargingProfile (lease) sent, and its command;
    * ``accepted_*``: what the station last accepted, and until when (the lease's validTo);
    * ``unresponsive_since``: the station rejected or did not answer; it is counted at the
      higher of its last accepted limit and its fail-safe until it answers again;
      ``unresponsive_status`` says which (a refusal is shown as "no smart charging");
    * ``drawn_phases``: station phases the car of ``session_ref`` was seen drawing on under a
      3-phase offer ("0", "01", "012"), reset for every session.
    """

    station = models.ForeignKey(
        "stations.Station", on_delete=models.CASCADE, related_name="load_setpoints"
    )
    connector_id = models.PositiveSmallIntegerField()
    target_current = models.PositiveSmallIntegerField(default=0)
    target_phases = models.PositiveSmallIntegerField(default=3)
    decision = models.CharField(max_length=10, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    sent_current = models.PositiveSmallIntegerField(null=True, blank=True)
    sent_phases = models.PositiveSmallIntegerField(null=True, blank=True)
    sent_valid_to = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_command = models.ForeignKey(
        "stations.StationCommand",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    accepted_current = models.PositiveSmallIntegerField(null=True, blank=True)
    accepted_phases = models.PositiveSmallIntegerField(null=True, blank=True)
    accepted_valid_to = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    unresponsive_since = models.DateTimeField(null=True, blank=True)
    #: The failed command's status (rejected, not_supported, error, timeout, offline): a
    #: station that refuses profiles is told apart from one that does not answer.
    unresponsive_status = models.CharField(max_length=20, blank=True, default="")
    session_ref = models.BigIntegerField(null=True, blank=True)
    drawn_phases = models.CharField(max_length=3, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "station__organization"

    class Meta:
        ordering = ["station_id", "connector_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["station", "connector_id"], name="connector_setpoint_unique"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.station} #{self.connector_id}: {self.target_current} A × {self.target_phases}"
        )

    @property
    def pending(self) -> bool:
        """A lease was sent and not (yet) answered."""
        return self.sent_command_id is not None and self.sent_current is not None


class StationInputs(models.Model):
    """The load-shedding inputs a station last reported (DataTransfer "Inputs")."""

    station = models.OneToOneField(
        "stations.Station", on_delete=models.CASCADE, related_name="load_inputs"
    )
    in1 = models.BooleanField(default=False)
    in2 = models.BooleanField(default=False)
    reported_at = models.DateTimeField(default=timezone.now)
    #: When the current state began (for "shed since ..." on the pages).
    since = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()
    tenant_path = "station__organization"

    class Meta:
        verbose_name_plural = _("station inputs")

    def __str__(self) -> str:
        return f"{self.station}: IN1={self.in1} IN2={self.in2}"


class NodeLoadSample(models.Model):
    """Per recompute and node (or group): budget, planned load and measurement per phase, for
    the live view's chart. ``node_key`` is the engine id (``n<pk>`` node, ``g<pk>`` group)."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(
        "portal.Organization", on_delete=models.CASCADE, related_name="+"
    )
    node_key = models.CharField(max_length=24)
    time = models.DateTimeField()
    limit = models.JSONField()  # [L1, L2, L3]
    budget = models.JSONField()
    planned = models.JSONField()
    measured = models.JSONField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()
    tenant_path = "organization"

    class Meta:
        ordering = ["time", "id"]
        indexes = [models.Index(fields=["organization", "node_key", "time"])]

    def __str__(self) -> str:
        return f"{self.node_key} @ {self.time:%H:%M:%S}"
