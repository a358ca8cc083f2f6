"""Benchmark of the load-management engine (pure Python).

Recomputes a 200-station static group and a 10,000-station tree of 500 nodes, reports the
median time of ``allocate`` and the utilisation against a naive equal-share baseline, and
prints a Markdown table (``--write FILE`` also replaces the "## Load-management engine"
section of FILE with it).

    .venv/bin/python bench/engine_bench.py [--runs-small N] [--runs-large N]
        [--rounds N [--pause SECONDS]] [--write FILE]

Utilisation here = sum over cars of (current x phases it draws on) / (3 x the root's budget):
how much of the supply the plan hands out. The naive baseline admits cars first come first
served while their minimum fits on 3 phases, then gives each an equal share of every node's
budget (rounded down, capped at its maximum): no phase switching, no rotation awareness, no
redistribution of what a capped car cannot use.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadmgmt.engine.allocate import Topology, allocate
from loadmgmt.engine.model import (
    CarState,
    Decision,
    Node,
    PhaseRotation,
    Plan,
    Setpoint,
    ShedMode,
    Station,
    grid_phases,
)

NOW = 1_000_000.0
ROT = list(PhaseRotation)


def _stations(rnd: random.Random, parents: list[str], n: int) -> list[Station]:
    """A busy evening: ~75 % of stations have a car that wants energy."""
    out: list[Station] = []
    for i in range(n):
        u = rnd.random()
        if u < 0.12:
            state = CarState.NO_CAR
        elif u < 0.17:
            state = CarState.FINISHED
        elif u < 0.20:
            state = CarState.SUSPENDED_EV
        elif u < 0.45:
            state = CarState.WAITING
        else:
            state = CarState.CHARGING
        charging = state is CarState.CHARGING
        sp = Setpoint(rnd.choice((6, 8, 10, 16)), rnd.choice((1, 3))) if charging else None
        one_phase_car = charging and rnd.random() < 0.15
        out.append(
            Station(
                id=f"st{i}",
                parent=parents[i % len(parents)],
                rotation=ROT[i % 3],
                min_current=6 if rnd.random() < 0.9 else 8,
                max_current=rnd.choice((16, 32, 32)),
                installer_max=32 if rnd.random() < 0.8 else 16,
                can_switch_phases=rnd.random() < 0.85,
                state=state,
                arrival=NOW - rnd.uniform(0, 20_000),
                drawn_phases=frozenset({0}) if one_phase_car else None,
                measured=(
                    (float(sp.current), 0.0 if one_phase_car else float(sp.current), 0.0)
                    if sp is not None
                    else None
                ),
                priority=1 if rnd.random() < 0.05 else 0,
                online=rnd.random() > 0.01,
                fail_safe_current=6,
                lease_until=NOW + 30,
                setpoint=sp,
                phase_switches=rnd.randint(0, 2),
            )
        )
    return out


def group_200(seed: int = 1) -> tuple[list[Node], list[Station]]:
    rnd = random.Random(seed)
    nodes = [Node("group", None, (400.0, 400.0, 400.0), name="group")]
    return nodes, _stations(rnd, ["group"], 200)


def tree_10k(seed: int = 2) -> tuple[list[Node], list[Station]]:
    """1 house connection, 24 boards, 475 groups (500 nodes); 10,000 stations in the groups."""
    rnd = random.Random(seed)
    nodes = [
        Node(
            "house",
            None,
            (10000.0, 10000.0, 10000.0),
            name="house",
            has_meter=True,
            measured=(0.0, 0.0, 0.0),  # set below
            measured_at=NOW - 3,
            margin=20.0,
            fallback_limit=(2000.0, 2000.0, 2000.0),
        )
    ]
    groups: list[str] = []
    for b in range(24):
        nodes.append(
            Node(
                f"board{b}",
                "house",
                (630.0, 630.0, 630.0),
                name=f"board {b}",
                shed=ShedMode.TO_MIN if b == 5 else ShedMode.NONE,
                shed_source="ripple control",
            )
        )
    for g in range(475):
        nodes.append(Node(f"grp{g}", f"board{g % 24}", (63.0, 63.0, 63.0), name=f"group {g}"))
        groups.append(f"grp{g}")
    stations = _stations(rnd, groups, 10_000)
    # The house meter sees the cars (as their meters report them) plus 300 A of other loads.
    ev = [300.0, 300.0, 300.0]
    for s in stations:
        if s.measured is not None:
            for p in range(3):
                ev[s.rotation.value[p]] += s.measured[p]
    nodes[0] = replace(nodes[0], measured=(ev[0], ev[1], ev[2]))
    return nodes, stations


def naive_equal_share(
    nodes: list[Node], stations: list[Station], budgets: dict[str, tuple[float, float, float]]
) -> dict[str, int]:
    """The simple load manager: cars that want energy are admitted first come first served
    while 6 A (their minimum) on 3 phases fits at every node; each admitted car then gets
    floor(min over its nodes of budget / admitted cars below), capped at its maximum."""
    by_id = {n.id: n for n in nodes}
    wanting = sorted(
        (s for s in stations if s.online and s.state in (CarState.WAITING, CarState.CHARGING)),
        key=lambda s: (s.arrival, s.id),
    )
    room = {nid: min(b) for nid, b in budgets.items()}
    count: dict[str, int] = dict.fromkeys(by_id, 0)
    admitted: list[Station] = []
    for s in wanting:
        chain: list[str] = []
        nid: str | None = s.parent
        while nid is not None:
            chain.append(nid)
            nid = by_id[nid].parent
        if all(room[c] >= s.min_current for c in chain):
            for c in chain:
                room[c] -= s.min_current
                count[c] += 1
            admitted.append(s)
    out: dict[str, int] = {}
    for s in admitted:
        share = math.inf
        nid = s.parent
        while nid is not None:
            share = min(share, min(budgets[nid]) / count[nid])
            nid = by_id[nid].parent
        out[s.id] = max(s.min_current, min(int(share), s.max_current, s.installer_max))
    return out


def utilisation(
    stations: list[Station], currents: dict[str, tuple[int, int]], root_budget: float
) -> float:
    used = 0.0
    by_id = {s.id: s for s in stations}
    for sid, (cur, ph) in currents.items():
        if cur:
            used += cur * len(grid_phases(by_id[sid], Setpoint(cur, ph)))
    return used / (3 * root_budget)


def _engine_currents(plan: Plan) -> dict[str, tuple[int, int]]:
    return {
        a.station_id: (a.current, a.phases)
        for a in plan.allocations.values()
        if a.decision is Decision.CHARGE
    }


def timings(
    nodes: list[Node], stations: list[Station], runs: int
) -> tuple[list[float], list[float], Plan]:
    """``runs`` timed calls with the compiled tree passed in, a few compiling it each time,
    and the plan."""
    topo = Topology.build(nodes)
    plan = allocate(nodes, stations, NOW, topology=topo)  # warm-up
    times: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        plan = allocate(nodes, stations, NOW, topology=topo)
        times.append(time.perf_counter() - t0)
    cold: list[float] = []
    for _ in range(max(3, runs // 10)):
        t0 = time.perf_counter()
        allocate(nodes, stations, NOW)
        cold.append(time.perf_counter() - t0)
    return times, cold, plan


def bench(
    name: str,
    nodes: list[Node],
    stations: list[Station],
    rounds: list[tuple[list[float], list[float]]],
    plan: Plan,
    target_ms: float,
) -> dict[str, str]:
    """The table row of one case over one or more rounds of :func:`timings`: the median of
    the rounds' medians, their range, and p90 and tree build over every run."""
    medians = [statistics.median(t) * 1000 for t, _c in rounds]
    median = statistics.median(medians)
    times = sorted(x for t, _c in rounds for x in t)
    cold = [x for _t, c in rounds for x in c]
    met = sum(1 for m in medians if m <= target_ms)
    if met == len(medians):
        verdict = "met" if len(medians) == 1 else f"met in all {len(medians)} rounds"
    else:
        verdict = f"**missed** in {len(medians) - met} of {len(medians)} rounds"
    budgets = {nid: nl.budget for nid, nl in plan.nodes.items()}
    naive = naive_equal_share(nodes, stations, budgets)
    root_budget = sum(budgets[nodes[0].id]) / 3
    wanting = sum(
        1 for s in stations if s.online and s.state in (CarState.WAITING, CarState.CHARGING)
    )
    eng = _engine_currents(plan)
    return {
        "case": name,
        "stations": f"{len(stations):,}",
        "nodes": str(len(nodes)),
        "cars wanting energy": f"{wanting:,}",
        "median": f"{median:.2f} ms",
        "target": f"<= {target_ms:g} ms: {verdict}",
        "medians of the rounds": (
            f"{min(medians):.2f}-{max(medians):.2f} ms" if len(medians) > 1 else "-"
        ),
        "p90": f"{times[int(0.9 * (len(times) - 1))] * 1000:.2f} ms",
        "incl. tree build": f"{statistics.median(cold) * 1000:.2f} ms",
        "runs": f"{len(rounds)} x {len(rounds[0][0])}",
        "charging (engine / naive)": (
            f"{sum(1 for c, _p in eng.values() if c):,} / {sum(1 for c in naive.values() if c):,}"
        ),
        "utilisation (engine / naive)": (
            f"{utilisation(stations, eng, root_budget):.1%} / "
            f"{utilisation(stations, {k: (v, 3) for k, v in naive.items()}, root_budget):.1%}"
        ),
    }


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
            platform.processor() or "unknown",
        )
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor() or "unknown"
    import os

    return f"{os.cpu_count()} cores, {model}; Python {platform.python_version()}"


