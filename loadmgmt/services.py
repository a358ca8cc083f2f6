"""Every write of the load-management configuration: validated here, with clear messages.

Field errors are raised as ``django.core.exceptions.ValidationError({field: [message]})`` (the
pages put them next to the field, the API answers 400 with them). Every change ends with
``tree_changed`` after commit (a meter reading: ``meter_read``): the places where the
recompute is triggered.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from loadmgmt.models import (
    IEC_MIN_CURRENT,
    NODE_MAX_LIMIT,
    STATION_MAX_CURRENT,
    FailureAction,
    LoadGroup,
    LoadGroupMember,
    Meter,
    MeterReading,
    PhaseRotation,
    SheddingInputs,
    ShedSignal,
    StationLimits,
    TreeNode,
)
from portal.errors import Conflict
from portal.models import Organization
from stations.models import Station

TOKEN_BYTES = 24  # 32 URL-safe characters
MAX_STALE_AFTER = 24 * 3600
MQTT_TOPIC_PREFIX = "chargeportal/meters/"


# --- the recompute hook -------------------------------------------------------------------


def tree_changed(organization_id: int, node_id: int | None) -> None:
    """Called (after commit) on every configuration change: a debounced recompute of the
    whole organization (``node_id``: the node whose configuration changed, ``None`` for a
    station or the whole tree). Whole, because a change may move a node, a group or a
    station from one tree to another."""
    from loadmgmt.tasks import recompute_soon

    recompute_soon(organization_id)


def meter_read(organization_id: int, node_id: int) -> None:
    """Called (after commit) on every meter reading: a debounced recompute of the tree the
    node belongs to (a reading changes no other tree's budget). Cheap: readings call it for
    every message."""
    from loadmgmt.selectors import node_engine_id
    from loadmgmt.tasks import recompute_soon

    recompute_soon(organization_id, node_engine_id(node_id))


def _changed(organization_id: int, node_id: int | None = None) -> None:
    transaction.on_commit(lambda: tree_changed(organization_id, node_id))


# --- station limits -----------------------------------------------------------------------

LIMIT_FIELDS = (
    "max_current",
    "min_current",
    "installer_max",
    "phase_rotation",
    "can_switch_phases",
    "fail_safe_current",
    "shedding_inputs",
    "priority",
)


def station_limits_get(*, station: Station) -> StationLimits:
    """The station's settings, or the defaults (unsaved) if it has none yet."""
    try:
        return StationLimits.objects.get(station=station)
    except StationLimits.DoesNotExist:
        return StationLimits.defaults(station)


def _check_station_limits(limits: StationLimits) -> None:
    errors: dict[str, list[str]] = {}

    def err(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    lo, hi = IEC_MIN_CURRENT, STATION_MAX_CURRENT
    for field, label in (
        ("max_current", "The max current"),
        ("min_current", "The min current"),
        ("installer_max", "The installer's max"),
    ):
        value = getattr(limits, field)
        if not isinstance(value, int) or not lo <= value <= hi:
            err(field, f"{label} must be a whole number of ampere from {lo} to {hi} A.")
    if not errors:
        if limits.min_current > limits.max_current:
            err(
                "min_current",
                f"The min current ({limits.min_current} A) is above the max current "
                f"({limits.max_current} A).",
            )
        if limits.max_current > limits.installer_max:
            err(
                "max_current",
                f"The max current ({limits.max_current} A) is above the installer's max "
                f"({limits.installer_max} A), which nothing may override.",
            )
        fs = limits.fail_safe_current
        if fs != 0 and not lo <= fs <= limits.installer_max:
            err(
                "fail_safe_current",
                f"The fail-safe current must be 0 A or from {lo} A to the installer's max "
                f"({limits.installer_max} A).",
            )
    if limits.phase_rotation not in PhaseRotation.values:
        err("phase_rotation", "Choose L1-L2-L3, L2-L3-L1 or L3-L1-L2.")
    if limits.shedding_inputs not in SheddingInputs.values:
        err("shedding_inputs", "Choose none, IN1+IN2 or IN2 only.")
    if not isinstance(limits.priority, int) or not 0 <= limits.priority <= 9:
        err("priority", "The priority must be from 0 to 9.")
    if errors:
        raise ValidationError(errors)


def station_limits_set(*, station: Station, **fields: Any) -> StationLimits:
    """Create or change the station's limits; fields not given keep their value."""
    unknown = set(fields) - set(LIMIT_FIELDS)
    if unknown:
        raise TypeError(f"unknown fields: {sorted(unknown)}")
    limits = station_limits_get(station=station)
    for name, value in fields.items():
        setattr(limits, name, value)
    _check_station_limits(limits)
    limits.save()
    _changed(station.organization_id)
    return limits


def station_limits_reset(*, station: Station) -> None:
    StationLimits.objects.filter(station=station).delete()
    _changed(station.organization_id)


# --- tree nodes ---------------------------------------------------------------------------


def _lock_tree(organization: Organization) -> None:
    """Serialise the changes of one organization's tree (a loop check must see the others)."""
    Organization.objects.select_for_update().filter(pk=organization.pk).first()


def _check_limit(errors: dict, field: str, value: Any, label: str, *, low: int = 1) -> None:
    if not isinstance(value, int) or not low <= value <= NODE_MAX_LIMIT:
        errors.setdefault(field, []).append(
            f"{label} must be a whole number of ampere from {low} to {NODE_MAX_LIMIT:,} A."
        )


def _check_node(node: TreeNode) -> None:
    errors: dict[str, list[str]] = {}
    if not (node.name or "").strip():
        errors["name"] = ["Enter a name."]
    for phase in ("l1", "l2", "l3"):
        _check_limit(errors, f"limit_{phase}", getattr(node, f"limit_{phase}"), "The limit")
    if not errors:
        top = max(node.limits)
        if not isinstance(node.safety_margin, int) or not 0 <= node.safety_margin < min(
            node.limits
        ):
            errors["safety_margin"] = [
                f"The safety margin must be from 0 A to below the smallest limit "
                f"({min(node.limits)} A)."
            ]
        fb = node.fallback_limit
        if fb is not None and (not isinstance(fb, int) or not 0 <= fb <= top):
            errors["fallback_limit"] = [
                f"The fallback limit must be from 0 A to the node's limit ({top} A)."
            ]
    if node.shed_signal not in ShedSignal.values:
        errors["shed_signal"] = ["Choose none, to no charging or to the minimum."]
    if node.parent_id is not None and node.parent.organization_id != node.organization_id:
        errors["parent"] = ["Choose a node of this organization."]
    if errors:
        raise ValidationError(errors)


def _check_no_loop(node: TreeNode, parent: TreeNode | None) -> None:
    """Refuse to put ``node`` below itself or one of its descendants."""
    if parent is None or node.pk is None:
        return
    if parent.pk == node.pk:
        raise ValidationError({"parent": [f"{node.name} cannot be its own parent."]})
    parents = dict(
        TreeNode.objects.filter(organization_id=node.organization_id).values_list("id", "parent_id")
    )
    seen: set[int] = set()
    current: int | None = parent.pk
    while current is not None and current not in seen:
        if current == node.pk:
            raise ValidationError(
                {
                    "parent": [
                        f"{parent.name} is below {node.name}: putting {node.name} under it "
                        f"would make a loop in the tree."
                    ]
                }
            )
        seen.add(current)
        current = parents.get(current)


def _unique_name(model: type, organization: Organization, name: str, pk: int | None) -> None:
    taken = model.objects.filter(organization=organization, name__iexact=name).exclude(pk=pk)
    if taken.exists():
        what = "node" if model is TreeNode else "group"
        raise ValidationError({"name": [f"There is already a {what} named {name}."]})


NODE_FIELDS = (
    "name",
    "parent",
    "limit_l1",
    "limit_l2",
    "limit_l3",
    "safety_margin",
    "fallback_limit",
    "shed_signal",
)


def _apply_shed(node: TreeNode, signal: str, source: str, now: datetime) -> None:
    if signal != node.shed_signal or node.shed_since is None:
        node.shed_since = None if signal == ShedSignal.NONE else now
    node.shed_signal = signal
    node.shed_source = "" if signal == ShedSignal.NONE else source


def _save_node(node: TreeNode, *, shed_source: str, **fields: Any) -> TreeNode:
    unknown = set(fields) - set(NODE_FIELDS)
    if unknown:
        raise TypeError(f"unknown fields: {sorted(unknown)}")
    signal = fields.pop("shed_signal", None)
    for name, value in fields.items():
        setattr(node, name, value.strip() if name == "name" else value)
    if signal is not None:
        _apply_shed(node, signal, shed_source, timezone.now())
    _check_node(node)
    with transaction.atomic():
        _lock_tree(node.organization)
        _unique_name(TreeNode, node.organization, node.name, node.pk)
        _check_no_loop(node, node.parent)
        try:
            with transaction.atomic():
                node.save()
        except IntegrityError as exc:
            raise ValidationError(
                {"name": [f"There is already a node named {node.name}."]}
            ) from exc
    _changed(node.organization_id, node.pk)
    return node


def node_create(
    *,
    organization: Organization,
    name: str,
    limit_l1: int,
    limit_l2: int | None = None,
    limit_l3: int | None = None,
    parent: TreeNode | None = None,
    safety_margin: int = 0,
    fallback_limit: int | None = None,
    shed_signal: str = ShedSignal.NONE,
    shed_source: str = "portal",
) -> TreeNode:
    """A node of the tree; ``limit_l2``/``limit_l3`` default to ``limit_l1``."""
    node = TreeNode(organization=organization)
    return _save_node(
        node,
        shed_source=shed_source,
        name=name,
        parent=parent,
        limit_l1=limit_l1,
        limit_l2=limit_l1 if limit_l2 is None else limit_l2,
        limit_l3=limit_l1 if limit_l3 is None else limit_l3,
        safety_margin=safety_margin,
        fallback_limit=fallback_limit,
        shed_signal=shed_signal,
    )


def node_update(*, node: TreeNode, shed_source: str = "portal", **fields: Any) -> TreeNode:
    """Change a node; moving it under one of its descendants is refused (a loop)."""
    return _save_node(node, shed_source=shed_source, **fields)


def node_set_shedding(*, node: TreeNode, signal: str, source: str = "API") -> TreeNode:
    """Set the cloud shedding signal; ``shed_since`` is when the current signal began."""
    return _save_node(node, shed_source=source, shed_signal=signal)


def node_delete(*, node: TreeNode) -> None:
    """Refused while nodes or groups hang below it (they would lose their fuse)."""
    with transaction.atomic():
        _lock_tree(node.organization)
        children = [c.name for c in node.children.all()] + [g.name for g in node.groups.all()]
        if children:
            raise Conflict(
                f"{node.name} still has {', '.join(sorted(children))} below it: move or delete "
                f"them first.",
                code="node_not_empty",
            )
        organization_id, parent_id = node.organization_id, node.parent_id
        node.delete()
    _changed(organization_id, parent_id)


# --- groups -------------------------------------------------------------------------------

GROUP_FIELDS = ("name", "max_current", "failure_action", "node")


def _check_group(group: LoadGroup) -> None:
    errors: dict[str, list[str]] = {}
    if not (group.name or "").strip():
        errors["name"] = ["Enter a name."]
    _check_limit(errors, "max_current", group.max_current, "The max current", low=IEC_MIN_CURRENT)
    if group.failure_action not in FailureAction.values:
        errors["failure_action"] = ["Choose fail-safe current, stop or keep the last setpoint."]
    if group.node_id is not None and group.node.organization_id != group.organization_id:
        errors["node"] = ["Choose a node of this organization."]
    if errors:
        raise ValidationError(errors)


def _set_members(group: LoadGroup, stations: Iterable[Station]) -> None:
    stations = list(stations)
    foreign = [s for s in stations if s.organization_id != group.organization_id]
    if foreign:
        raise ValidationError({"stations": ["Choose stations of this organization."]})
    taken = (
        LoadGroupMember.objects.filter(station__in=stations)
        .exclude(group=group)
        .select_related("station", "group")
        .order_by("station__charge_point_id")
    )
    messages = [f"{m.station.charge_point_id} is already in group {m.group.name}." for m in taken]
    if messages:
        raise ValidationError({"stations": messages})
    wanted = {s.pk for s in stations}
    LoadGroupMember.objects.filter(group=group).exclude(station_id__in=wanted).delete()
    have = set(LoadGroupMember.objects.filter(group=group).values_list("station_id", flat=True))
    # One by one, not bulk_create: each new member is an entry in the audit trail (bulk
    # inserts send no signals), and a group gains a handful of stations at a time.
    for pk in sorted(wanted - have):
        LoadGroupMember.objects.create(group=group, station_id=pk)


def _save_group(group: LoadGroup, stations: Iterable[Station] | None, **fields: Any) -> LoadGroup:
    unknown = set(fields) - set(GROUP_FIELDS)
    if unknown:
        raise TypeError(f"unknown fields: {sorted(unknown)}")
    for name, value in fields.items():
        setattr(group, name, value.strip() if name == "name" else value)
    _check_group(group)
    try:
        with transaction.atomic():
            _lock_tree(group.organization)
            _unique_name(LoadGroup, group.organization, group.name, group.pk)
            group.save()
            if stations is not None:
                _set_members(group, stations)
    except IntegrityError as exc:
        # A concurrent change won the race for a name or a station: say which, as above.
        raise ValidationError(
            {"stations": ["A station is already in another group, or the name is taken."]}
        ) from exc
    _changed(group.organization_id, group.node_id)
    return group


def group_create(
    *,
    organization: Organization,
    name: str,
    max_current: int,
    failure_action: str = FailureAction.FAIL_SAFE,
    node: TreeNode | None = None,
    stations: Iterable[Station] = (),
) -> LoadGroup:
    """A static group; its stations must not be in another group. No cap on its size."""
    group = LoadGroup(organization=organization)
    return _save_group(
        group,
        stations,
        name=name,
        max_current=max_current,
        failure_action=failure_action,
        node=node,
    )


def group_update(
    *, group: LoadGroup, stations: Iterable[Station] | None = None, **fields: Any
) -> LoadGroup:
    """Change a group; ``stations`` (if given) replaces its members."""
    return _save_group(group, stations, **fields)


def group_delete(*, group: LoadGroup) -> None:
    organization_id, node_id = group.organization_id, group.node_id
    group.delete()
    _changed(organization_id, node_id)


# --- meters -------------------------------------------------------------------------------

_TOPIC_RE = re.compile(r"^[^#+\x00]{1,200}$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def meter_token_matches(meter: Meter, token: str | None) -> bool:
    if not token or not meter.token_hash:
        return False
    return hmac.compare_digest(meter.token_hash, token_hash(token))


def _check_meter(meter: Meter) -> None:
    errors: dict[str, list[str]] = {}
    if not (meter.name or "").strip():
        errors["name"] = ["Enter a name."]
    topic = meter.mqtt_topic
    if not _TOPIC_RE.match(topic) or topic.startswith("$") or topic != topic.strip():
        errors["mqtt_topic"] = [
            "An MQTT topic is 1 to 200 characters without + or # (no wildcards), not starting "
            "with $ and without surrounding spaces."
        ]
    elif Meter.objects.filter(mqtt_topic=topic).exclude(pk=meter.pk).exists():
        errors["mqtt_topic"] = ["Another meter already uses this MQTT topic."]
    stale = meter.stale_after
    if not isinstance(stale, int) or not 5 <= stale <= MAX_STALE_AFTER:
        errors["stale_after"] = [f"Stale after must be from 5 to {MAX_STALE_AFTER} seconds."]
    if errors:
        raise ValidationError(errors)


def meter_create(
    *,
    node: TreeNode,
    name: str,
    mqtt_topic: str = "",
    stale_after: int = 60,
) -> tuple[Meter, str]:
    """The reference meter of ``node`` and its REST token (shown once: only its hash is kept).

    An empty topic gets a unique one (``chargeportal/meters/<random>``)."""
    if Meter.objects.filter(node=node).exists():
        raise ValidationError({"node": [f"{node.name} already has a meter."]})
    token = secrets.token_urlsafe(TOKEN_BYTES)
    meter = Meter(
        node=node,
        name=name.strip(),
        mqtt_topic=(mqtt_topic or "").strip() or f"{MQTT_TOPIC_PREFIX}{uuid.uuid4().hex}",
        stale_after=stale_after,
        token_hash=token_hash(token),
        token_set_at=timezone.now(),
    )
    _check_meter(meter)
    try:
        with transaction.atomic():
            meter.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"mqtt_topic": ["Another meter already uses this MQTT topic."]}
        ) from exc
    _changed(node.organization_id, node.pk)
    return meter, token


def meter_update(*, meter: Meter, **fields: Any) -> Meter:
    unknown = set(fields) - {"name", "mqtt_topic", "stale_after"}
    if unknown:
        raise TypeError(f"unknown fields: {sorted(unknown)}")
    for name, value in fields.items():
        setattr(meter, name, value.strip() if isinstance(value, str) else value)
    _check_meter(meter)
    try:
        with transaction.atomic():
            meter.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"mqtt_topic": ["Another meter already uses this MQTT topic."]}
        ) from exc
    _changed(meter.node.organization_id, meter.node_id)
    return meter


