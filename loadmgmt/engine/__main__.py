"""Command line: ``python -m loadmgmt.engine simulate <scenario> [--out plot.png]``.

Runs a named scenario, prints its metrics and, with ``--out``, writes the PNG plot. Exits with
status 1 if any node was overloaded, so that it can guard CI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .scenarios import SCENARIOS
from .simulate import run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadmgmt.engine")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="run a named scenario and print its metrics")
    sim.add_argument("scenario", choices=sorted(SCENARIOS))
    sim.add_argument("--out", help="write a PNG plot here")
    sub.add_parser("list", help="list the scenarios")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, make in sorted(SCENARIOS.items()):
            print(f"{name:<14} {make().description}")
        return 0
    scenario = SCENARIOS[args.scenario]()
    result = run(scenario)
    print(f"{scenario.name}: {scenario.description}")
    print(result.metrics.table())
    for node_id, amp_s in result.metrics.overload_as.items():
        if amp_s > 0:
            print(f"OVERLOAD at {node_id}: {amp_s:.1f} A·s", file=sys.stderr)
    if args.out:
        from .plot import write_png

        print(f"plot written to {write_png(result, args.out)}")
    return 1 if any(v > 0 for v in result.metrics.overload_as.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
