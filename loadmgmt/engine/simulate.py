"""A time-stepped simulator: cars come and go, meters are noisy and late, stations acknowledge
late or drop offline, and a controller runs the engine every cycle.

It is deliberately pessimistic where the real world is: the controller only knows what
late, noisy meters and acknowledgements tell it, and a station applies a command only when it
arrives. What it measures is the *true* load at every fuse (cars' real draw plus other loads),
so that ``overload ampere-seconds`` is the real thing the engine promises to keep at 0.

Model of a station (OCPP 1.6 as DESIGN.md wires it):

* the live setpoint is bound to the charging session: when the car leaves, the station falls
  back to 0 A until the engine admits the next car (so a new car never inherits an offer that was
  counted on fewer phases);
* every command carries a lease; a station that hears nothing applies its last setpoint until
  the lease ends and then its fail-safe current;
* a car draws ``min(offer, its own limit)`` on the phases its charger has (1, 2 or 3), or on
  the station's L1 when the offer is 1-phase; near the end it tapers; when full it finishes.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .allocate import Topology, allocate
from .model import (
    DEFAULT_SETTINGS,
    OFF,
    CarState,
    Node,
    PhaseRotation,
    Setpoint,
    Settings,
    ShedMode,
    Station,
    Triple,
)
from .transition import Step, StepKind, Transition, plan_transition

VOLTAGE = 230.0


@dataclass(frozen=True, slots=True)
class StationSpec:
    """A simulated station; ``offline`` lists (start, end) intervals without connection."""

    id: str
    parent: str
    rotation: PhaseRotation = PhaseRotation.L1_L2_L3
    min_current: int = 6
    max_current: int = 32
    installer_max: int = 32
    can_switch_phases: bool = True
    fail_safe_current: int = 0
    offline: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class CarSpec:
    """A car's visit: it plugs in at ``arrive``, leaves at ``leave`` (full or not)."""

    station_id: str
    arrive: float
    leave: float
    energy_kwh: float = 20.0
    #: Phases its on-board charger uses: 1 (many plug-in hybrids), 2 or 3.
    phases: int = 3
    max_current: int = 32
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Background:
    """Other (non-EV) load at a node: a bounded random walk around ``base`` per phase."""

    node_id: str
    base: Triple
    amplitude: float = 0.0
    #: Largest change per second (A/s): what the margin must cover between two readings.
    rate: float = 0.0