def meter_rotate_token(*, meter: Meter) -> str:
    """A new REST token; the old one stops working at once."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    meter.token_hash = token_hash(token)
    meter.token_set_at = timezone.now()
    meter.save(update_fields=["token_hash", "token_set_at"])
    return token


def meter_delete(*, meter: Meter) -> None:
    organization_id, node_id = meter.node.organization_id, meter.node_id
    meter.delete()
    _changed(organization_id, node_id)


def meter_reading_record(
    *,
    meter: Meter,
    current: tuple[float, float, float],
    power_w: float | None = None,
    time: datetime | None = None,
) -> MeterReading:
    """Store a validated reading (REST and MQTT alike) and keep the latest on the meter.

    A reading older than the meter's latest (late delivery) joins the series but does not
    replace the latest: the conditional UPDATE makes that hold under concurrency too.
    """
    time = time or timezone.now()
    l1, l2, l3 = (float(c) for c in current)
    with transaction.atomic():
        reading = MeterReading.objects.create(
            meter=meter, time=time, l1=l1, l2=l2, l3=l3, power_w=power_w
        )
        Meter.objects.filter(pk=meter.pk).filter(
            Q(last_reading_at__isnull=True) | Q(last_reading_at__lte=time)
        ).update(
            last_current_l1=l1,
            last_current_l2=l2,
            last_current_l3=l3,
            last_power_w=power_w,
            last_reading_at=time,
        )
    organization_id, node_id = meter.node.organization_id, meter.node_id  # node selected
    transaction.on_commit(lambda: meter_read(organization_id, node_id))
    return reading


def meter_readings_purge(*, before: datetime) -> int:
    """Delete readings older than ``before`` (the latest stays on each meter row)."""
    deleted, _ = MeterReading.objects.filter(time__lt=before).delete()
    return deleted
