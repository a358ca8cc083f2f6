"""The cars' measured current below each node, per grid phase (pure; no Django).

A metered node's budget is its limit less the *other* loads: the meter's reading less the
cars' current at the same moment. The portal knows the cars' current only from their last
meter values, which lag the node's meter by up to their sampling interval; the caller clamps
them to what each station may apply now and passes the sums as ``Node.ev_measured``.
"""

from __future__ import annotations

from collections.abc import Iterable

from loadmgmt.engine.model import Node, Station, Triple


def cars_below(nodes: Iterable[Node], stations: Iterable[Station]) -> dict[str, Triple]:
    """For every node with a station below it (at any depth): the sum of the stations'
    ``measured`` current, mapped to grid phases by each station's rotation."""
    parent = {n.id: n.parent for n in nodes}
    sums: dict[str, list[float]] = {}
    for station in stations:
        if station.measured is None:
            continue
        grid = station.rotation.grid
        node: str | None = station.parent
        seen = 0
        while node is not None and seen <= len(parent):
            acc = sums.setdefault(node, [0.0, 0.0, 0.0])
            for phase, current in enumerate(station.measured):
                acc[grid[phase]] += current
            node = parent.get(node)
            seen += 1  # a loop in a malformed tree ends here instead of spinning
    return {node: (a[0], a[1], a[2]) for node, a in sums.items()}
