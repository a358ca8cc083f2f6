"""The rules of DESIGN.md, one readable example each."""

from __future__ import annotations

import pytest

from loadmgmt.engine.allocate import Topology, allocate
from loadmgmt.engine.model import (
    CarState,
    Decision,
    Node,
    PhaseRotation,
    Plan,
    Setpoint,
    Settings,
    ShedMode,
    Station,
)

from .helpers import NOW, assert_safe

L123, L231, L312 = PhaseRotation.L1_L2_L3, PhaseRotation.L2_L3_L1, PhaseRotation.L3_L1_L2


def group(limit: float = 32.0, **kw: object) -> Node:
    return Node("g", None, (limit, limit, limit), name="group A", **kw)  # type: ignore[arg-type]


def car(sid: str, arrival: float = 0.0, **kw: object) -> Station:
    kw.setdefault("state", CarState.CHARGING)
    kw.setdefault("parent", "g")
    return Station(sid, arrival=arrival, **kw)  # type: ignore[arg-type]


def run(nodes: list[Node], stations: list[Station], **kw: object) -> Plan:
    plan = allocate(nodes, stations, NOW, **kw)  # type: ignore[arg-type]
    assert_safe(nodes, stations, plan)
    return plan


def cur(plan: Plan, sid: str) -> tuple[int, int]:
    a = plan.allocations[sid]
    return a.current, a.phases


# -- phases and rotations -------------------------------------------------------------------


def test_a_1_phase_car_on_a_rotated_station_loads_the_grid_phase_of_the_stations_l1() -> None:
    nodes = [group(20.0)]
    stations = [car("a", can_switch_phases=True), car("b", 1, can_switch_phases=True)]
    stations += [car("c", 2, rotation=L231, can_switch_phases=True)]
    stations += [car("d", 3, rotation=L312, can_switch_phases=True)]
    plan = run(nodes, stations)
    # 4 x 6 A = 24 A on 3 phases does not fit 20 A: all go 1-phase, a and b on L1,
    # c on L2, d on L3.
    assert [cur(plan, s) for s in "abcd"] == [(10, 1), (10, 1), (20, 1), (20, 1)]
    assert plan.nodes["g"].planned == (20, 20, 20)
    assert plan.allocations["c"].reason == "1-phase on L2, at the station's maximum 20 A" or (
        plan.allocations["c"].reason.startswith("1-phase on L2")
    )


def test_a_car_drawing_fewer_phases_than_offered_is_counted_on_the_phases_it_uses() -> None:
    nodes = [group(18.0)]
    stations = [
        car("three", 0),  # a 3-phase car on a station that cannot switch
        car("one_l1", 1, drawn_phases=frozenset({0}), setpoint=Setpoint(6, 3)),
        car("one_l2", 2, rotation=L231, drawn_phases=frozenset({0}), setpoint=Setpoint(6, 3)),
    ]
    plan = run(nodes, stations)
    # Counted on its real phases, each 1-phase car shares one grid phase with the 3-phase car:
    # L1 = three + one_l1, L2 = three + one_l2, L3 = three.
    assert [cur(plan, s)[0] for s in ("three", "one_l1", "one_l2")] == [9, 9, 9]
    # Counting them on 3 phases would have left everybody at 6 A.
    blind = [
        Station(s.id, "g", rotation=s.rotation, state=s.state, arrival=s.arrival) for s in stations
    ]
    assert [cur(run(nodes, blind), s)[0] for s in ("three", "one_l1", "one_l2")] == [6, 6, 6]
    # A car that charges on one phase anyway is never switched: no phase switch gains it.
    assert plan.allocations["one_l1"].phases == 3
    assert not plan.allocations["one_l1"].phase_switch


def test_stations_that_cannot_switch_stay_on_3_phases_and_wait_instead() -> None:
    nodes = [group(32.0)]
    stations = [car(f"s{i}", i) for i in range(7)]  # no station can switch
    plan = run(nodes, stations)
    assert [cur(plan, f"s{i}")[0] for i in range(7)] == [7, 7, 6, 6, 6, 0, 0]
    assert plan.allocations["s5"].reason == "queued: group A full on L1"


# -- offline stations and shedding --------------------------------------------------------------


