"""Inputs and outputs of the load-management engine: plain, typed dataclasses.

Units: every current is in ampere *per phase*; every time is a float in seconds (the caller
converts ``datetime.timestamp()``); phases are indexed 0, 1, 2 for L1, L2, L3.

Two kinds of phase appear and must never be mixed up:

* a **station phase** is the conductor at the station's socket (the car's L1 is the station's L1);
* a **grid phase** is the conductor of the supply tree (what the fuses see).

A station's :class:`PhaseRotation` maps the first to the second. A 1-phase car always charges on
the station's L1, so on a station wired L2-L3-L1 it loads grid phase L2.

Nothing in this package imports Django; the caller builds these objects from its rows.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: IEC 61851: a car may be offered 0 A or at least 6 A, never anything in between.
IEC_MIN_CURRENT = 6
#: The largest per-phase current a station can offer (32 A = 22 kW on 3 phases).
MAX_CURRENT = 32

Triple = tuple[float, float, float]


class PhaseRotation(enum.Enum):
    """Which grid phase each station phase is wired to (index = station phase)."""

    L1_L2_L3 = (0, 1, 2)
    L2_L3_L1 = (1, 2, 0)
    L3_L1_L2 = (2, 0, 1)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Grid phase index of station phases L1, L2, L3."""
        return self.value

    @property
    def label(self) -> str:
        return "-".join(PHASE_NAMES[g] for g in self.value)


PHASE_NAMES = ("L1", "L2", "L3")


class CarState(enum.Enum):
    """What the car at a station is doing, as the station reports it."""

    NO_CAR = "no_car"
    #: Plugged in and wants energy, not drawing yet (OCPP: Preparing / SuspendedEVSE).
    WAITING = "waiting"
    CHARGING = "charging"
    #: The car stopped drawing on its own (OCPP: SuspendedEV); it may resume at any time.
    SUSPENDED_EV = "suspended_ev"
    #: The car is full or the session is over (OCPP: Finishing).
    FINISHED = "finished"


class ShedMode(enum.Enum):
    """Load-shedding state of a node (ripple control, grid operator signal, API...)."""

    NONE = "none"
    #: IN1+IN2 wired: the stations below may not charge at all.
    TO_ZERO = "to_zero"
    #: IN2 only: the stations below are limited to their minimum current.
    TO_MIN = "to_min"


class Decision(enum.Enum):
    """Machine-readable kind of an allocation; the reason string is for humans."""

    CHARGE = "charge"
    QUEUED = "queued"
    SHED = "shed"
    OFFLINE = "offline"
    RESERVED = "reserved"  # minimum held for a car that suspended itself
    IDLE = "idle"  # no car, finished, or the car cannot be charged at all


@dataclass(frozen=True, slots=True)
class Setpoint:
    """What a station is told to offer: ``current`` A on ``phases`` phases (1 or 3).

    Invariant: ``current`` is 0 or at least :data:`IEC_MIN_CURRENT`; ``phases`` is 1 or 3.
    """

    current: int
    phases: int = 3

    def __post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, not {self.phases}")
        if self.current != 0 and not IEC_MIN_CURRENT <= self.current <= MAX_CURRENT:
            raise ValueError(f"current must be 0 or 6..32 A, not {self.current}")


OFF = Setpoint(0, 3)


