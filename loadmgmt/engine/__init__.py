"""The load-management engine: pure Python, no Django, ``now`` passed in.

The public API, re-exported here (the simulator, scenarios and plot are imported from their
modules; the plot needs matplotlib, nothing else does)::

    allocate(nodes, stations, now, settings=DEFAULT_SETTINGS, topology=None) -> Plan
    plan_transition(previous, target) -> Transition

See docs/LOAD_MANAGEMENT.md.
"""

from .allocate import Topology, allocate, effective_max, minimal_phases, phase_options
from .model import (
    DEFAULT_SETTINGS,
    IEC_MIN_CURRENT,
    MAX_CURRENT,
    OFF,
    PHASE_NAMES,
    Allocation,
    CarState,
    Decision,
    Node,
    NodeLoad,
    PhaseRotation,
    Plan,
    Setpoint,
    Settings,
    ShedMode,
    Station,
    footprint,
    grid_phases,
    node_loads,
    offline_footprint,
)
from .transition import Change, Step, StepKind, Transition, is_at_most, meet, plan_transition

__all__ = [
    "DEFAULT_SETTINGS",
    "IEC_MIN_CURRENT",
    "MAX_CURRENT",
    "OFF",
    "PHASE_NAMES",
    "Allocation",
    "CarState",
    "Change",
    "Decision",
    "Node",
    "NodeLoad",
    "PhaseRotation",
    "Plan",
    "Setpoint",
    "Settings",
    "ShedMode",
    "Station",
    "Step",
    "StepKind",
    "Topology",
    "Transition",
    "allocate",
    "effective_max",
    "footprint",
    "grid_phases",
    "is_at_most",
    "meet",
    "minimal_phases",
    "node_loads",
    "offline_footprint",
    "phase_options",
    "plan_transition",
]