def test_an_offline_station_is_counted_at_its_fail_safe_current_on_all_phases() -> None:
    nodes = [group(32.0)]
    stations = [car("on"), Station("off", "g", online=False, fail_safe_current=10)]
    plan = run(nodes, stations)
    assert cur(plan, "on") == (22, 3)
    assert plan.allocations["off"].decision is Decision.OFFLINE
    assert plan.nodes["g"].planned == (32, 32, 32)


def test_an_offline_station_keeps_its_last_setpoint_until_its_lease_ends() -> None:
    nodes = [group(32.0)]
    off = Station(
        "off",
        "g",
        online=False,
        fail_safe_current=6,
        setpoint=Setpoint(16, 1),
        lease_until=NOW + 20,
    )
    plan = run(nodes, [car("on", can_switch_phases=True), off])
    # Until the lease ends it may draw 16 A on its L1; 6 A (fail-safe) on the others.
    assert cur(plan, "on") == (16, 3)
    assert plan.nodes["g"].planned == (32, 22, 22)
    later = allocate(nodes, [car("on", can_switch_phases=True), off], NOW + 30)
    assert cur(later, "on") == (26, 3)


def test_a_warning_when_offline_fail_safe_currents_alone_exceed_a_budget() -> None:
    nodes = [group(10.0)]
    stations = [Station("off", "g", online=False, fail_safe_current=16), car("on")]
    plan = run(nodes, stations)
    assert cur(plan, "on")[0] == 0
    assert any("offline stations may draw 16 A" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("mode", "expected", "reason"),
    [
        (ShedMode.TO_ZERO, [0, 0], "shed by ripple control"),
        (ShedMode.TO_MIN, [6, 8], "shed to its minimum 6 A by ripple control"),
    ],
)
def test_a_shed_node_gives_its_stations_0_a_or_their_minimum(
    mode: ShedMode, expected: list[int], reason: str
) -> None:
    nodes = [
        Node("house", None, (63.0,) * 3, name="house"),  # type: ignore[arg-type]
        Node(
            "board", "house", (63.0,) * 3, name="board 3", shed=mode, shed_source="ripple control"
        ),  # type: ignore[arg-type]
        Node("g", "board", (63.0,) * 3, name="group A"),  # type: ignore[arg-type]
    ]
    stations = [car("a"), car("b", 1, min_current=8), car("free", 2, parent="house")]
    plan = run(nodes, stations)
    assert [cur(plan, s)[0] for s in ("a", "b")] == expected
    assert plan.allocations["a"].reason == reason
    assert cur(plan, "free") == (32, 3)  # not below the shed board


# -- meters -------------------------------------------------------------------------------------


def test_a_metered_node_gives_cars_the_limit_less_other_loads_less_the_margin() -> None:
    # The meter sees 60 A per phase, 20 A of which is our car: other loads take 40 A.
    node = group(
        100.0, has_meter=True, measured=(60.0, 60.0, 60.0), measured_at=NOW - 5, margin=5.0
    )
    stations = [car("a", measured=(20.0, 20.0, 20.0)), car("b", 1), car("c", 2)]
    plan = run([node], stations)
    assert plan.nodes["g"].budget == (55.0, 55.0, 55.0)
    assert [cur(plan, s)[0] for s in "abc"] == [19, 18, 18]


def test_a_stale_meter_falls_back_to_the_nodes_fallback_limit() -> None:
    node = group(
        100.0,
        has_meter=True,
        measured=(10.0, 10.0, 10.0),
        measured_at=NOW - 120,
        stale_after=60.0,
        fallback_limit=(16.0, 16.0, 16.0),
    )
    plan = run([node], [car("a")])
    assert plan.nodes["g"].budget == (16.0, 16.0, 16.0)
    assert cur(plan, "a") == (16, 3)
    # No fallback configured: an unobservable fuse gets nothing.
    bare = Node("g", None, (100.0,) * 3, has_meter=True)  # type: ignore[arg-type]
    assert cur(run([bare], [car("a")]), "a")[0] == 0


def test_the_cars_measured_current_may_be_given_for_the_moment_of_the_node_reading() -> None:
    node = group(
        100.0,
        has_meter=True,
        measured=(60.0, 60.0, 60.0),
        measured_at=NOW - 5,
        ev_measured=(10.0, 10.0, 10.0),
    )
    plan = run([node], [car("a", measured=(30.0, 30.0, 30.0))])
    assert plan.nodes["g"].budget == (50.0, 50.0, 50.0)