@dataclass(frozen=True, slots=True)
class ShedEvent:
    node_id: str
    start: float
    end: float
    mode: ShedMode
    source: str = "ripple control"


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything a run needs. Times in seconds from 0."""

    name: str
    description: str
    nodes: tuple[Node, ...]
    stations: tuple[StationSpec, ...]
    cars: tuple[CarSpec, ...]
    duration: float
    backgrounds: tuple[Background, ...] = ()
    sheds: tuple[ShedEvent, ...] = ()
    dt: float = 1.0
    cycle: float = 10.0
    #: Meters report what was true this many seconds ago.
    meter_delay: float = 0.0
    #: Uniform noise bound (A) of the node meters and of the station meters.
    node_meter_noise: float = 0.0
    station_meter_noise: float = 0.0
    #: A command reaches the station (and its acknowledgement the controller) after a delay
    #: drawn uniformly from this range.
    ack_delay: tuple[float, float] = (0.0, 0.0)
    ack_timeout: float = 15.0
    lease: float = 60.0
    seed: int = 0
    settings: Settings = DEFAULT_SETTINGS
    #: Node shown in the plot (default: the first root).
    plot_node: str | None = None
    #: ``False`` sends every change at once instead of decreases first (to show why not).
    ordered_transitions: bool = True
    #: (node id, start, end): the node's meter sends nothing in this interval.
    meter_outages: tuple[tuple[str, float, float], ...] = ()


@dataclass(slots=True)
class Metrics:
    """What one run measured. ``overload_as`` must be 0 at every node."""

    overload_as: dict[str, float]
    utilisation: float
    jain: float
    energy_kwh: float
    sessions: int
    phase_switches_mean: float
    phase_switches_max: int
    engine_calls: int

    def table(self) -> str:
        worst = max(self.overload_as.values(), default=0.0)
        rows = [
            ("overload ampere-seconds (worst node)", f"{worst:.1f}"),
            ("utilisation of available capacity", f"{self.utilisation:.1%}"),
            ("Jain fairness (equal priority, per step)", f"{self.jain:.3f}"),
            ("energy delivered", f"{self.energy_kwh:.1f} kWh"),
            ("sessions", str(self.sessions)),
            (
                "phase switches per session (mean / max)",
                f"{self.phase_switches_mean:.2f} / {self.phase_switches_max}",
            ),
            ("engine runs", str(self.engine_calls)),
        ]
        return "\n".join(f"{k:<42} {v}" for k, v in rows)


@dataclass(slots=True)
class Trace:
    """Time series for the plot, at the plotted node."""

    node_id: str
    times: list[float] = field(default_factory=list)
    limit: list[Triple] = field(default_factory=list)
    load: list[Triple] = field(default_factory=list)
    other: list[Triple] = field(default_factory=list)
    #: Per car label, its drawn current (max over its phases) and its phases, per step.
    cars: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


@dataclass(slots=True)
class Result:
    scenario: str
    metrics: Metrics
    trace: Trace


@dataclass(slots=True)
class _Sim:
    """Mutable state of one simulated station and the car at it."""

    spec: StationSpec
    applied: Setpoint = OFF
    lease_until: float = 0.0
    car: CarSpec | None = None
    car_label: str = ""
    remaining_kwh: float = 0.0
    finished: bool = False
    draw: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per station phase
    switches: int = 0
    # controller's view
    acked: Setpoint = OFF
    pending: Setpoint | None = None
    drawn_seen: frozenset[int] | None = None


def run(scenario: Scenario) -> Result:
    """Run ``scenario`` and return its metrics and plot trace. Deterministic per seed."""
    rnd = random.Random(scenario.seed)
    nodes = scenario.nodes
    topo = Topology.build(nodes)
    idx = topo.index
    sims = {s.id: _Sim(s) for s in scenario.stations}
    leaf = {s.id: idx[s.parent] for s in scenario.stations}
    path = topo.path
    n_nodes = len(nodes)
    dt = scenario.dt

    bg_state: dict[str, list[float]] = {b.node_id: list(b.base) for b in scenario.backgrounds}
    bg_spec = {b.node_id: b for b in scenario.backgrounds}
    arrivals = sorted(scenario.cars, key=lambda c: (c.arrive, c.station_id))
    next_car = 0
    # (time, node true loads incl. other, other loads, station draws) for late meters
    history: deque[tuple[float, list[float], list[float], dict[str, tuple[float, ...]]]] = deque()
    # messages in flight: (deliver_at, station_id, setpoint)
    inflight: list[tuple[float, str, Setpoint]] = []
    step_wait: list[tuple[str, Setpoint]] = []  # changes of the current step awaiting acks
    step_up: list[tuple[str, Setpoint]] = []  # the increase step, sent after the decreases
    step_started = 0.0
    overload = dict.fromkeys((n.id for n in nodes), 0.0)
    used_sum = avail_sum = 0.0
    jain_sum = 0.0
    jain_n = 0
    energy = 0.0
    sessions: list[_Sim] = []
    switch_counts: list[int] = []
    engine_calls = 0
    plot_node = scenario.plot_node or nodes[topo.order[0]].id
    pn = idx[plot_node]
    trace = Trace(plot_node)
    next_cycle = 0.0
    shed_state = {n.id: (n.shed, n.shed_source) for n in nodes}
    offline_now: set[str] = set()
    readings: dict[str, tuple[Triple, float, Triple]] = {}

    def online(sid: str, t: float) -> bool:
        return not any(a <= t < b for a, b in sims[sid].spec.offline)

    t = 0.0
    steps = round(scenario.duration / dt)
    for _ in range(steps + 1):
        # -- world: cars arrive and leave ----------------------------------------------------
        while next_car < len(arrivals) and arrivals[next_car].arrive <= t:
            car = arrivals[next_car]
            s = sims[car.station_id]
            if s.car is None:
                s.car = car
                s.car_label = f"car {next_car + 1} @ {car.station_id}"
                s.remaining_kwh = car.energy_kwh
                s.finished = False
                s.switches = 0
                s.drawn_seen = None
                # The live profile ends with the session: a new car starts at 0 A.
                s.applied = Setpoint(0, s.applied.phases)
                s.acked = s.applied
            next_car += 1
        for s in sims.values():
            if s.car is not None and s.car.leave <= t:
                sessions.append(s)
                switch_counts.append(s.switches)
                s.car = None
                s.applied = Setpoint(0, s.applied.phases)
                if s.pending is None:
                    s.acked = s.applied
        for ev in scenario.sheds:
            if ev.start <= t < ev.end:
                shed_state[ev.node_id] = (ev.mode, ev.source)
            elif t >= ev.end and shed_state[ev.node_id][0] is ev.mode:
                shed_state[ev.node_id] = (ShedMode.NONE, "")

        # -- world: messages arrive; leases end ----------------------------------------------
        still: list[tuple[float, str, Setpoint]] = []
        for at, sid, sp in inflight:
            if at > t:
                still.append((at, sid, sp))
                continue
            s = sims[sid]
            if online(sid, t):
                if (
                    s.car is not None
                    and s.applied.current > 0
                    and sp.current > 0
                    and sp.phases != s.applied.phases
                ):
                    s.switches += 1  # a switch while charging: what cars dislike
                s.applied = sp
                s.lease_until = t + scenario.lease
                s.acked = sp
                if s.pending == sp:
                    s.pending = None
            # lost otherwise: the controller will time out
        inflight = still
        for sid, s in sims.items():
            if online(sid, t):
                if sid in offline_now:
                    # Back online: the controller reads what the station applies now.
                    offline_now.discard(sid)
                    s.acked = s.applied
                    s.pending = None
                s.lease_until = max(s.lease_until, t + scenario.lease - scenario.cycle)
            else:
                offline_now.add(sid)
                if t >= s.lease_until:
                    s.applied = Setpoint(s.spec.fail_safe_current, 3)

        # -- world: what every car draws ------------------------------------------------------
        for s in sims.values():
            car = s.car
            offer = s.applied.current
            if car is None or s.finished or offer < 6:
                s.draw = (0.0, 0.0, 0.0)
                continue
            limit = min(offer, car.max_current)
            if s.remaining_kwh < 2.0:  # taper near the end, as batteries do
                limit = min(limit, 8)
            cur = float(limit)
            if s.applied.phases == 1 or car.phases == 1:
                s.draw = (cur, 0.0, 0.0)
            elif car.phases == 2:
                s.draw = (cur, cur, 0.0)
            else:
                s.draw = (cur, cur, cur)
            kwh = sum(s.draw) * VOLTAGE * dt / 3.6e6
            energy += kwh
            s.remaining_kwh -= kwh
            if s.remaining_kwh <= 0:
                s.finished = True

        # -- world: other loads, true load at every fuse ---------------------------------------
        for nid, st in bg_state.items():
            b = bg_spec[nid]
            for g in range(3):
                v = st[g] + rnd.uniform(-b.rate, b.rate) * dt
                st[g] = min(max(v, b.base[g] - b.amplitude), b.base[g] + b.amplitude, 1e9)
                st[g] = max(st[g], 0.0)
        true = [0.0] * (3 * n_nodes)
        other = [0.0] * (3 * n_nodes)
        for nid, st in bg_state.items():
            for n in path[idx[nid]]:
                for g in range(3):
                    other[3 * n + g] += st[g]
        for sid, s in sims.items():
            rot = s.spec.rotation.value
            for n in path[leaf[sid]]:
                for p in range(3):
                    true[3 * n + rot[p]] += s.draw[p]
        for r in range(3 * n_nodes):
            true[r] += other[r]
        for n, node in enumerate(nodes):
            for g in range(3):
                excess = true[3 * n + g] - node.limit[g]
                if excess > 1e-9:
                    overload[node.id] += excess * dt
        history.append(
            (t, true, other, {sid: (*s.draw, s.applied.phases) for sid, s in sims.items()})
        )
        while len(history) > 2 and history[1][0] <= t - scenario.meter_delay:
            history.popleft()

        # -- metrics at the root ---------------------------------------------------------------
        root = topo.order[0]
        wanting = [
            s
            for s in sims.values()
            if s.car is not None and not s.finished and online(s.spec.id, t)
        ]
        if wanting:
            rn = nodes[root]
            for g in range(3):
                ev = true[3 * root + g] - other[3 * root + g]
                room = rn.limit[g] - rn.margin - other[3 * root + g]
                demand = 0.0
                for s in wanting:
                    assert s.car is not None
                    ph = s.spec.rotation.value
                    car_ph = [ph[0]] if s.car.phases == 1 else list(ph[: s.car.phases])
                    if g in car_ph:
                        demand += min(s.car.max_current, s.spec.max_current, s.spec.installer_max)
                used_sum += ev
                avail_sum += max(0.0, min(room, demand))
            prio0 = [
                s.applied.current
                for s in wanting
                if s.car is not None
                and s.car.priority == 0
                and s.car.max_current >= s.spec.max_current
                and s.remaining_kwh >= 2.0
            ]
            if len(prio0) >= 2:
                sq = sum(x * x for x in prio0)
                jain_sum += (sum(prio0) ** 2) / (len(prio0) * sq) if sq else 1.0
                jain_n += 1

        # -- trace -----------------------------------------------------------------------------
        trace.times.append(t)
        trace.limit.append(nodes[pn].limit)
        trace.load.append((true[3 * pn], true[3 * pn + 1], true[3 * pn + 2]))
        trace.other.append((other[3 * pn], other[3 * pn + 1], other[3 * pn + 2]))
        present = {s.car_label: s for s in sims.values() if s.car is not None}
        for label in present:
            trace.cars.setdefault(label, [])
        for label, series in trace.cars.items():
            s2 = present.get(label)
            if s2 is None:
                series.append((float("nan"), 0))
            else:
                series.append((max(s2.draw), s2.applied.phases))

        # -- controller: acknowledgements, timeouts, next step ----------------------------------
        if step_wait:
            step_wait = [(sid, sp) for sid, sp in step_wait if sims[sid].pending is not None]
            if step_wait and t - step_started > scenario.ack_timeout:
                # Lost commands: count those stations at the larger setpoint; abandon the plan.
                for sid, sp in step_wait:
                    s = sims[sid]
                    s.acked = _upper(s.acked, sp)
                    s.pending = None
                step_wait = []
                step_up = []
            if not step_wait and step_up:
                step_wait = _send(step_up, sims, inflight, t, rnd, scenario)
                step_started = t
                step_up = []
        if t >= next_cycle and not step_wait:
            next_cycle = t + scenario.cycle
            engine_calls += 1
            inputs = _engine_inputs(scenario, sims, history[0], topo, shed_state, readings, t, rnd)
            plan = allocate(inputs[0], inputs[1], t, scenario.settings, None)
            target = {sid: sp for sid, sp in plan.setpoints().items() if online(sid, t)}
            previous = {sid: sims[sid].acked for sid in target}
            tr = plan_transition(previous, target)
            if not scenario.ordered_transitions:
                tr = Transition(
                    (Step(StepKind.DECREASE, tuple(c for st_ in tr.steps for c in st_.changes)),)
                )
            step_up = []
            for step in tr.steps:
                changes = [(c.station_id, c.after) for c in step.changes]
                if step.kind is StepKind.DECREASE:
                    step_wait = _send(changes, sims, inflight, t, rnd, scenario)
                    step_started = t
                else:
                    step_up = changes
            if not step_wait and step_up:
                step_wait = _send(step_up, sims, inflight, t, rnd, scenario)
                step_started = t
                step_up = []
        t += dt

    for s in sims.values():
        if s.car is not None:
            sessions.append(s)
            switch_counts.append(s.switches)
    metrics = Metrics(
        overload_as=overload,
        utilisation=(used_sum / avail_sum) if avail_sum else 1.0,
        jain=(jain_sum / jain_n) if jain_n else 1.0,
        energy_kwh=energy,
        sessions=len(switch_counts),
        phase_switches_mean=(sum(switch_counts) / len(switch_counts)) if switch_counts else 0.0,
        phase_switches_max=max(switch_counts, default=0),
        engine_calls=engine_calls,
    )
    return Result(scenario.name, metrics, trace)


def _upper(a: Setpoint, b: Setpoint) -> Setpoint:
    """A setpoint at or above both: the larger current on the wider phases."""
    cur = max(a.current, b.current)
    if cur == 0:
        return a
    return Setpoint(cur, 3 if 3 in (a.phases, b.phases) else 1)


def _send(
    changes: Sequence[tuple[str, Setpoint]],
    sims: dict[str, _Sim],
    inflight: list[tuple[float, str, Setpoint]],
    t: float,
    rnd: random.Random,
    scenario: Scenario,
) -> list[tuple[str, Setpoint]]:
    lo, hi = scenario.ack_delay
    for sid, sp in changes:
        s = sims[sid]
        s.pending = sp
        inflight.append((t + rnd.uniform(lo, hi), sid, sp))
    return list(changes)


def _engine_inputs(
    scenario: Scenario,
    sims: dict[str, _Sim],
    sample: tuple[float, list[float], list[float], dict[str, tuple[float, ...]]],
    topo: Topology,
    shed_state: dict[str, tuple[ShedMode, str]],
    readings: dict[str, tuple[Triple, float, Triple]],
    t: float,
    rnd: random.Random,
) -> tuple[list[Node], list[Station]]:
    """What the controller knows: late, noisy readings and its own view of the setpoints."""
    at, true, _other, draws = sample
    nn = scenario.node_meter_noise
    sn = scenario.station_meter_noise
    nodes: list[Node] = []
    for n, node in enumerate(topo.nodes):
        mode, src = shed_state[node.id]
        if node.metered:
            out = any(nid == node.id and a <= t < b for nid, a, b in scenario.meter_outages)
            if not out or node.id not in readings:
                m = (
                    max(0.0, true[3 * n] + rnd.uniform(-nn, nn)),
                    max(0.0, true[3 * n + 1] + rnd.uniform(-nn, nn)),
                    max(0.0, true[3 * n + 2] + rnd.uniform(-nn, nn)),
                )
                # The stations' readings of the same moment, noisy too.
                ev = [0.0, 0.0, 0.0]
                for sid, s in sims.items():
                    if n in topo.path[topo.index[s.spec.parent]]:
                        rot = s.spec.rotation.value
                        for p in range(3):
                            x = draws[sid][p]
                            if x > 0:
                                ev[rot[p]] += max(0.0, x + rnd.uniform(-sn, sn))
                readings[node.id] = (m, at, (ev[0], ev[1], ev[2]))
            m, m_at, ev_at = readings[node.id]
            nodes.append(
                _replace_node(
                    node,
                    measured=m,
                    measured_at=m_at,
                    ev_measured=ev_at,
                    shed=mode,
                    shed_source=src,
                )
            )
        else:
            nodes.append(_replace_node(node, shed=mode, shed_source=src))
    stations: list[Station] = []
    for sid, s in sims.items():
        spec = s.spec
        car = s.car
        online = not any(a <= t < b for a, b in spec.offline)
        sample_draw = draws.get(sid, (0.0, 0.0, 0.0, 3))
        raw = sample_draw[:3]
        offered_phases = sample_draw[3]
        meas = tuple(max(0.0, x + rnd.uniform(-sn, sn)) if x > 0 else 0.0 for x in raw)
        if car is None:
            state = CarState.NO_CAR
        elif s.finished:
            state = CarState.FINISHED
        elif s.applied.current >= 6 and max(raw) > 0:
            state = CarState.CHARGING
        else:
            state = CarState.WAITING
        # Phases the car draws on, learnt only from readings taken while it was offered 3 phases
        # (a reading from before a switch to 3 phases would show one phase only).
        if (
            state is CarState.CHARGING
            and car is not None
            and at >= car.arrive
            and offered_phases == 3
            and max(meas) > 1.0
        ):
            seen = frozenset(p for p in range(3) if meas[p] > 1.0) | {0}
            s.drawn_seen = seen if s.drawn_seen is None else s.drawn_seen | seen
        # An unacknowledged command may or may not have been applied: count the larger.
        current = _upper(s.acked, s.pending) if s.pending is not None else s.acked
        stations.append(
            Station(
                id=sid,
                parent=spec.parent,
                rotation=spec.rotation,
                min_current=spec.min_current,
                max_current=spec.max_current,
                installer_max=spec.installer_max,
                can_switch_phases=spec.can_switch_phases,
                state=state,
                arrival=car.arrive if car is not None else None,
                drawn_phases=s.drawn_seen if car is not None else None,
                measured=meas if car is not None else None,  # type: ignore[arg-type]
                priority=car.priority if car is not None else 0,
                online=online,
                fail_safe_current=spec.fail_safe_current,
                lease_until=s.lease_until,
                setpoint=current,
                phase_switches=s.switches,
            )
        )
    return nodes, stations


def _replace_node(node: Node, **changes: object) -> Node:
    return replace(node, **changes)  # type: ignore[arg-type]
