"""One supply line of simulated stations, shared by the tests that run real processes
(tests/e2e, tests/resilience): the stations in a load-management group, their phase
rotations in turn, and their real draw per grid phase."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Station i is wired with ROTATIONS[i % 3]; GRID[i % 3] are the grid phases of its phases.
ROTATIONS = ["L1-L2-L3", "L2-L3-L1", "L3-L1-L2"]
GRID = [(0, 1, 2), (1, 2, 0), (2, 0, 1)]


def line_of_stations(organization, prefix: str, count: int, line_a: int, **station_fields: Any):
    """(group, stations): ``count`` one-connector stations ``<prefix>-00``… on a line of
    ``line_a``, charging when plugged in (authentication none). Station 0 falls back to 6 A,
    the others to 0 A: with every lease ended the line carries 6 A on one grid phase."""
    from loadmgmt.models import StationLimits
    from tests.loadmgmt.factories import LoadGroupFactory
    from tests.stations.factories import StationFactory

    group = LoadGroupFactory(organization=organization, name="Car park", max_current=line_a)
    stations = []
    for i in range(count):
        station = StationFactory(
            organization=organization,
            charge_point_id=f"{prefix}-{i:02d}",
            connectors=1,
            auth_mode="none",
            **station_fields,
        )
        StationLimits.objects.create(
            station=station,
            phase_rotation=ROTATIONS[i % 3],
            can_switch_phases=True,
            fail_safe_current=0 if i else 6,
        )
        group.members.create(station=station)
        stations.append(station)
    return group, stations


def grid_draw(sims: Sequence) -> list[float]:
    """What the simulated stations (station i wired as above) draw now, per grid phase."""
    load = [0.0, 0.0, 0.0]
    for i, sim in enumerate(sims):
        sim._update()
        c = sim.connector(1)
        if c.drawing and c.current_a > 0:
            for phase in GRID[i % 3][: c.phases]:
                load[phase] += c.current_a
    return load
