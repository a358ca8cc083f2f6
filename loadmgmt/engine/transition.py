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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .model import OFF, Node, Plan, Setpoint, Station, footprint


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


# Float sums of whole amperes; a rounding error must not hold an increase that fits.
_EPSILON = 1e-6


class IncreaseGate:
    """Which increases may go out while some decreases are still unacknowledged.

    Waiting for *every* decrease before any increase is safe but slow when many stations
    change at once (a group switching from 3 phases to 1: dozens of decreases, then dozens
    of increases). The gate sends each increase as soon as it fits, with every station
    counted at the most it may draw at that moment:

    * a decrease not yet acknowledged: its ``before`` (afterwards: its ``after``);
    * an increase not yet sent: its ``before``; once sent: its ``after``.

    Per node and grid phase, the *excess* is what those worst cases add to the new plan
    (positive for pending decreases, negative for increases not yet sent). The new plan's
    load plus the excess is an upper bound of the real draw; an increase is let through
    only if afterwards the excess stays within the plan's *slack* (``budget - planned``, at
    least 0) on every node and phase it loads, so the draw never exceeds the budget (or the
    plan's own load where the plan alone is over it, e.g. offline fail-safes; the two-step
    transition gives the same bound). Once every decrease is acknowledged the excess is at
    most 0 everywhere and every increase fits: the gate never holds an increase longer
    than the two-step transition would. A station's increase also waits for the
    acknowledgement of its own decrease (a mixed change goes through the common part), so
    that its commands arrive in order.
    """

    def __init__(
        self,
        nodes: Sequence[Node],
        stations: Mapping[str, Station],
        plan: Plan,
        decreases: Iterable[Change],
        increases: Iterable[Change],
    ) -> None:
        self._parent = {n.id: n.parent for n in nodes}
        self._stations = stations
        self._slack: dict[str, list[float]] = {}
        for nid, load in plan.nodes.items():
            self._slack[nid] = [
                max(0.0, b - p) for b, p in zip(load.budget, load.planned, strict=True)
            ]
        self._excess: dict[str, list[float]] = {n.id: [0.0, 0.0, 0.0] for n in nodes}
        self._pending: dict[str, Change] = {}
        for ch in decreases:
            self._pending[ch.station_id] = ch
            self._add(ch.station_id, self._delta(ch), sign=-1.0)
        self._waiting: list[Change] = []
        for ch in increases:
            self._waiting.append(ch)
            self._add(ch.station_id, self._delta(ch), sign=-1.0)

    def _delta(self, ch: Change) -> list[float]:
        st = self._stations[ch.station_id]
        after, before = footprint(st, ch.after), footprint(st, ch.before)
        return [a - b for a, b in zip(after, before, strict=True)]

    def _path(self, station_id: str) -> list[str]:
        out = []
        nid = self._stations[station_id].parent
        while nid is not None:
            out.append(nid)
            nid = self._parent[nid]
        return out

    def _add(self, station_id: str, delta: list[float], sign: float) -> None:
        for nid in self._path(station_id):
            acc = self._excess[nid]
            for g in range(3):
                acc[g] += sign * delta[g]

    def acknowledged(self, station_id: str) -> None:
        """The station accepted its decrease: it draws at most its ``after`` from now on."""
        ch = self._pending.pop(station_id, None)
        if ch is not None:
            self._add(station_id, self._delta(ch), sign=1.0)

    @property
    def waiting(self) -> list[Change]:
        return list(self._waiting)

    def ready(self) -> list[Change]:
        """The increases that fit now (counted as sent from here on)."""
        out: list[Change] = []
        keep: list[Change] = []
        for ch in self._waiting:
            if ch.station_id in self._pending or not self._fits(ch):
                keep.append(ch)
                continue
            self._add(ch.station_id, self._delta(ch), sign=1.0)
            out.append(ch)
        self._waiting = keep
        return out

    def _fits(self, ch: Change) -> bool:
        delta = self._delta(ch)
        for nid in self._path(ch.station_id):
            acc, slack = self._excess[nid], self._slack.get(nid, [0.0, 0.0, 0.0])
            for g in range(3):
                if delta[g] > 0 and acc[g] + delta[g] > slack[g] + _EPSILON:
                    return False
        return True
