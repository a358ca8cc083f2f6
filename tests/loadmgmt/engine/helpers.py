"""Independent checkers and hypothesis strategies for the engine's tests.

The checkers recompute loads from the allocations with the model's plain helpers
(``footprint``, ``offline_footprint``, ``node_loads``), not with the allocator's bookkeeping,
so that a bookkeeping bug cannot hide itself.
"""

from __future__ import annotations

import math
import os
import random

from hypothesis import strategies as st

from loadmgmt.engine.model import (
    CarState,
    Decision,
    Node,
    PhaseRotation,
    Plan,
    Setpoint,
    ShedMode,
    Station,
    footprint,
    node_loads,
    offline_footprint,
)

#: Examples per property test; CI may lower it (ENGINE_HYPOTHESIS_EXAMPLES=200).
EXAMPLES = int(os.environ.get("ENGINE_HYPOTHESIS_EXAMPLES", "1000"))
NOW = 10_000.0


def budgets(nodes: list[Node], stations: list[Station], now: float = NOW) -> dict[str, list[float]]:
    """Per node and grid phase, the budget for cars, with the cars' measured current summed
    independently of the allocator."""
    measured: dict[str, list[float]] = {}
    for s in stations:
        if s.measured is None:
            continue
        fp = [0.0, 0.0, 0.0]
        for p in range(3):
            fp[s.rotation.value[p]] += s.measured[p]
        measured[s.id] = fp
    ev = node_loads(nodes, stations, measured)
    return {n.id: list(n.budget(now, tuple(ev[n.id]))) for n in nodes}  # type: ignore[arg-type]


def loads_of(
    nodes: list[Node],
    stations: list[Station],
    setpoints: dict[str, Setpoint],
    now: float = NOW,
    online_only: bool = False,
) -> dict[str, list[float]]:
    """Per node and grid phase, what the stations may draw at ``setpoints`` (offline stations
    at their fail-safe or lease, unless ``online_only``)."""
    fps: dict[str, list[float]] = {}
    for s in stations:
        if not s.online:
            if not online_only:
                fps[s.id] = offline_footprint(s, now)
        elif s.id in setpoints:
            fps[s.id] = footprint(s, setpoints[s.id])
    return node_loads(nodes, stations, fps)


def assert_safe(nodes: list[Node], stations: list[Station], plan: Plan, now: float = NOW) -> None:
    """No node and phase exceeds its budget, unless offline stations alone already do; then
    no online station may add anything there."""
    b = budgets(nodes, stations, now)
    sps = {a.station_id: a.setpoint for a in plan.allocations.values()}
    total = loads_of(nodes, stations, sps, now)
    forced = loads_of(nodes, stations, {}, now)
    for n in nodes:
        for g in range(3):
            cap = math.floor(b[n.id][g])
            if math.ceil(forced[n.id][g]) > cap or cap < 0:
                assert total[n.id][g] == forced[n.id][g], (n.id, g, total[n.id], forced[n.id])
            else:
                assert total[n.id][g] <= cap + 1e-9, (n.id, g, total[n.id][g], b[n.id][g])
            assert plan.nodes[n.id].planned[g] == math.ceil(total[n.id][g] - 1e-9), (
                n.id,
                g,
                plan.nodes[n.id].planned,
                total[n.id],
            )


# -- strategies --------------------------------------------------------------------------------

ROTATIONS = list(PhaseRotation)
WANTING = (CarState.WAITING, CarState.CHARGING)


