"""The cars' measured current below each node (loadmgmt/engine/metering.py)."""

from __future__ import annotations

from loadmgmt.engine.metering import cars_below
from loadmgmt.engine.model import Node, PhaseRotation, Station


def test_sums_grid_phases_up_every_level():
    nodes = [
        Node("house", None, (63.0,) * 3),
        Node("board", "house", (40.0,) * 3),
        Node("g1", "board", (32.0,) * 3),
        Node("g2", "house", (32.0,) * 3),
    ]
    stations = [
        Station("a", "g1", rotation=PhaseRotation.L1_L2_L3, measured=(10.0, 10.0, 10.0)),
        # Station phase L1 is wired to grid L2 here.
        Station("b", "g1", rotation=PhaseRotation.L2_L3_L1, measured=(6.0, 0.0, 0.0)),
        Station("c", "g2", rotation=PhaseRotation.L3_L1_L2, measured=(7.0, 0.0, 0.0)),
        Station("d", "g2"),  # no meter values: contributes nothing
    ]
    got = cars_below(nodes, stations)
    assert got["g1"] == (10.0, 16.0, 10.0)
    assert got["board"] == (10.0, 16.0, 10.0)
    assert got["g2"] == (0.0, 0.0, 7.0)
    assert got["house"] == (10.0, 16.0, 17.0)


def test_no_measured_station_no_entry():
    assert cars_below([Node("g", None, (32.0,) * 3)], [Station("a", "g")]) == {}