@dataclass(frozen=True, slots=True)
class Node:
    """A point of the supply tree with a fuse: house connection, board, group (any depth).

    ``limit`` is the fuse limit per grid phase. If the node has a reference meter,
    ``measured`` is what it saw per grid phase (cars and everything else below it) at
    ``measured_at``; the budget for cars is then
    ``limit - max(0, measured - cars' measured current below) - margin`` (the cars' current must
    be from the same moment as the node's reading: see ``ev_measured``). A reading older than
    ``stale_after`` seconds is stale and the cars' budget becomes ``fallback_limit``
    (``None`` means 0 A: stop charging below an unobservable fuse).
    """

    id: str
    parent: str | None
    limit: Triple
    name: str = ""
    measured: Triple | None = None
    measured_at: float | None = None
    stale_after: float = 60.0
    fallback_limit: Triple | None = None
    margin: float = 0.0
    #: The cars' current below this node at ``measured_at`` (per grid phase), if the caller has
    #: it. ``None``: the engine sums the stations' ``measured``, which is right only if they
    #: are from (about) the same time as the node's reading.
    ev_measured: Triple | None = None
    #: A metered node whose meter has never reported has ``has_meter`` set and no reading:
    #: it is treated as stale. A node with a reading is metered whatever this flag says.
    has_meter: bool = False
    shed: ShedMode = ShedMode.NONE
    #: Who sheds, for the reason text: "ripple control", "grid operator", ...
    shed_source: str = ""

    @property
    def label(self) -> str:
        return self.name or self.id

    @property
    def metered(self) -> bool:
        return self.has_meter or self.measured is not None

    def budget(self, now: float, ev_measured_below: Triple) -> Triple:
        """What the cars (and offline stations) below may draw per grid phase.

        Unmetered: the limit. Metered and fresh: the limit less the non-EV load
        (never counted below 0, which could only be meter noise) less the margin. Stale: the
        fallback limit (never above the limit).
        """
        lim = self.limit
        if not self.metered:
            return lim
        if (
            self.measured is None
            or self.measured_at is None
            or now - self.measured_at > self.stale_after
        ):
            fb = self.fallback_limit or (0.0, 0.0, 0.0)
            return (min(lim[0], fb[0]), min(lim[1], fb[1]), min(lim[2], fb[2]))
        m = self.measured
        ev = self.ev_measured if self.ev_measured is not None else ev_measured_below
        mg = self.margin
        return (
            lim[0] - max(0.0, m[0] - ev[0]) - mg,
            lim[1] - max(0.0, m[1] - ev[1]) - mg,
            lim[2] - max(0.0, m[2] - ev[2]) - mg,
        )


@dataclass(frozen=True, slots=True)
class Station:
    """A charging point (one connector) and the car at it, as the engine needs to see it.

    ``min_current``/``max_current`` are the owner's settings (1 A steps, 6..32 A);
    ``installer_max`` is the installer's hard limit, never exceeded. ``drawn_phases`` are the
    *station* phases the car was seen drawing on (from per-phase meter values; must contain 0,
    because every car charges on L1), ``measured`` its per-station-phase current. ``setpoint``
    is what the station applies now (acknowledged), ``None`` if unknown. An offline station
    applies ``setpoint`` until ``lease_until`` and then falls back to ``fail_safe_current``.
    """

    id: str
    parent: str
    rotation: PhaseRotation = PhaseRotation.L1_L2_L3
    min_current: int = IEC_MIN_CURRENT
    max_current: int = MAX_CURRENT
    installer_max: int = MAX_CURRENT
    can_switch_phases: bool = False
    state: CarState = CarState.NO_CAR
    arrival: float | None = None
    drawn_phases: frozenset[int] | None = None
    measured: Triple | None = None
    priority: int = 0
    online: bool = True
    fail_safe_current: int = 0
    lease_until: float | None = None
    setpoint: Setpoint | None = None
    phase_switches: int = 0

    def __post_init__(self) -> None:
        if not IEC_MIN_CURRENT <= self.min_current <= MAX_CURRENT:
            raise ValueError(f"{self.id}: min_current must be 6..32 A")
        if not IEC_MIN_CURRENT <= self.max_current <= MAX_CURRENT:
            raise ValueError(f"{self.id}: max_current must be 6..32 A")
        if not IEC_MIN_CURRENT <= self.installer_max <= MAX_CURRENT:
            raise ValueError(f"{self.id}: installer_max must be 6..32 A")
        if self.fail_safe_current != 0 and not (
            IEC_MIN_CURRENT <= self.fail_safe_current <= MAX_CURRENT
        ):
            raise ValueError(f"{self.id}: fail_safe_current must be 0 or 6..32 A")
        if self.drawn_phases is not None and (
            0 not in self.drawn_phases or not self.drawn_phases <= {0, 1, 2}
        ):
            raise ValueError(f"{self.id}: drawn_phases must be a subset of {{0,1,2}} holding 0")


@dataclass(frozen=True, slots=True)
class Settings:
    """Tunables of the engine. Defaults are what the product ships with."""

    #: Going back from 1 to 3 phases needs this much headroom per phase above the 3-phase
    #: minimum (A), so that a budget wobbling around the threshold does not flap the phases.
    phase_switch_hysteresis: int = 2
    #: After this many switches in one session a car keeps the phases it has.
    max_phase_switches: int = 4
    #: A charging car that draws at least this much less than offered is offered its draw plus
    #: this headroom instead, and the rest goes to others (``None`` turns this off).
    demand_headroom: int | None = 3


