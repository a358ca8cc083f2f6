"""The live view of load management: per node and phase the load against the limit, each
connector's setpoint, phases and reason, and a chart of the last hours.

The recompute builds the rows of the trees it planned (``trees_build``), keeps them in the
cache per tree (a recompute of some trees replaces only theirs) and pushes the rendered
fragment to the organization's browsers; ``summary_get`` puts the trees together for a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.cache import cache
from django.template.loader import render_to_string
from django.utils import timezone

from loadmgmt.engine import model as engine
from loadmgmt.models import (
    PHASE_VOLTAGE,
    ConnectorSetpoint,
    LoadGroup,
    NodeLoadSample,
    StationInputs,
    TreeNode,
)
from portal.live import watched
from stations.models import CommandStatus

# Answers that mean "I will not take profiles" rather than "I did not answer".
REFUSED = (CommandStatus.REJECTED, CommandStatus.NOT_SUPPORTED)
CHART_HOURS = 6
# The live table shows this many connectors (those that need attention first) and nodes; a
# site with thousands of stations is read through its nodes, not row by row.
MAX_CONNECTOR_ROWS = 200
MAX_NODE_ROWS = 150
CHART_W, CHART_H = 600, 120
PHASE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c")


def _index_key(organization_id: int) -> str:
    return f"loadmgmt:live-trees:{organization_id}"


def _tree_key(organization_id: int, root: str) -> str:
    return f"loadmgmt:live-tree:{organization_id}:{root}"


# Kept a day: the page shows the last plan even while the worker is down (it says when).
KEEP_SECONDS = 24 * 3600


@dataclass
class NodeRow:
    key: str
    name: str
    kind: str  # "node" or "group"
    depth: int
    limit: list[float]
    budget: list[float]
    planned: list[int]
    measured: list[float] | None
    shed: str
    shed_source: str
    shed_since: str

    @property
    def phases(self) -> list[dict]:
        out = []
        for i, name in enumerate(("L1", "L2", "L3")):
            limit = self.limit[i] or 1.0
            out.append(
                {
                    "name": name,
                    "planned": self.planned[i],
                    "limit": self.limit[i],
                    "budget": self.budget[i],
                    "measured": self.measured[i] if self.measured else None,
                    "percent": min(100, round(100 * self.planned[i] / limit)),
                }
            )
        return out


@dataclass
class ConnectorRow:
    station: str
    connector_id: int
    decision: str
    current: int
    phases: int
    power_kw: float
    accepted: str
    reason: str
    unresponsive: bool
    #: It answers, but refuses charging profiles: no smart charging (counted at what it took).
    refuses: bool = False


@dataclass
class Summary:
    """What the page shows: every tree's rows put together."""

    time: str
    nodes: list[NodeRow] = field(default_factory=list)
    connectors: list[ConnectorRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    more_connectors: int = 0
    more_nodes: int = 0


@dataclass
class TreeRows:
    """The live rows of one tree (a root node, or a group under no node, with everything
    below it), stored on its own so that a recompute of some trees replaces only theirs."""

    root: str
    #: The tree's place among the others (nodes before groups, then by name).
    order: tuple
    at: datetime
    nodes: list[NodeRow]
    #: Its first MAX_CONNECTOR_ROWS connectors in the table's order, as plain tuples (cheap
    #: to store: a large organization's trees hold thousands): see ``_connector_row``.
    connectors: list[tuple]
    connector_count: int
    warnings: list[str]


# Not answering first, then charging and waiting cars, then the rest.
_RANK = {"offline": 1, "charge": 2, "queued": 2, "shed": 3, "reserved": 3}


def trees_build(
    organization_id: int,
    nodes: list[engine.Node],
    roots: dict[str, str],
    plan: engine.Plan,
    states: dict[str, ConnectorSetpoint],
    station_trees: dict[str, str],
    station_labels: dict[int, str],
    now: datetime,
) -> dict[str, TreeRows]:
    """The rows of every tree in ``nodes`` (``roots``: node id → its tree's root;
    ``station_trees``: engine station id → its tree's root)."""
    parents = {n.id: n.parent for n in nodes}
    by_id = {n.id: n for n in nodes}

    def depth(node_id: str) -> int:
        d, p = 0, parents.get(node_id)
        while p is not None and d < len(parents):
            d, p = d + 1, parents.get(p)
        return d

    trees = {
        root: TreeRows(
            root=root,
            order=(root[0] != "n", by_id[root].label, root),
            at=now,
            nodes=[],
            connectors=[],
            connector_count=0,
            warnings=[],
        )
        for root in set(roots.values())
        if root in by_id
    }
    since = _shed_since(
        organization_id, [n.id for n in nodes if n.shed is not engine.ShedMode.NONE]
    )
    for node in _tree_order(nodes):
        load = plan.nodes.get(node.id)
        tree = trees.get(roots.get(node.id, ""))
        if load is None or tree is None:
            continue
        tree.nodes.append(
            NodeRow(
                key=node.id,
                name=node.label,
                kind="group" if node.id.startswith("g") else "node",
                depth=depth(node.id),
                limit=list(node.limit),
                budget=[round(x, 1) for x in load.budget],
                planned=list(load.planned),
                measured=[round(x, 1) for x in node.measured] if node.measured else None,
                shed=node.shed.value,
                shed_source=node.shed_source,
                shed_since=since.get(node.id, ""),
            )
        )
    per_tree: dict[str, list[tuple]] = {}
    for sid, state in states.items():
        tree = station_trees.get(sid)
        if tree in trees:
            per_tree.setdefault(tree, []).append(_connector_tuple(state, station_labels))
    for root, rows in per_tree.items():
        rows.sort(key=_row_order)
        trees[root].connector_count = len(rows)
        trees[root].connectors = rows[:MAX_CONNECTOR_ROWS]
    for warning, node_id in zip(plan.warnings, plan.warning_nodes, strict=False):
        tree = trees.get(roots.get(node_id, ""))
        if tree is not None:
            tree.warnings.append(warning)
    return trees


def _connector_tuple(state: ConnectorSetpoint, station_labels: dict[int, str]) -> tuple:
    unresponsive = state.unresponsive_since is not None
    return (
        (0 if unresponsive else _RANK.get(state.decision, 4), state.station_id, state.connector_id),
        station_labels.get(state.station_id, str(state.station_id)),
        state.connector_id,
        state.decision,
        state.target_current,
        state.target_phases,
        state.accepted_current,
        state.accepted_phases,
        state.reason,
        unresponsive,
        unresponsive and state.unresponsive_status in REFUSED,
    )


def _row_order(row: tuple) -> tuple:
    return row[0]


def _connector_row(row: tuple) -> ConnectorRow:
    (
        _order,
        station,
        connector_id,
        decision,
        current,
        phases,
        accepted_current,
        accepted_phases,
        reason,
        unresponsive,
        refuses,
    ) = row
    return ConnectorRow(
        station=station,
        connector_id=connector_id,
        decision=decision,
        current=current,
        phases=phases,
        power_kw=round(current * phases * PHASE_VOLTAGE / 1000, 1),
        accepted=f"{accepted_current} A × {accepted_phases}"
        if accepted_current is not None
        else "–",
        reason=reason,
        unresponsive=unresponsive,
        refuses=refuses,
    )


def summary_assemble(trees: list[TreeRows]) -> Summary | None:
    """The page's summary from the trees' rows (None before the first recompute)."""
    if not trees:
        return None
    trees = sorted(trees, key=lambda t: t.order)
    at = max(t.at for t in trees)
    summary = Summary(time=timezone.localtime(at).strftime("%H:%M:%S"))
    nodes = [row for t in trees for row in t.nodes]
    summary.more_nodes = max(0, len(nodes) - MAX_NODE_ROWS)
    summary.nodes = nodes[:MAX_NODE_ROWS]
    # Each tree keeps its first MAX_CONNECTOR_ROWS, so the first of all are among them.
    rows = sorted((row for t in trees for row in t.connectors), key=_row_order)
    summary.connectors = [_connector_row(row) for row in rows[:MAX_CONNECTOR_ROWS]]
    summary.more_connectors = max(
        0, sum(t.connector_count for t in trees) - len(summary.connectors)
    )
    summary.warnings = [w for t in trees for w in t.warnings]
    return summary


def _tree_order(nodes: list[engine.Node]) -> list[engine.Node]:
    children: dict[str | None, list[engine.Node]] = {}
    for n in nodes:
        children.setdefault(n.parent, []).append(n)
    out: list[engine.Node] = []

    def walk(parent: str | None) -> None:
        for n in sorted(children.get(parent, []), key=lambda n: (n.id[0] != "n", n.label)):
            out.append(n)
            walk(n.id)

    walk(None)
    return out


def _shed_since(organization_id: int, shed: list[str]) -> dict[str, str]:
    """When each shed node or group (engine ids) began shedding (cloud signal or a station's
    inputs). Nothing shed, nothing read: the common case, on every recompute."""
    out: dict[str, str] = {}
    node_ids = [int(key[1:]) for key in shed if key.startswith("n")]
    group_ids = [int(key[1:]) for key in shed if key.startswith("g")]
    if node_ids:
        for pk, since in (
            TreeNode.objects.filter(
                organization_id=organization_id, pk__in=node_ids, shed_since__isnull=False
            )
            .exclude(shed_signal="none")
            .values_list("pk", "shed_since")
        ):
            out[f"n{pk}"] = timezone.localtime(since).strftime("%Y-%m-%d %H:%M:%S")
    if group_ids:
        for group_id, since in StationInputs.objects.filter(
            station__load_group_member__group__organization_id=organization_id,
            station__load_group_member__group_id__in=group_ids,
        ).values_list("station__load_group_member__group_id", "since"):
            key = f"g{group_id}"
            text = timezone.localtime(since).strftime("%Y-%m-%d %H:%M:%S")
            out[key] = min(out.get(key, text), text)
    return out


def chart(organization_id: int, now: datetime | None = None) -> list[dict]:
    """Per node: SVG polylines of the planned load per phase and the limit, last hours."""
    now = now or timezone.now()
    start = now - timedelta(hours=CHART_HOURS)
    samples = NodeLoadSample.objects.filter(organization_id=organization_id, time__gte=start)
    by_node: dict[str, list[NodeLoadSample]] = {}
    for s in samples.order_by("time").only("node_key", "time", "planned", "limit"):
        by_node.setdefault(s.node_key, []).append(s)
    names = {
        f"n{pk}": name
        for pk, name in TreeNode.objects.filter(organization_id=organization_id).values_list(
            "pk", "name"
        )
    }
    names.update(
        {
            f"g{pk}": name
            for pk, name in LoadGroup.objects.filter(organization_id=organization_id).values_list(
                "pk", "name"
            )
        }
    )
    # The axis runs from the first sample when there are not 6 hours of them yet, so a new
    # site's chart is not a sliver at the right edge.
    first = min((rows[0].time for rows in by_node.values()), default=start)
    start = max(start, first)
    span = max((now - start).total_seconds(), 60.0)
    out = []
    for key, rows in sorted(by_node.items(), key=lambda kv: names.get(kv[0], kv[0])):
        if len(rows) < 2:
            continue  # a line needs two samples; the page says the chart is filling
        top = max(max(max(r.limit), max(r.planned)) for r in rows) or 1.0

        def x(t: datetime) -> float:
            return round((t - start).total_seconds() / span * CHART_W, 1)

        def y(v: float, top: float = top) -> float:
            return round(CHART_H - v / top * (CHART_H - 10), 1)

        lines = [
            {
                "colour": PHASE_COLOURS[p],
                "points": " ".join(f"{x(r.time)},{y(r.planned[p])}" for r in rows),
                "name": f"L{p + 1}",
            }
            for p in range(3)
        ]
        limit = " ".join(f"{x(r.time)},{y(max(r.limit))}" for r in rows)
        out.append(
            {
                "key": key,
                "name": names.get(key, key),
                "lines": lines,
                "limit": limit,
                "top": round(top),
            }
        )
    return out


def trees_store(organization_id: int, trees: dict[str, TreeRows], whole: bool) -> None:
    """Keep the trees' rows for page loads. ``whole``: these are all the organization's
    trees (a tree deleted since is dropped from the index); else they replace their own
    and join the index if they are new."""
    cache.set_many(
        {_tree_key(organization_id, root): rows for root, rows in trees.items()},
        timeout=KEEP_SECONDS,
    )
    index_key = _index_key(organization_id)
    if whole:
        cache.set(index_key, sorted(trees), timeout=KEEP_SECONDS)
        return
    index = cache.get(index_key) or []
    missing = sorted(set(trees) - set(index))
    if missing:
        cache.set(index_key, index + missing, timeout=KEEP_SECONDS)


def summary_get(organization_id: int) -> Summary | None:
    index = cache.get(_index_key(organization_id)) or []
    stored = cache.get_many([_tree_key(organization_id, root) for root in index])
    return summary_assemble(list(stored.values()))


def _pushed_key(organization_id: int) -> str:
    return f"loadmgmt:live-pushed:{organization_id}"


def _trailing_key(organization_id: int) -> str:
    return f"loadmgmt:live-trailing:{organization_id}"


def publish(organization, trees: dict[str, TreeRows], whole: bool, data: dict) -> None:
    """Keep the trees' rows for page loads and push the summary to the organization's
    browsers (``whole``: ``trees`` are all of them).

    Rendering the table costs about as much as the recompute's reads, and a car's arrival
    causes several recomputes within a second: the first change is pushed at once, later
    ones within ``LOADMGMT_LIVE_PUSH_SECONDS`` are merged into one push of the newest state
    at the end of the interval (a Celery task), so browsers never miss the final state."""
    from loadmgmt import conf
    from loadmgmt.tasks import eager, loadmgmt_live_push

    trees_store(organization.pk, trees, whole)
    if not watched(organization.pk):
        return  # a page loaded later reads the stored rows
    interval = conf.live_push_seconds()
    if interval <= 0 or eager() or cache.add(_pushed_key(organization.pk), 1, timeout=interval):
        summary = summary_assemble(list(trees.values())) if whole else summary_get(organization.pk)
        _push(organization, summary, data)
    elif cache.add(_trailing_key(organization.pk), 1, timeout=interval + 30):
        loadmgmt_live_push.apply_async((organization.pk,), countdown=interval)


def publish_latest(organization) -> None:
    """The trailing push: the newest stored summary (the interval starts again)."""
    from loadmgmt import conf

    cache.delete(_trailing_key(organization.pk))  # first: a later change schedules again
    cache.set(_pushed_key(organization.pk), 1, timeout=max(conf.live_push_seconds(), 0.1))
    summary = summary_get(organization.pk)
    if summary is not None:
        _push(organization, summary, {})


def _push(organization, summary: Summary, data: dict) -> None:
    from portal.live import org_group, push

    push(
        org_group(organization.pk),
        "load.changed",
        data=data,
        fragments={"load-live": fragment(organization, summary)},
    )


def fragment(organization, summary: Summary | None) -> str:
    """The live part of the page (pushed after every recompute)."""
    return render_to_string("loadmgmt/_live.html", {"organization": organization, "live": summary})


def chart_context(organization) -> dict:
    return {
        "organization": organization,
        "charts": chart(organization.pk),
        "chart_w": CHART_W,
        "chart_h": CHART_H,
        "chart_hours": CHART_HOURS,
    }
