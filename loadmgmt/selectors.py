"""Reads of the load-management configuration; organization first.

``tree_for`` builds the overview (nodes, groups, stations, meters, warnings) in a fixed number
of queries; ``engine_nodes`` / ``engine_station_settings`` turn the configuration into the
engine's inputs (the recompute adds the live state: cars, setpoints, online).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Prefetch, QuerySet

from loadmgmt.engine import model as engine
from loadmgmt.models import (
    LoadGroup,
    LoadGroupMember,
    Meter,
    PhaseRotation,
    SheddingInputs,
    ShedSignal,
    StationLimits,
    TreeNode,
)
from portal.models import Organization
from stations.models import Station

PHASES = ("L1", "L2", "L3")


def nodes_for(organization: Organization) -> QuerySet[TreeNode]:
    return TreeNode.objects.for_tenant(organization).select_related("parent", "meter")


def groups_for(organization: Organization) -> QuerySet[LoadGroup]:
    members = LoadGroupMember.objects.select_related("station").order_by("station__charge_point_id")
    return (
        LoadGroup.objects.for_tenant(organization)
        .select_related("node")
        .prefetch_related(Prefetch("members", queryset=members))
    )


def meters_for(organization: Organization) -> QuerySet[Meter]:
    return Meter.objects.for_tenant(organization).select_related("node")


def meter_is_stale(meter: Meter, *, now: datetime) -> bool:
    return meter.is_stale(now)


def node_is_stale(node: TreeNode, *, now: datetime) -> bool:
    """Whether the node's reference meter is stale at ``now`` (no reading, or too old).

    A node without a meter is never stale (its limit applies as it is)."""
    meter = node.meter if _has_meter(node) else None
    return meter is not None and meter.is_stale(now)


def _has_meter(node: TreeNode) -> bool:
    try:
        node.meter  # noqa: B018 - the reverse one-to-one raises when there is none
    except Meter.DoesNotExist:
        return False
    return True


def station_group(station: Station) -> LoadGroup | None:
    member = LoadGroupMember.objects.select_related("group").filter(station=station).first()
    return member.group if member else None


# --- the overview -------------------------------------------------------------------------


@dataclass
class StationRow:
    station: Station
    limits: StationLimits


@dataclass
class GroupView:
    group: LoadGroup
    stations: list[StationRow]
    warnings: list[str] = field(default_factory=list)


@dataclass
class NodeView:
    node: TreeNode
    meter: Meter | None
    stale: bool
    children: list[NodeView] = field(default_factory=list)
    groups: list[GroupView] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Tree:
    roots: list[NodeView]
    loose_groups: list[GroupView]
    ungrouped: list[StationRow]
    warnings: list[str]
    nodes: list[TreeNode]


def _over_parent(child: str, limits, parent: TreeNode) -> list[str]:
    return [
        f"{child}: the limit on {PHASES[i]} ({limits[i]} A) exceeds {parent.name}'s "
        f"({parent.limits[i]} A); {parent.name}'s limit applies."
        for i in range(3)
        if limits[i] > parent.limits[i]
    ]


def tree_for(organization: Organization, *, now: datetime) -> Tree:
    """The whole configuration of one organization, with its warnings (6 queries).

    Warnings flag what is allowed but probably wrong: a child whose limit exceeds its
    parent's, a group whose stations' fail-safe currents exceed its max current, a stale
    meter."""
    nodes = list(nodes_for(organization).order_by("name"))
    groups = list(groups_for(organization).order_by("name"))
    stations = list(Station.objects.for_tenant(organization).order_by("charge_point_id"))
    limits = {lim.station_id: lim for lim in StationLimits.objects.filter(station__in=stations)}

    def row(station: Station) -> StationRow:
        return StationRow(station, limits.get(station.pk) or StationLimits.defaults(station))

    views: dict[int, NodeView] = {}
    for node in nodes:
        meter = node.meter if _has_meter(node) else None
        views[node.pk] = NodeView(node, meter, meter is not None and meter.is_stale(now))
    roots: list[NodeView] = []
    warnings: list[str] = []
    for node in nodes:
        view = views[node.pk]
        if node.parent_id is None:
            roots.append(view)
        else:
            views[node.parent_id].children.append(view)
            view.warnings += _over_parent(node.name, node.limits, node.parent)
        if view.stale:
            view.warnings.append(
                f"{node.name}: the meter {view.meter.name} is stale; the fallback limit "
                f"({node.fallback_limit or 0} A) applies."
            )
        warnings += view.warnings
    grouped: set[int] = set()
    loose: list[GroupView] = []
    by_station = {s.pk: s for s in stations}
    for group in groups:
        members = [row(by_station[m.station_id]) for m in group.members.all()]
        grouped.update(m.station_id for m in group.members.all())
        gv = GroupView(group, members)
        line = (group.max_current,) * 3
        if group.node_id is not None:
            gv.warnings += _over_parent(f"group {group.name}", line, group.node)
        fail_safe = sum(r.limits.fail_safe_current for r in members)
        if fail_safe > group.max_current:
            gv.warnings.append(
                f"group {group.name}: the stations' fail-safe currents add up to {fail_safe} A, "
                f"above its {group.max_current} A: offline stations alone could overload it."
            )
        warnings += gv.warnings
        if group.node_id is None:
            loose.append(gv)
        else:
            views[group.node_id].groups.append(gv)
    ungrouped = [row(s) for s in stations if s.pk not in grouped]
    return Tree(roots, loose, ungrouped, warnings, nodes)


# --- the engine's inputs ------------------------------------------------------------------


def node_engine_id(node_id: int) -> str:
    return f"n{node_id}"


def group_engine_id(group_id: int) -> str:
    return f"g{group_id}"


_SHED = {
    ShedSignal.NONE: engine.ShedMode.NONE,
    ShedSignal.TO_ZERO: engine.ShedMode.TO_ZERO,
    ShedSignal.TO_MIN: engine.ShedMode.TO_MIN,
}


def engine_nodes(organization: Organization, *, now: datetime) -> list[engine.Node]:
    """Tree nodes and groups as engine ``Node`` objects (times as timestamps).

    A group is a node with its max current on every phase below its tree node. Station-input
    shedding is live state and is added by the recompute."""
    out: list[engine.Node] = []
    for node in nodes_for(organization):
        meter = node.meter if _has_meter(node) else None
        fb = node.fallback_limit
        out.append(
            engine.Node(
                node_engine_id(node.pk),
                f"n{node.parent_id}" if node.parent_id else None,
                tuple(float(x) for x in node.limits),
                name=node.name,
                has_meter=meter is not None,
                measured=meter.last_current if meter else None,
                measured_at=meter.last_reading_at.timestamp()
                if meter and meter.last_reading_at
                else None,
                stale_after=float(meter.stale_after) if meter else 60.0,
                fallback_limit=(float(fb),) * 3 if fb is not None else None,
                margin=float(node.safety_margin),
                shed=_SHED[ShedSignal(node.shed_signal)],
                shed_source=node.shed_source,
            )
        )
    for group in LoadGroup.objects.for_tenant(organization):
        out.append(
            engine.Node(
                group_engine_id(group.pk),
                f"n{group.node_id}" if group.node_id else None,
                (float(group.max_current),) * 3,
                name=group.name,
            )
        )
    return out


def engine_station_settings(
    organization: Organization, *, group_ids: list[int] | None = None
) -> dict[int, dict]:
    """Per grouped station (by pk; of these groups only), the engine ``Station`` keyword
    arguments from its configuration: parent, rotation, limits, phase switching, fail-safe,
    priority.

    Plain rows (no model instances): the recompute calls this for every station of an
    organization on every cycle."""
    members = LoadGroupMember.objects.filter(group__organization=organization)
    if group_ids is not None:
        members = members.filter(group_id__in=group_ids)
    members = members.values_list("station_id", "group_id")
    fields = (
        "station_id",
        "phase_rotation",
        "min_current",
        "max_current",
        "installer_max",
        "can_switch_phases",
        "fail_safe_current",
        "priority",
    )
    limits = StationLimits.objects.for_tenant(organization)
    if group_ids is None:
        limits = limits.filter(station__load_group_member__isnull=False)
    else:
        limits = limits.filter(station__load_group_member__group_id__in=group_ids)
    limits = {row[0]: row for row in limits.values_list(*fields)}
    default = StationLimits()
    fallback = (None, *(getattr(default, f) for f in fields[1:]))
    rotations = {value: PhaseRotation.to_engine(value) for value in PhaseRotation.values}
    out: dict[int, dict] = {}
    for station_id, group_id in members:
        _, rotation, low, high, installer, switch, fail_safe, priority = limits.get(
            station_id, fallback
        )
        out[station_id] = {
            "parent": f"g{group_id}",
            "rotation": rotations[rotation],
            "min_current": low,
            "max_current": high,
            "installer_max": installer,
            "can_switch_phases": switch,
            "fail_safe_current": fail_safe,
            "priority": priority,
        }
    return out


def shedding_inputs_mode(limits: StationLimits) -> engine.ShedMode:
    """What the station's wired inputs shed to when they are active."""
    return {
        SheddingInputs.NONE: engine.ShedMode.NONE,
        SheddingInputs.IN1_IN2: engine.ShedMode.TO_ZERO,
        SheddingInputs.IN2: engine.ShedMode.TO_MIN,
    }[SheddingInputs(limits.shedding_inputs)]