def markdown(rows: list[dict[str, str]], argv: list[str]) -> str:
    cols = list(rows[0])
    lines = [
        "## Load-management engine",
        "",
        f"- machine: {machine()}",
        f"- date: {dt.date.today().isoformat()}",
        f"- command: `.venv/bin/python bench/engine_bench.py {' '.join(argv)}`".replace(" `", " `"),
        "- targets: 200 stations <= 1 ms, 10,000 stations <= 50 ms (median, tree prebuilt)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(r[c] for c in cols) + " |")
    lines += [
        "",
        "`median`/`p90`: `allocate()` with the compiled `Topology` passed in (the tree changes",
        "rarely; the caller caches it); with `--rounds`, the median of the rounds' medians",
        "(`medians of the rounds`: their range) and the p90 of every run. `incl. tree build`:",
        "compiling the tree in every call.",
        "Utilisation: sum of (current x phases drawn) over cars / (3 x the root's budget). The",
        "naive baseline admits cars first come first served while 6 A on 3 phases fits, then",
        "gives each an equal share of every node's budget, rounded down (no phase switching, no",
        "rotation awareness, no redistribution of what a capped car cannot use).",
        "",
        "Inputs: 80 % of stations with a car that wants energy (25 % waiting, 55 % charging,",
        "15 % of the charging cars on one phase), 5 % finished, 3 % suspended, 12 % empty, 1 %",
        "offline, 15 % unable to switch phases, 5 % priority cars; the 200-station group has",
        "400 A per phase; the tree is a metered 10,000 A house connection, 24 boards of 630 A",
        "(one shed to the minimum), 475 groups of 63 A. Both are oversubscribed, so queueing,",
        "1-phase switching and the fill all run. The machine is shared with other work: single",
        "runs vary by about 10 %, and now and then a whole round runs ~1.6x slower than the",
        "others (on 2026-11-30 two rounds of twenty at 54 ms, the others at 28-38 ms), hence",
        "the rounds spread over minutes.",
        "",
        "Against the naive manager the engine charges about twice as many cars (the seed's",
        "rule: switch to 1 phase before anyone waits). Its utilisation is higher on the single",
        "group and about the same on the tree, where the naive manager's few 3-phase cars load",
        "the boards' phases evenly while the engine's 1-phase cars follow the stations' wiring.",
        "",
        "Where the time goes at 10,000 stations (CPU time section by section, min of 61 runs):",
        "reading and classifying the stations ~6 ms, sorting the queue ~1 ms, admission ~4 ms",
        "(with the queued cars' allocations) and the admitted cars' columns ~0.7 ms,",
        "reservations ~0.3 ms, phase modes ~1.5 ms, water-filling ~7 ms (of which ~2 ms",
        "grouping the cars into classes), the charging cars' allocations, node loads and the",
        "allocation dict ~2 ms, freeing the intermediate objects on return ~0.7 ms. The cyclic",
        "garbage collector is paused during `allocate()` (it cost ~6 ms per call here, walking",
        "objects that all live until the call returns).",
        "",
        "History: before the optimisation pass of 2026-11-24 the 10,000-station case took",
        "59-65 ms median here (GC included); after it 46-55 ms depending on the hour, so the",
        "target was met only on a good day. The pass of 2026-11-30 brought it to ~0.73x of",
        "that side by side in one process under the same load (0.72-0.81x over several runs;",
        "~0.82x at 200 stations; callgrind counts 326 M instructions per call before, 211 M",
        "after, and 5.0 M / 3.8 M at 200 stations): a lazy water-fill",
        "(node-phases enter the heap with a lower bound of their fill level and get their",
        "histogram only when the bound comes up: here the house's three phases, out of ~850),",
        "one pass over the cars' records for admission with columns made for the admitted cars",
        "only, lookup tables in the compiled tree instead of index arithmetic and per-leaf sums",
        "instead of per-ancestor ones, and allocations made without a second Python call each.",
        "`bench/engine_golden.py` guards that the outputs did not change: it prints a sha256",
        "over every allocation, node load and warning of the benchmark inputs, 3,000 random",
        "trees and every plan of the simulator scenarios.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Load-management engine\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        # Keep one blank line before the next section.
        text = pattern.sub(lambda _m: section.rstrip("\n") + "\n\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text if text.endswith("\n") else text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-small", type=int, default=300)
    parser.add_argument("--runs-large", type=int, default=21)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every case, --pause seconds apart"
    )
    parser.add_argument("--pause", type=float, default=60.0)
    parser.add_argument("--write", type=Path, help="replace the engine section of this file")
    args = parser.parse_args(argv)
    cases = [
        ("200-station group", *group_200(), args.runs_small, 1.0),
        ("10,000 stations / 500 nodes", *tree_10k(), args.runs_large, 50.0),
    ]
    # The host is shared: rounds spread over time show how much the figures move.
    rounds: list[list[tuple[list[float], list[float]]]] = [[] for _ in cases]
    plans: list[Plan] = []
    for r in range(args.rounds):
        if r:
            time.sleep(args.pause)
        plans = []
        for (name, nodes, stations, runs, _target), done in zip(cases, rounds, strict=True):
            times, cold, plan = timings(nodes, stations, runs)
            done.append((times, cold))
            plans.append(plan)
            print(
                f"round {r + 1}: {name}: median {statistics.median(times) * 1000:.2f} ms",
                file=sys.stderr,
            )
    rows = [
        bench(name, nodes, stations, done, plan, target)
        for (name, nodes, stations, _runs, target), done, plan in zip(
            cases, rounds, plans, strict=True
        )
    ]
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a]
    md = markdown(rows, shown)
    print(md)
    if args.write:
        write_section(args.write, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