DEFAULT_SETTINGS = Settings()


@dataclass(slots=True)
class Allocation:
    """The engine's decision for one station.

    Invariant for online stations: ``current`` is 0 or within the station's
    ``[min_current, min(max_current, installer_max)]``. For an offline station the engine
    sends nothing; ``current``/``phases`` are what it is *counted* at (fail-safe or lease).
    """

    station_id: str
    current: int
    phases: int
    decision: Decision
    reason: str
    #: Whether the station's phases change against its current setpoint while charging.
    phase_switch: bool = False

    @property
    def setpoint(self) -> Setpoint:
        return Setpoint(self.current, self.phases)


@dataclass(slots=True)
class NodeLoad:
    """Planned load at a node: per grid phase, what every station below may draw."""

    node_id: str
    #: What cars (and offline stations) may use per grid phase, after meter and margin.
    budget: Triple
    planned: tuple[int, int, int]
    #: ``True`` where the budget is met only by queueing or limiting someone.
    binding: tuple[bool, bool, bool] = (False, False, False)


@dataclass(slots=True)
class Plan:
    """The engine's output: a setpoint per station and the planned load per node."""

    allocations: dict[str, Allocation]
    nodes: dict[str, NodeLoad]
    #: Things an operator should see, e.g. offline fail-safe currents above a budget.
    warnings: list[str] = field(default_factory=list)
    #: The node each warning is about (same order), so that a view of part of the tree can
    #: show its own.
    warning_nodes: list[str] = field(default_factory=list)

    def setpoints(self) -> dict[str, Setpoint]:
        """The setpoints to send (online stations only)."""
        return {
            a.station_id: Setpoint(a.current, a.phases)
            for a in self.allocations.values()
            if a.decision is not Decision.OFFLINE
        }


def grid_phases(station: Station, setpoint: Setpoint) -> tuple[int, ...]:
    """Grid phases on which ``station`` may draw ``setpoint.current`` (empty if 0 A).

    A 1-phase setpoint loads the grid phase of the station's L1. A 3-phase setpoint loads the
    grid phases of the station phases the car was seen drawing on, or all three if unknown.
    """
    if setpoint.current == 0:
        return ()
    rot = station.rotation.value
    if setpoint.phases == 1:
        return (rot[0],)
    if station.drawn_phases is None:
        return rot
    return tuple(rot[p] for p in sorted(station.drawn_phases))


def node_loads(
    nodes: Sequence[Node],
    stations: Iterable[Station],
    footprints: Mapping[str, Sequence[float]],
) -> dict[str, list[float]]:
    """Sum per-grid-phase ``footprints`` (by station id) up the tree: load at every node.

    Used by tests, the transition checker and the simulator; the allocator has its own,
    faster bookkeeping.
    """
    parent = {n.id: n.parent for n in nodes}
    loads: dict[str, list[float]] = {n.id: [0.0, 0.0, 0.0] for n in nodes}
    for st in stations:
        fp = footprints.get(st.id)
        if fp is None:
            continue
        nid: str | None = st.parent
        while nid is not None:
            acc = loads[nid]
            acc[0] += fp[0]
            acc[1] += fp[1]
            acc[2] += fp[2]
            nid = parent[nid]
    return loads


def footprint(station: Station, setpoint: Setpoint) -> list[float]:
    """Per-grid-phase current ``station`` may draw at ``setpoint`` (online)."""
    out = [0.0, 0.0, 0.0]
    for g in grid_phases(station, setpoint):
        out[g] = float(setpoint.current)
    return out


def offline_footprint(station: Station, now: float) -> list[float]:
    """What an offline station may draw: its fail-safe on all phases, or its lease if larger.

    Until ``lease_until`` the station still applies its last setpoint; after that it falls back
    to ``fail_safe_current``, which is counted on all three phases since a new car could draw
    on any of them.
    """
    fs = float(station.fail_safe_current)
    out = [fs, fs, fs]
    sp = station.setpoint
    if sp is not None and station.lease_until is not None and now < station.lease_until:
        # The car may draw on 3 phases even if it was seen on fewer: it could be replugged.
        for g in station.rotation.value if sp.phases == 3 else station.rotation.value[:1]:
            out[g] = max(out[g], float(sp.current))
    return out