# -- the tree -----------------------------------------------------------------------------------


def test_a_constraint_binds_at_an_ancestor_on_one_grid_phase() -> None:
    nodes = [
        Node("house", None, (100.0, 100.0, 100.0), name="house"),
        Node("board", "house", (63.0, 20.0, 63.0), name="board 3"),
        Node("g1", "board", (32.0, 32.0, 32.0), name="group A"),
        Node("g2", "board", (32.0, 32.0, 32.0), name="group B"),
    ]
    stations = [
        car("a", 0, parent="g1"),
        car("b", 1, parent="g2", rotation=L231, can_switch_phases=True),
        car("c", 2, parent="g2", rotation=L312, can_switch_phases=True),
    ]
    plan = run(nodes, stations)
    # L2 at board 3 (20 A) is shared by a (3-phase) and b and c: 3 x 6 = 18 fits on 3 phases.
    assert [cur(plan, s) for s in "abc"] == [(7, 3), (7, 3), (6, 3)]
    assert plan.allocations["a"].reason == "limited by L2 at board 3"
    assert plan.nodes["board"].binding == (False, True, False)
    # One more car on group B: 4 x 6 = 24 A on L2 does not fit, so the cars that can switch go
    # to 1 phase, b on L2 and c, d on L3 and L1 (their stations' L1).
    stations.append(car("d", 3, parent="g2", can_switch_phases=True))
    plan = run(nodes, stations)
    assert cur(plan, "a") == (10, 3)
    assert cur(plan, "b") == (10, 1)
    assert cur(plan, "c")[1] == 1 and cur(plan, "d")[1] == 1
    assert plan.nodes["board"].planned[1] == 20


def test_deep_trees_and_forests_are_fine() -> None:
    nodes = [Node("r1", None, (50.0,) * 3)]  # type: ignore[arg-type]
    for i in range(1, 8):  # a chain of 8 nodes, the tightest in the middle
        lim = 10.0 if i == 4 else 50.0
        nodes.append(Node(f"r{i + 1}", f"r{i}", (lim, lim, lim)))
    nodes.append(Node("other", None, (16.0,) * 3))  # type: ignore[arg-type]
    plan = run(nodes, [car("deep", parent="r8"), car("elsewhere", parent="other")])
    assert cur(plan, "deep") == (10, 3)
    assert cur(plan, "elsewhere") == (16, 3)


# -- queue, priorities, suspended cars ------------------------------------------------------------


def test_higher_priority_is_served_before_arrival_order() -> None:
    nodes = [group(10.0)]
    stations = [car("early", 0), car("vip", 5, priority=1)]
    plan = run(nodes, stations)
    assert cur(plan, "vip") == (10, 3)
    assert plan.allocations["early"].decision is Decision.QUEUED


def test_higher_priority_cars_are_filled_first() -> None:
    nodes = [group(40.0)]
    plan = run(nodes, [car("a", 0), car("b", 1), car("vip", 2, priority=1)])
    assert [cur(plan, s)[0] for s in ("vip", "a", "b")] == [28, 6, 6]


def test_a_suspended_car_keeps_its_minimum_but_never_makes_a_car_wait() -> None:
    nodes = [group(20.0)]
    sus = car("sus", 0, state=CarState.SUSPENDED_EV, can_switch_phases=True)
    plan = run(nodes, [sus, car("a", 1)])
    assert plan.allocations["sus"].decision is Decision.RESERVED
    assert cur(plan, "sus") == (6, 1)  # its minimum, on one phase: the cheapest reservation
    assert cur(plan, "a") == (14, 3)
    plan = run(nodes, [sus, car("a", 1), car("b", 2), car("c", 3)])
    assert [cur(plan, s)[0] for s in "abc"] == [7, 7, 6]  # 3 x 6 A + 6 A reserved > 20 A
    assert plan.allocations["sus"].current == 0
    assert plan.allocations["sus"].reason == "suspended by the car: no room to reserve its minimum"


def test_no_car_and_finished_stations_get_nothing() -> None:
    plan = run([group()], [car("x", state=CarState.NO_CAR), car("y", state=CarState.FINISHED)])
    assert [a.reason for a in plan.allocations.values()] == [
        "no car",
        "finished: the car needs no energy",
    ]


