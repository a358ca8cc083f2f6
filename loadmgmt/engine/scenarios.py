"""Named simulator scenarios (``python -m loadmgmt.engine simulate <name>``).

* ``seed-32a``: the seed's worked example. One 32 A supply line, 20 stations wired with rotated
  phases; a car arrives every minute, then they leave one a minute. Ideal meters and links.
* ``office-tree``: a metered house connection with other loads, two boards, three groups,
  mixed cars (1-phase hybrids, 2-phase, 16 A and 32 A chargers), priorities, noisy and late
  meters, late acknowledgements, two stations dropping offline, ripple-control shedding and
  a meter outage.
* ``rush-hour``: 60 stations behind a 100 A metered supply with noisy meters and flaky links:
  everybody arrives within half an hour.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .model import Node, PhaseRotation, Settings, ShedMode
from .simulate import Background, CarSpec, Scenario, ShedEvent, StationSpec

ROTATIONS = tuple(PhaseRotation)


def seed_32a() -> Scenario:
    """20 cars arrive one a minute on a 32 A line, then leave one a minute."""
    n = 20
    stations = tuple(
        StationSpec(f"s{i + 1:02d}", "group", rotation=ROTATIONS[i % 3]) for i in range(n)
    )
    cars = tuple(
        CarSpec(f"s{i + 1:02d}", arrive=60.0 * i + 1, leave=60.0 * (n + i) + 31, energy_kwh=80)
        for i in range(n)
    )
    return Scenario(
        name="seed-32a",
        description="32 A supply line, 20 cars arriving one a minute then leaving one a minute",
        nodes=(Node("group", None, (32.0, 32.0, 32.0), name="group A"),),
        stations=stations,
        cars=cars,
        duration=60.0 * 2 * n + 60,
        settings=Settings(max_phase_switches=10),
    )


def office_tree(seed: int = 7) -> Scenario:
    """A metered house connection, two boards, three groups and everything going wrong."""
    rnd = random.Random(seed)
    nodes = (
        Node(
            "house",
            None,
            (100.0, 100.0, 100.0),
            name="house connection",
            has_meter=True,
            margin=4.0,
            stale_after=30.0,
            fallback_limit=(40.0, 40.0, 40.0),
        ),
        Node("board1", "house", (63.0, 63.0, 63.0), name="board 1"),
        Node("board2", "house", (50.0, 50.0, 50.0), name="board 2"),
        Node("groupA", "board1", (32.0, 32.0, 32.0), name="group A"),
        Node("groupB", "board1", (25.0, 25.0, 25.0), name="group B"),
    )
    stations: list[StationSpec] = []
    for i in range(8):
        stations.append(StationSpec(f"A{i + 1}", "groupA", rotation=ROTATIONS[i % 3]))
    for i in range(6):
        stations.append(
            StationSpec(
                f"B{i + 1}",
                "groupB",
                rotation=ROTATIONS[i % 3],
                installer_max=16,
                fail_safe_current=6 if i == 0 else 0,
                offline=((1500.0, 2100.0),) if i == 0 else (),
            )
        )
    for i in range(10):
        stations.append(
            StationSpec(
                f"C{i + 1}",
                "board2",
                rotation=ROTATIONS[(i + 1) % 3],
                can_switch_phases=i % 4 != 3,
                min_current=8 if i == 5 else 6,
                offline=((3000.0, 3300.0),) if i == 2 else (),
            )
        )
    cars: list[CarSpec] = []
    for st in stations:
        t = rnd.uniform(0, 1800)
        while t < 6000:
            kind = rnd.random()
            if kind < 0.25:
                phases, cmax = 1, 16  # plug-in hybrid
            elif kind < 0.35:
                phases, cmax = 2, 16
            elif kind < 0.7:
                phases, cmax = 3, 16
            else:
                phases, cmax = 3, 32
            stay = rnd.uniform(1200, 4000)
            cars.append(
                CarSpec(
                    st.id,
                    arrive=round(t),
                    leave=round(t + stay),
                    energy_kwh=rnd.uniform(5, 40),
                    phases=phases,
                    max_current=cmax,
                    priority=1 if rnd.random() < 0.1 else 0,
                )
            )
            t += stay + rnd.uniform(60, 1500)
    return Scenario(
        name="office-tree",
        description=(
            "metered 100 A house with other loads, 2 boards, 3 groups, 24 stations, mixed cars,"
            " noisy/late meters, late acks, offline stations, shedding, a meter outage"
        ),
        nodes=nodes,
        stations=tuple(stations),
        cars=tuple(cars),
        duration=7200.0,
        backgrounds=(Background("house", (35.0, 25.0, 30.0), amplitude=15.0, rate=0.05),),
        sheds=(ShedEvent("board2", 3600.0, 4200.0, ShedMode.TO_MIN, "ripple control"),),
        cycle=10.0,
        meter_delay=5.0,
        node_meter_noise=0.5,
        station_meter_noise=0.1,
        ack_delay=(0.5, 6.0),
        ack_timeout=15.0,
        lease=60.0,
        seed=seed,
        meter_outages=(("house", 4800.0, 5200.0),),
    )


def rush_hour(seed: int = 3) -> Scenario:
    """60 stations behind a 100 A metered supply; everybody arrives within 30 minutes."""
    rnd = random.Random(seed)
    nodes = (
        Node(
            "supply",
            None,
            (100.0, 100.0, 100.0),
            name="supply",
            has_meter=True,
            margin=4.0,
            stale_after=30.0,
            fallback_limit=(50.0, 50.0, 50.0),
        ),
        Node("g1", "supply", (63.0, 63.0, 63.0), name="garage 1"),
        Node("g2", "supply", (63.0, 63.0, 63.0), name="garage 2"),
    )
    stations = tuple(
        StationSpec(
            f"P{i + 1:02d}",
            "g1" if i < 30 else "g2",
            rotation=ROTATIONS[i % 3],
            fail_safe_current=6 if i % 10 == 0 else 0,
            offline=((1800.0 + 30 * i, 2100.0 + 30 * i),) if i % 15 == 0 else (),
        )
        for i in range(60)
    )
    cars = tuple(
        CarSpec(
            st.id,
            arrive=round(rnd.uniform(0, 1800)),
            leave=round(rnd.uniform(4000, 7000)),
            energy_kwh=rnd.uniform(10, 50),
            phases=1 if rnd.random() < 0.2 else 3,
            max_current=16 if rnd.random() < 0.5 else 32,
        )
        for st in stations
    )
    return Scenario(
        name="rush-hour",
        description="60 stations, 100 A metered supply, everyone arriving within 30 minutes",
        nodes=nodes,
        stations=stations,
        cars=cars,
        duration=7200.0,
        backgrounds=(Background("supply", (20.0, 20.0, 20.0), amplitude=8.0, rate=0.05),),
        cycle=10.0,
        meter_delay=5.0,
        node_meter_noise=0.5,
        station_meter_noise=0.05,
        ack_delay=(0.5, 5.0),
        seed=seed,
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "seed-32a": seed_32a,
    "office-tree": office_tree,
    "rush-hour": rush_hour,
}
