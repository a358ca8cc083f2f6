"""The transition plan: decreases first, increases once they are acknowledged."""

from __future__ import annotations

from loadmgmt.engine.model import OFF, Setpoint
from loadmgmt.engine.transition import (
    Change,
    StepKind,
    is_at_most,
    meet,
    plan_transition,
)


def test_nothing_to_do_gives_no_steps() -> None:
    same = {"a": Setpoint(16, 3), "b": OFF}
    assert plan_transition(same, {**same, "b": Setpoint(0, 1)}).steps == ()


def test_decreases_go_first_and_increases_wait_for_them() -> None:
    prev = {"a": Setpoint(16, 3), "b": Setpoint(16, 3), "c": OFF}
    new = {"a": Setpoint(10, 3), "b": Setpoint(16, 3), "c": Setpoint(6, 3)}
    tr = plan_transition(prev, new)
    assert [s.kind for s in tr.steps] == [StepKind.DECREASE, StepKind.INCREASE]
    assert tr.steps[0].changes == (Change("a", Setpoint(16, 3), Setpoint(10, 3)),)
    assert tr.steps[1].changes == (Change("c", OFF, Setpoint(6, 3)),)
    assert tr.states(prev)[-1] == new


def test_a_switch_to_1_phase_at_a_higher_current_is_split_through_the_common_part() -> None:
    # 3 x 6 A -> 1 x 16 A: two phases go down, one goes up. First 1 x 6 A (lower everywhere),
    # then, after every decrease is acknowledged, 1 x 16 A.
    tr = plan_transition({"a": Setpoint(6, 3)}, {"a": Setpoint(16, 1)})
    assert [(s.kind, s.changes) for s in tr.steps] == [
        (StepKind.DECREASE, (Change("a", Setpoint(6, 3), Setpoint(6, 1)),)),
        (StepKind.INCREASE, (Change("a", Setpoint(6, 1), Setpoint(16, 1)),)),
    ]


def test_back_to_3_phases_at_a_lower_current() -> None:
    tr = plan_transition({"a": Setpoint(16, 1)}, {"a": Setpoint(8, 3)})
    assert [s.changes[0].after for s in tr.steps] == [Setpoint(8, 1), Setpoint(8, 3)]


def test_meet_and_order_of_setpoints() -> None:
    assert meet(Setpoint(16, 3), Setpoint(10, 3)) == Setpoint(10, 3)
    assert meet(Setpoint(16, 1), Setpoint(10, 3)) == Setpoint(10, 1)
    assert meet(Setpoint(16, 1), OFF).current == 0
    assert is_at_most(Setpoint(10, 1), Setpoint(10, 3))
    assert not is_at_most(Setpoint(10, 3), Setpoint(10, 1))
    assert not is_at_most(Setpoint(11, 1), Setpoint(10, 3))
    assert is_at_most(OFF, Setpoint(6, 1))


def test_missing_previous_means_0_a_and_missing_target_is_left_alone() -> None:
    tr = plan_transition({"gone": Setpoint(16, 3)}, {"new": Setpoint(6, 3)})
    assert [c.station_id for s in tr.steps for c in s.changes] == ["new"]