# -- limits of a station ----------------------------------------------------------------------


def test_the_installer_maximum_is_never_exceeded() -> None:
    plan = run([group(63.0)], [car("a", max_current=32, installer_max=16)])
    assert cur(plan, "a") == (16, 3)
    assert plan.allocations["a"].reason == "at the installer's maximum 16 A"


def test_a_minimum_above_the_maximum_means_no_charging() -> None:
    plan = run([group()], [car("a", min_current=16, installer_max=10)])
    assert cur(plan, "a")[0] == 0
    assert "cannot charge" in plan.allocations["a"].reason


def test_a_car_drawing_well_below_its_offer_is_offered_its_draw_plus_headroom() -> None:
    nodes = [group(32.0)]
    slow = car("slow", 0, setpoint=Setpoint(16, 3), measured=(9.6, 9.5, 9.7))
    plan = run(nodes, [slow, car("fast", 1, setpoint=Setpoint(16, 3))])
    assert cur(plan, "slow") == (13, 3)  # ceil(9.7) + 3 A headroom
    assert cur(plan, "fast") == (19, 3)
    off = run(nodes, [slow, car("fast", 1)], settings=Settings(demand_headroom=None))
    assert cur(off, "slow") == (16, 3)


# -- phase switching ------------------------------------------------------------------------------


def test_phase_switching_has_hysteresis() -> None:
    nodes = [group(32.0)]
    on_one = {"can_switch_phases": True, "setpoint": Setpoint(8, 1)}
    # 5 cars on 1 phase: 5 x 6 A = 30 A would fit on 3 phases, but not 5 x (6 + 2) A.
    plan = run(nodes, [car(f"s{i}", i, **on_one) for i in range(5)])  # type: ignore[arg-type]
    assert {cur(plan, f"s{i}")[1] for i in range(5)} == {1}
    # 4 cars: 4 x 8 A = 32 A fits: back to 3 phases, and that is a switch.
    plan = run(nodes, [car(f"s{i}", i, **on_one) for i in range(4)])  # type: ignore[arg-type]
    assert [cur(plan, f"s{i}") for i in range(4)] == [(8, 3)] * 4
    assert all(a.phase_switch for a in plan.allocations.values())


def test_a_car_that_used_up_its_phase_switches_keeps_its_phases() -> None:
    nodes = [group(32.0)]
    tired = car("tired", 0, can_switch_phases=True, setpoint=Setpoint(16, 1), phase_switches=4)
    plan = run(nodes, [tired])
    assert cur(plan, "tired") == (32, 1)
    assert not plan.allocations["tired"].phase_switch
    plan = run(nodes, [tired], settings=Settings(max_phase_switches=5))
    assert cur(plan, "tired") == (32, 3)


# -- input checks ---------------------------------------------------------------------------


def test_inconsistent_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown parent"):
        allocate([Node("a", "nope", (1.0, 1.0, 1.0))], [], NOW)
    with pytest.raises(ValueError, match="cycle"):
        Topology.build([Node("a", "b", (1.0,) * 3), Node("b", "a", (1.0,) * 3)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate node"):
        Topology.build([Node("a", None, (1.0,) * 3), Node("a", None, (1.0,) * 3)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown parent node"):
        allocate([group()], [Station("s", "nope")], NOW)
    with pytest.raises(ValueError, match="duplicate station"):
        allocate([group()], [Station("s", "g"), Station("s", "g")], NOW)
    with pytest.raises(ValueError):
        Setpoint(5, 3)  # IEC 61851: 0 or at least 6 A
    with pytest.raises(ValueError):
        Setpoint(10, 2)
    with pytest.raises(ValueError):
        Station("s", "g", min_current=5)
    with pytest.raises(ValueError):
        Station("s", "g", drawn_phases=frozenset({1}))  # every car charges on L1


def test_a_prebuilt_topology_gives_the_same_plan() -> None:
    nodes = [group(), Node("h", None, (10.0,) * 3)]  # type: ignore[arg-type]
    stations = [car("a"), car("b", 1, parent="h")]
    assert allocate(nodes, stations, NOW, topology=Topology.build(nodes)) == allocate(
        nodes, stations, NOW
    )
