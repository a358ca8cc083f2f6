"""A safe order in which to move stations from their previous setpoints to new ones.

Stations acknowledge commands at different times, so between the old and the new state every
mixture of old and new setpoints can exist for a while. :func:`plan_transition` returns at
most two steps:

1. **decrease**: every station whose new setpoint is lower on some phase goes to the
   *meet* of old and new (per grid phase the smaller of the two; representable as a setpoint
   because a 1-phase footprint is part of the same station's 3-phase footprint);
2. **increase**: once *every* command of step 1 is acknowledged, stations go from the meet to
   the new setpoint.

Safety argument: during step 1 every station is at its old setpoint or at the meet, both at
most the old setpoint on every phase, so no node's load rises above its previous load. During
step 2 every station is at the meet or the new setpoint, both at most the new setpoint on
every phase, so every node stays within the new plan, which fits the budgets. If a decrease is
never acknowledged, step 2 must not be sent: the caller recomputes with that station counted at
the larger of the two setpoints.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from .model import OFF, Setpoint


class StepKind(enum.Enum):
    DECREASE = "decrease"
    INCREASE = "increase"


@dataclass(frozen=True, slots=True)
class Change:
    """One command: move ``station_id`` from ``before`` to ``after``."""

    station_id: str
    before: Setpoint
    after: Setpoint


@dataclass(frozen=True, slots=True)
class Step:
    """Commands that may be sent together; the next step waits for all their acks."""

    kind: StepKind
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Transition:
    """The steps, in order (empty if nothing changes)."""

    steps: tuple[Step, ...]

    def states(self, previous: Mapping[str, Setpoint]) -> list[dict[str, Setpoint]]:
        """Setpoints after each step, starting with ``previous`` (for display and tests)."""
        cur = dict(previous)
        out = [dict(cur)]
        for step in self.steps:
            for ch in step.changes:
                cur[ch.station_id] = ch.after
            out.append(dict(cur))
        return out


def meet(a: Setpoint, b: Setpoint) -> Setpoint:
    """The largest setpoint at or below both ``a`` and ``b`` on every phase of a station.

    Same phases: the smaller current. Different phases: the 1-phase footprint (the station's
    L1) is the only common part, at the smaller current. Either at 0 A: 0 A.
    """
    if a.current == 0 or b.current == 0:
        return OFF if a.current == 0 else Setpoint(0, a.phases)
    cur = min(a.current, b.current)
    if a.phases == b.phases:
        return Setpoint(cur, a.phases)
    return Setpoint(cur, 1)


def is_at_most(a: Setpoint, b: Setpoint) -> bool:
    """Whether ``a`` draws no more than ``b`` on every grid phase of the same station."""
    if a.current == 0:
        return True
    if a.current > b.current:
        return False
    return a.phases == 1 or b.phases == 3


def plan_transition(previous: Mapping[str, Setpoint], target: Mapping[str, Setpoint]) -> Transition:
    """Steps from ``previous`` to ``target`` (both keyed by station id).

    A station missing from ``previous`` is taken to be at 0 A; one missing from ``target`` is
    left alone. ``previous`` must be what a station may be drawing *now*: for a station with an
    unacknowledged command, pass the larger of its old and commanded setpoints. The changes in
    each step are sorted by station id, so the plan is deterministic.
    """
    down: list[Change] = []
    up: list[Change] = []
    for sid in sorted(target):
        new = target[sid]
        old = previous.get(sid, OFF)
        if _same(old, new):
            continue
        if is_at_most(new, old):
            down.append(Change(sid, old, new))
        elif is_at_most(old, new):
            up.append(Change(sid, old, new))
        else:  # mixed: lower to the common part first, raise after everyone has lowered
            mid = meet(old, new)
            if not _same(old, mid):
                down.append(Change(sid, old, mid))
            up.append(Change(sid, mid, new))
    steps: list[Step] = []
    if down:
        steps.append(Step(StepKind.DECREASE, tuple(down)))
    if up:
        steps.append(Step(StepKind.INCREASE, tuple(up)))
    return Transition(tuple(steps))


def _same(a: Setpoint, b: Setpoint) -> bool:
    # Two 0 A setpoints are the same whatever their phases: nothing is drawn.
    return (a.current == 0 and b.current == 0) or a == b
