"""Golden digest of the load-management engine's outputs: a guard for performance work.

Runs ``allocate()`` on the benchmark inputs (several seeds and settings), on a few thousand
seeded random trees of every shape (shedding, stale and fresh meters, offline stations,
suspended cars, priorities, 1- and 2-phase cars...), and runs the named simulator scenarios
recording every plan the simulator asks for. Prints a sha256 per part and overall over a
canonical JSON of every allocation (station, current, phases, decision, reason, phase switch,
in output order), every node load (budget, planned, binding) and the warnings.

An optimisation of the engine must not change any of the digests:

    .venv/bin/python bench/engine_golden.py            # prints the digests
    .venv/bin/python bench/engine_golden.py --check D  # exit 1 unless the overall digest is D

Overall digest of the engine as of 2026-11-24 (before and after its optimisation pass):
16f2d66d42c8c2327fea8c079cb4262bb234d9fcb662a8044d76abec82d41ee3. A deliberate change of
behaviour changes it; say so in the commit and update this line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine_bench import NOW, group_200, tree_10k

from loadmgmt.engine import simulate
from loadmgmt.engine.allocate import Topology, allocate
from loadmgmt.engine.model import (
    CarState,
    Node,
    PhaseRotation,
    Plan,
    Setpoint,
    Settings,
    ShedMode,
    Station,
)
from loadmgmt.engine.scenarios import SCENARIOS

ROT = list(PhaseRotation)
SETTINGS = (
    Settings(),
    Settings(phase_switch_hysteresis=0, max_phase_switches=1, demand_headroom=None),
    Settings(phase_switch_hysteresis=5, max_phase_switches=10, demand_headroom=1),
)


def canonical(plan: Plan) -> list[object]:
    """Everything in a plan, as plain JSON-able lists (floats as repr: exact)."""
    return [
        [
            [a.station_id, a.current, a.phases, a.decision.value, a.reason, a.phase_switch]
            for a in plan.allocations.values()
        ],
        [
            [nid, [repr(x) for x in nl.budget], list(nl.planned), list(nl.binding)]
            for nid, nl in plan.nodes.items()
        ],
        list(plan.warnings),
    ]


def random_case(seed: int, max_nodes: int, max_stations: int) -> tuple[list[Node], list[Station]]:
    """A random forest and stations in every state; seeded, so the same every run."""
    rnd = random.Random(seed)
    now = NOW
    n_nodes = rnd.randint(1, max_nodes)
    nodes: list[Node] = []
    for i in range(n_nodes):
        parent = None if i == 0 or rnd.random() < 0.05 else f"n{rnd.randrange(i)}"
        limit = tuple(float(rnd.randint(0, 150)) + rnd.choice((0.0, 0.5)) for _ in range(3))
        kwargs: dict[str, object] = {}
        u = rnd.random()
        if u < 0.3:
            kwargs = {
                "has_meter": True,
                "measured": tuple(float(rnd.randint(0, 160)) for _ in range(3)),
                "measured_at": now - rnd.choice((0.0, 5.0, 200.0)),
                "margin": float(rnd.randint(0, 5)),
                "fallback_limit": rnd.choice((None, tuple(rnd.uniform(0, 60) for _ in range(3)))),
                "ev_measured": rnd.choice(
                    (None, None, tuple(rnd.uniform(0, 60) for _ in range(3)))
                ),
            }
        elif u < 0.35:
            kwargs = {"has_meter": True}  # never reported: stale
        shed = rnd.choice([ShedMode.NONE] * 12 + [ShedMode.TO_ZERO, ShedMode.TO_MIN])
        nodes.append(
            Node(
                f"n{i}",
                parent,
                limit,  # type: ignore[arg-type]
                name=rnd.choice((f"node {i}", "")),
                shed=shed,
                shed_source=rnd.choice(("", "ripple control")),
                **kwargs,  # type: ignore[arg-type]
            )
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
                rotation=rnd.choice(ROT),
                min_current=rnd.choice((6, 6, 6, 8, 10)),
                max_current=rnd.randint(6, 32),
                installer_max=rnd.choice((32, 32, 16)),
                can_switch_phases=can_switch,
                state=rnd.choice(list(CarState) + [CarState.CHARGING, CarState.WAITING] * 3),
                arrival=rnd.choice((None, float(rnd.randint(0, 40)), now - rnd.uniform(0, 1e4))),
                drawn_phases=rnd.choice(
                    (None, None, frozenset({0}), frozenset({0, 1}), frozenset({0, 2}))
                ),
                measured=rnd.choice((None, tuple(rnd.uniform(0, 32) for _ in range(3)))),
                priority=rnd.choice((0, 0, 0, 1, 2)),
                online=rnd.random() < 0.93,
                fail_safe_current=rnd.choice((0, 6, 10)),
                lease_until=rnd.choice((None, now - 10.0, now + 30.0)),
                setpoint=prev,
                phase_switches=rnd.randint(0, 6),
            )
        )
    return nodes, stations


def bench_plans() -> Iterator[list[object]]:
    for make, seeds in ((group_200, (1, 11, 12)), (tree_10k, (2, 21))):
        for seed in seeds:
            nodes, stations = make(seed)
            topo = Topology.build(nodes)
            for s in SETTINGS:
                yield canonical(allocate(nodes, stations, NOW, s, topo))
            yield canonical(allocate(nodes, stations, NOW))  # without a prebuilt topology


def random_plans() -> Iterator[list[object]]:
    for seed in range(3000):
        big = seed % 10 == 0
        nodes, stations = random_case(seed, 60 if big else 12, 600 if big else 60)
        yield canonical(allocate(nodes, stations, NOW, SETTINGS[seed % 3]))


def scenario_plans() -> Iterator[list[object]]:
    real = simulate.allocate
    for name in sorted(SCENARIOS):
        seen: list[list[object]] = []

        def spy(*args: object, _seen: list[list[object]] = seen, **kwargs: object) -> Plan:
            """The simulator's allocate(), recording every plan it returns."""
            plan = real(*args, **kwargs)  # type: ignore[arg-type]
            _seen.append(canonical(plan))
            return plan

        simulate.allocate = spy  # type: ignore[assignment]
        try:
            result = simulate.run(SCENARIOS[name]())
        finally:
            simulate.allocate = real
        m = result.metrics
        yield [name, repr(sorted(m.overload_as.items())), repr(m.utilisation), repr(m.jain)]
        yield [repr(m.energy_kwh), m.sessions, m.phase_switches_max, m.engine_calls]
        yield from seen


def digest(parts: Iterator[list[object]]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for p in parts:
        h.update(json.dumps(p, separators=(",", ":")).encode())
        h.update(b"\n")
        n += 1
    return h.hexdigest(), n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", metavar="DIGEST", help="expected overall digest")
    args = parser.parse_args(argv)
    total = hashlib.sha256()
    parts: list[tuple[str, Callable[[], Iterator[list[object]]]]] = [
        ("benchmark inputs", bench_plans),
        ("random trees", random_plans),
        ("scenarios", scenario_plans),
    ]
    for label, make in parts:
        d, n = digest(make())
        total.update(d.encode())
        print(f"{label:<18} {n:>6} records  {d}")
    overall = total.hexdigest()
    print(f"{'overall':<18} {'':>14}  {overall}")
    if args.check and args.check != overall:
        print("MISMATCH", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
