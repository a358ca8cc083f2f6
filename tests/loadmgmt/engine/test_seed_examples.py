"""The seed's worked example, made exact: one 32 A supply line, cars arriving one by one and
then leaving one by one. Each row says what the product promises at that moment."""

from __future__ import annotations

from loadmgmt.engine.allocate import allocate
from loadmgmt.engine.model import (
    CarState,
    Decision,
    Node,
    PhaseRotation,
    Plan,
    Settings,
    Station,
)

from .helpers import NOW, assert_safe

ROT = list(PhaseRotation)
GROUP = [Node("g", None, (32.0, 32.0, 32.0), name="group A")]
SETTINGS = Settings(max_phase_switches=20)


def _station(i: int) -> Station:
    # Stations wired with rotated phases: 1 on L1-L2-L3, 2 on L2-L3-L1, 3 on L3-L1-L2, ...
    return Station(f"s{i:02d}", "g", rotation=ROT[i % 3], can_switch_phases=True)


def _step(present: list[int], previous: Plan | None) -> tuple[list[Station], Plan]:
    """Recompute with the cars at ``present`` (arrival = station number), feeding back the
    previous setpoints as the station would report them."""
    stations = []
    for i in present:
        base = _station(i)
        prev = previous.allocations.get(base.id) if previous else None
        sp = prev.setpoint if prev is not None else None
        stations.append(
            Station(
                base.id,
                "g",
                rotation=base.rotation,
                can_switch_phases=True,
                state=CarState.CHARGING if sp and sp.current else CarState.WAITING,
                arrival=float(i),
                setpoint=sp,
            )
        )
    plan = allocate(GROUP, stations, NOW, SETTINGS)
    assert_safe(GROUP, stations, plan)
    return stations, plan


def _summary(plan: Plan) -> list[tuple[int, int]]:
    return [(a.current, a.phases) for a in plan.allocations.values()]


# n cars -> what each car gets, in arrival order, while they arrive.
ARRIVING: dict[int, list[tuple[int, int]]] = {
    1: [(32, 3)],
    2: [(16, 3)] * 2,
    3: [(11, 3), (11, 3), (10, 3)],  # 32 A shared: the spare ampere go first come first served
    4: [(8, 3)] * 4,
    5: [(7, 3), (7, 3), (6, 3), (6, 3), (6, 3)],  # 5 x 6 A = 30 A: the last 3-phase share
    # 6 x 6 A = 36 A > 32 A: everybody switches to 1 phase, two cars per grid phase.
    6: [(16, 1)] * 6,
    7: [(11, 1), (16, 1), (16, 1), (11, 1), (16, 1), (16, 1), (10, 1)],
    15: [(7, 1)] * 6 + [(6, 1)] * 9,  # 5 cars per phase, every one near its 1-phase minimum
}


def test_cars_arriving_share_3_phases_then_switch_to_1_phase_then_queue() -> None:
    plan = None
    for n in range(1, 21):
        _stations, plan = _step(list(range(n)), plan)
        if n in ARRIVING:
            assert _summary(plan) == ARRIVING[n], n
        charging = [a for a in plan.allocations.values() if a.decision is Decision.CHARGE]
        queued = [a for a in plan.allocations.values() if a.decision is Decision.QUEUED]
        # Nobody waits while 15 cars (5 per phase at 6 A) fit; from the 16th on, they queue.
        assert len(charging) == min(n, 15)
        assert len(queued) == max(0, n - 15)
        for a in queued:
            assert a.current == 0
            assert a.reason.startswith("queued: group A full on L")
        assert plan.nodes["g"].planned[0] <= 32
    assert plan is not None
    # 16, 17, 18, 19, 20 wait, in arrival order.
    assert [a.station_id for a in plan.allocations.values() if a.current == 0] == [
        "s15",
        "s16",
        "s17",
        "s18",
        "s19",
    ]


def test_a_leaving_car_gives_its_share_to_the_first_waiting_one() -> None:
    plan = None
    for n in range(1, 21):
        _stations, plan = _step(list(range(n)), plan)
    present = list(range(20))
    # Car 0 (station on L1-L2-L3, so its 1-phase share is on grid L1) leaves: the first car
    # waiting for L1 (s15, rotation L1-L2-L3) takes it; s16 (L2) and s17 (L3) keep waiting.
    present.remove(0)
    _stations, plan = _step(present, plan)
    a = plan.allocations
    assert a["s15"].decision is Decision.CHARGE and a["s15"].phases == 1
    assert a["s16"].decision is Decision.QUEUED
    assert a["s17"].decision is Decision.QUEUED
    # Car 1 (L2) leaves: s16, the first one waiting for L2, gets in, not s19 (also L2).
    present.remove(1)
    _stations, plan = _step(present, plan)
    assert plan.allocations["s16"].decision is Decision.CHARGE
    assert plan.allocations["s19"].decision is Decision.QUEUED


def test_cars_leaving_release_the_queue_then_return_to_3_phases_with_hysteresis() -> None:
    plan = None
    for n in range(1, 21):
        _stations, plan = _step(list(range(n)), plan)
    present = list(range(20))
    history: dict[int, list[tuple[int, int]]] = {}
    while present:
        present.pop(0)
        _stations, plan = _step(present, plan)
        history[len(present)] = _summary(plan)
        charging = [a for a in plan.allocations.values() if a.decision is Decision.CHARGE]
        assert len(charging) == min(len(present), 15)
    # Arriving, 5 cars shared 3 phases; leaving, 5 and 6 cars stay on 1 phase, because going
    # back needs 6 A + 2 A hysteresis per car on 3 phases (5 x 8 A = 40 A > 32 A) ...
    assert {ph for _c, ph in history[5]} == {1}
    # ... and with 4 cars (4 x 8 A = 32 A) they all return to 3 phases at 8 A.
    assert history[4] == [(8, 3)] * 4
    assert history[3] == [(11, 3), (11, 3), (10, 3)]
    assert history[1] == [(32, 3)]


def test_without_rotated_wiring_one_phase_does_not_help_and_cars_queue_sooner() -> None:
    # All stations on L1-L2-L3: every 1-phase car lands on grid L1.
    stations = [
        Station(f"s{i}", "g", can_switch_phases=True, state=CarState.WAITING, arrival=float(i))
        for i in range(8)
    ]
    plan = allocate(GROUP, stations, NOW)
    assert_safe(GROUP, stations, plan)
    charge = [a for a in plan.allocations.values() if a.decision is Decision.CHARGE]
    assert len(charge) == 5  # 5 x 6 A on L1, whatever the phases
    assert plan.nodes["g"].planned[0] <= 32