@st.composite
def trees(
    draw: st.DrawFn, max_nodes: int = 7, max_stations: int = 24
) -> tuple[list[Node], list[Station]]:
    """A random forest of nodes (metered or not, fresh or stale, shed or not) and stations in
    every state, online or offline, with and without measurements."""
    n_nodes = draw(st.integers(1, max_nodes))
    nodes: list[Node] = []
    for i in range(n_nodes):
        parent = (
            None if i == 0 or draw(st.integers(0, 9)) == 0 else f"n{draw(st.integers(0, i - 1))}"
        )
        limit = tuple(
            float(draw(st.integers(0, 80))) + draw(st.sampled_from([0.0, 0.5])) for _ in range(3)
        )
        metered = draw(st.integers(0, 3)) == 0
        kwargs: dict[str, object] = {}
        if metered:
            kwargs = {
                "has_meter": True,
                "measured": tuple(float(draw(st.integers(0, 90))) for _ in range(3)),
                "measured_at": NOW - draw(st.sampled_from([0.0, 5.0, 30.0, 200.0])),
                "stale_after": 60.0,
                "margin": float(draw(st.integers(0, 5))),
                "fallback_limit": draw(
                    st.none() | st.tuples(*(st.floats(0, 40, allow_nan=False),) * 3)
                ),
            }
        shed = draw(st.sampled_from([ShedMode.NONE] * 8 + [ShedMode.TO_ZERO, ShedMode.TO_MIN]))
        nodes.append(
            Node(
                f"n{i}",
                parent,
                limit,  # type: ignore[arg-type]
                name=f"node {i}",
                shed=shed,
                shed_source="ripple control",
                **kwargs,  # type: ignore[arg-type]
            )
        )
    n_st = draw(st.integers(0, max_stations))
    stations: list[Station] = []
    for j in range(n_st):
        lo = draw(st.sampled_from([6, 6, 6, 7, 8, 10]))
        hi = draw(st.integers(6, 32))
        state = draw(st.sampled_from(list(CarState) + [CarState.CHARGING, CarState.WAITING] * 2))
        can_switch = draw(st.booleans())
        prev = draw(
            st.none()
            | st.builds(
                Setpoint,
                st.sampled_from([0, 6, 8, 10, 13, 16, 20, 32]),
                st.sampled_from([1, 3] if can_switch else [3]),
            )
        )
        drawn = draw(
            st.sampled_from([None, None, frozenset({0}), frozenset({0, 1}), frozenset({0, 1, 2})])
        )
        measured = draw(st.none() | st.tuples(*(st.floats(0, 32, allow_nan=False),) * 3))
        stations.append(
            Station(
                id=f"s{j}",
                parent=f"n{draw(st.integers(0, n_nodes - 1))}",
                rotation=draw(st.sampled_from(ROTATIONS)),
                min_current=lo,
                max_current=hi,
                installer_max=draw(st.sampled_from([32, 32, 16, 10])),
                can_switch_phases=can_switch,
                state=state,
                arrival=float(draw(st.integers(0, 50))),
                drawn_phases=drawn,
                measured=measured,
                priority=draw(st.sampled_from([0, 0, 0, 1, 2])),
                online=draw(st.integers(0, 9)) > 0,
                fail_safe_current=draw(st.sampled_from([0, 6, 10])),
                lease_until=NOW + draw(st.sampled_from([-10.0, 30.0])),
                setpoint=prev,
                phase_switches=draw(st.integers(0, 6)),
            )
        )
    return nodes, stations


def random_tree(
    seed: int, max_nodes: int = 25, max_stations: int = 120
) -> tuple[list[Node], list[Station]]:
    """Like :func:`trees` but from a plain seed: fast enough for thousands of larger trees."""
    rnd = random.Random(seed)
    n_nodes = rnd.randint(1, max_nodes)
    nodes: list[Node] = []
    for i in range(n_nodes):
        parent = None if i == 0 or rnd.random() < 0.05 else f"n{rnd.randrange(i)}"
        limit = tuple(float(rnd.randint(0, 150)) + rnd.choice((0.0, 0.5)) for _ in range(3))
        kwargs: dict[str, object] = {}
        if rnd.random() < 0.3:
            kwargs = {
                "has_meter": True,
                "measured": tuple(float(rnd.randint(0, 160)) for _ in range(3)),
                "measured_at": NOW - rnd.choice((0.0, 5.0, 200.0)),
                "margin": float(rnd.randint(0, 5)),
                "fallback_limit": rnd.choice((None, tuple(rnd.uniform(0, 60) for _ in range(3)))),
            }
        shed = rnd.choice([ShedMode.NONE] * 12 + [ShedMode.TO_ZERO, ShedMode.TO_MIN])
        nodes.append(
            Node(f"n{i}", parent, limit, name=f"node {i}", shed=shed, **kwargs)  # type: ignore[arg-type]
        )
    stations: list[Station] = []
    for j in range(rnd.randint(0, max_stations)):
        can_switch = rnd.random() < 0.7
        prev = rnd.choice(
            (
                None,
                Setpoint(0, 3),
                Setpoint(rnd.randint(6, 32), rnd.choice((1, 3) if can_switch else (3,))),
            )
        )
        stations.append(
            Station(
                id=f"s{j}",
                parent=f"n{rnd.randrange(n_nodes)}",
                rotation=rnd.choice(ROTATIONS),
                min_current=rnd.choice((6, 6, 6, 8, 10)),
                max_current=rnd.randint(6, 32),
                installer_max=rnd.choice((32, 32, 16)),
                can_switch_phases=can_switch,
                state=rnd.choice(list(CarState) + [CarState.CHARGING, CarState.WAITING] * 3),
                arrival=float(rnd.randint(0, 40)),
                drawn_phases=rnd.choice((None, None, frozenset({0}), frozenset({0, 1}))),
                measured=rnd.choice((None, tuple(rnd.uniform(0, 32) for _ in range(3)))),
                priority=rnd.choice((0, 0, 0, 1)),
                online=rnd.random() < 0.93,
                fail_safe_current=rnd.choice((0, 6, 10)),
                lease_until=NOW + rnd.choice((-10.0, 30.0)),
                setpoint=prev,
                phase_switches=rnd.randint(0, 6),
            )
        )
    return nodes, stations


def is_wanting(a_decision: Decision, s: Station) -> bool:
    return s.online and s.state in WANTING and a_decision in (Decision.CHARGE, Decision.QUEUED)
