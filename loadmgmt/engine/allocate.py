"""The allocation algorithm: who charges, on how many phases, at how many ampere.

Entry point: :func:`allocate`. One call recomputes everything from the inputs (no hidden
state), so the same input always gives the same output.

The pipeline, each step keeping the invariant "every node and grid phase stays within its
budget" (a *resource* below is one node and one grid phase):

1. **Budgets.** Per node and grid phase from the fuse limit, the meter (or its fallback when
   stale) and the margin, rounded down to whole ampere. Offline stations are subtracted at once
   at their fail-safe current (or their unexpired lease) on all phases: we cannot command them.
2. **Admission (who waits).** Cars that want energy, in order (priority high first, then
   arrival, then input order), each at its *minimal footprint*: its minimum current on one phase
   if its station may switch to 1 phase, else on the phases it draws. A car is admitted if that
   fits with every car admitted before it; otherwise it waits ("queued: group A full on L2").
   Hence a car waits only when everyone ahead of it is down to the 1-phase minimum, and a
   leaving car's room goes to the first waiting car that fits in it. A later car may pass a
   waiting one only if it needs room the waiting one could not use (another grid phase).
3. **Reservations.** Cars that suspended themselves keep their minimum, if it still fits, so
   that they can resume; they never make a car that wants energy wait.
4. **Phase mode.** All admitted cars start on 3 phases. Bottom-up, a node whose cars' 3-phase
   minimums do not fit switches its switchable cars to 1 phase (the seed's group rule, applied
   at every level). Going back to 3 phases needs ``phase_switch_hysteresis`` A of headroom, and
   a car that used up ``max_phase_switches`` keeps its phases. Because step 2 admitted everyone
   at the minimal footprint, this always ends feasible.
5. **Sharing (water-filling).** Cars are grouped into classes with identical constraints (same
   parent node, grid phases, min, max, priority). Per priority tier, from the highest, a common
   level rises; when a resource fills, the classes through it freeze at that (fractional)
   level. The exact result is rounded down to whole ampere and the ampere left over are handed
   out one at a time, lowest car first, then queue order, wherever every resource of the car
   still has room. This is max-min fair and work-conserving: cars of equal priority under the
   same constraints differ by at most 1 A, and a car below its maximum sits on a full resource.

Costs: O(stations x depth) at most, in a handful of passes over the cars (one over every
station, one over the cars that want energy in queue order, the rest over the admitted ones);
the fill is O(classes x depth) plus, per node and phase that actually fills, O(its classes x
27) (the level of a resource comes from a histogram of its classes' minimums and maximums); no
per-ampere iteration. The hot loops are written for CPython: columns of tuples walked with
zip(), shared ints and tuples looked up instead of computed, C-level filter()/map() where a
Python loop would cost a frame per item.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import operator
from collections.abc import Sequence
from itertools import count

from .fill import HI_DEMAND, HI_INSTALLER, HI_SHED, HI_STATION, MASK, FPInfo, water_fill
from .model import (
    DEFAULT_SETTINGS,
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
    offline_footprint,
)
from .topology import Topology

#: ``_new(Allocation)`` and setting its six fields makes the same object as ``Allocation(...)``
#: (a plain slotted dataclass: no ``__post_init__``, every field set) at about half the cost:
#: CPython 3.11 runs the dataclass ``__init__`` as a second Python call per object, and there
#: is one object per station. The hot loops of ``allocate()`` use it.
_new = object.__new__
_ALLOCATION_FIELDS = ("station_id", "current", "phases", "decision", "reason", "phase_switch")
assert tuple(f.name for f in dataclasses.fields(Allocation)) == _ALLOCATION_FIELDS, (
    "Allocation changed: update the allocations made with _new in allocate()"
)

_NO_CAR = CarState.NO_CAR
_SHED_NONE = ShedMode.NONE
_SHED_ZERO = ShedMode.TO_ZERO
_SHED_MIN = ShedMode.TO_MIN
_IDLE = Decision.IDLE
_SHED = Decision.SHED
_OFFLINE = Decision.OFFLINE
_QUEUED = Decision.QUEUED
_RESERVED = Decision.RESERVED
_CHARGE = Decision.CHARGE
_FINISHED = CarState.FINISHED
_SUSPENDED = CarState.SUSPENDED_EV
_CHARGING = CarState.CHARGING


def phase_options(station: Station, settings: Settings) -> tuple[int | None, bool]:
    """How the engine may set the phases of ``station``'s car.

    Returns ``(fixed_mode, returning)``: ``fixed_mode`` is 1 or 3 when the phases may not be
    chosen (station cannot switch, car draws one phase anyway, or the car used up its switches
    this session), ``None`` when the engine may choose; ``returning`` says the car charges on
    1 phase now, so going to 3 phases needs the hysteresis headroom.
    """
    sp = station.setpoint
    active = sp is not None and sp.current > 0
    drawn = station.drawn_phases
    if drawn is not None and len(drawn) == 1:
        # It charges on one phase whatever we offer: keep the offer, a switch gains nothing.
        return (sp.phases if sp is not None else 3), False
    if not station.can_switch_phases:
        return 3, False
    if active and station.phase_switches >= settings.max_phase_switches:
        assert sp is not None
        return sp.phases, False
    return None, active and sp is not None and sp.phases == 1


def minimal_phases(station: Station, settings: Settings) -> int:
    """Phases of the car's minimal footprint: 1 if the engine may switch it, else fixed."""
    fixed, _ = phase_options(station, settings)
    return 1 if fixed is None else fixed


def effective_max(station: Station, shed: ShedMode, settings: Settings) -> tuple[int, int]:
    """The most the engine may offer ``station`` now, and why (one of the ``HI_*`` codes).

    The installer's maximum is never exceeded; shedding to the minimum caps at the minimum; a
    charging car drawing well below its offer is offered its draw plus headroom (the offer is
    what is counted, so lowering it is what frees the room for others).
    """
    hi = station.max_current
    kind = HI_STATION
    if station.installer_max < hi:
        hi = station.installer_max
        kind = HI_INSTALLER
    if shed is ShedMode.TO_MIN:
        return min(hi, station.min_current), HI_SHED
    headroom = settings.demand_headroom
    sp = station.setpoint
    meas = station.measured
    if (
        headroom is not None
        and station.state is _CHARGING
        and sp is not None
        and sp.current > 0
        and meas is not None
    ):
        drawn = station.drawn_phases
        if sp.phases == 1:
            draw = meas[0]
        elif drawn is None:
            draw = max(meas)
        else:
            draw = max(meas[p] for p in drawn)
        if draw <= sp.current - headroom:
            capped = max(station.min_current, math.ceil(draw) + headroom)
            if capped < hi:
                return capped, HI_DEMAND
    return hi, kind


def allocate(
    nodes: Sequence[Node],
    stations: Sequence[Station],
    now: float,
    settings: Settings = DEFAULT_SETTINGS,
    topology: Topology | None = None,
) -> Plan:
    """Decide every station's setpoint so that no node and grid phase exceeds its budget.

    ``topology`` may be passed to skip compiling ``nodes`` (it must have been built from the
    same nodes). Raises ``ValueError`` on an inconsistent tree, unknown station parents or
    duplicate station ids. The allocations come in the order of ``stations``.

    The cyclic garbage collector is paused during the call (and resumed after it, if it was
    running): the call creates tens of thousands of objects that all live until it returns
    and form no cycles, so collections during it would only re-walk them (about 6 ms of 50 at
    10,000 stations). The pause is process-wide but lasts one call.
    """
    if not gc.isenabled():
        return _allocate(nodes, stations, now, settings, topology)
    gc.disable()
    try:
        return _allocate(nodes, stations, now, settings, topology)
    finally:
        gc.enable()


def _allocate(
    nodes: Sequence[Node],
    stations: Sequence[Station],
    now: float,
    settings: Settings,
    topology: Topology | None,
) -> Plan:
    """:func:`allocate` itself.

    The per-station loop inlines :func:`phase_options` and :func:`effective_max` (same rules;
    the property tests check the results against those functions) because at 10,000 stations
    every function call counts.
    """
    topo = topology if topology is not None else Topology.build(nodes)
    nodes = topo.nodes
    n_nodes = len(nodes)
    index = topo.index
    path = topo.path
    order = topo.order
    parent = topo.parent
    R = 3 * n_nodes

    # Shedding is inherited: the strongest signal on the way to the root wins.
    shed_mode: list[ShedMode] = [_SHED_NONE] * n_nodes
    shed_src: list[str] = [""] * n_nodes
    for n in order:
        p = parent[n]
        mode, src = (_SHED_NONE, "") if p < 0 else (shed_mode[p], shed_src[p])
        own = nodes[n].shed
        if own is _SHED_ZERO or (own is _SHED_MIN and mode is _SHED_NONE):
            mode, src = own, nodes[n].shed_source or nodes[n].label
        shed_mode[n] = mode
        shed_src[n] = src
    need_ev = any(
        n.measured is not None
        and n.ev_measured is None
        and n.measured_at is not None
        and now - n.measured_at <= n.stale_after
        for n in nodes
    )
    ev_acc = [0.0] * R if need_ev else None
    total = [0] * R  # candidates at their minimal footprint, per resource

    # -- classify stations (one pass) ---------------------------------------------------------
    max_sw = settings.max_phase_switches
    headroom = settings.demand_headroom
    n_st = len(stations)
    # Allocations by station position; the dict (in input order) is built once at the end.
    out: list[Allocation | None] = [None] * n_st
    offline: list[tuple[int, int, Station]] = []
    susp: list[tuple[int, float, int, Station, int, int]] = []
    # One record per car that wants energy, unpacked into columns once sorted (see _Rec).
    recs: list[_Rec] = []
    append = recs.append
    ids: list[str] = []
    ids_append = ids.append
    fp_cache = _FP
    fp_all = _FP_ALL
    rotated = topo.rotated
    keys = topo.keys
    own = topo.own
    new = _new
    # Module constants as locals: the loop below runs once per station.
    no_car, finished, suspended, charging = _NO_CAR, _FINISHED, _SUSPENDED, _CHARGING
    shed_zero, shed_min = _SHED_ZERO, _SHED_MIN
    for i, st in enumerate(stations):
        ids_append(st.id)
        try:
            leaf = index[st.parent]
        except KeyError:
            raise ValueError(f"station {st.id!r}: unknown parent node {st.parent!r}") from None
        rot = st.rotation._value_
        res3 = rotated[leaf][rot[0]]  # the leaf's resources of station phases L1, L2, L3
        meas = st.measured
        if meas is not None and ev_acc is not None:
            m0, m1, m2 = meas
            r0, r1, r2 = res3
            ev_acc[r0] += m0
            ev_acc[r1] += m1
            ev_acc[r2] += m2
        if not st.online:
            offline.append((i, leaf, st))
            continue
        state = st.state
        sp = st.setpoint
        if state is no_car or state is finished:
            a = new(Allocation)  # Allocation(...) without the __init__ call: see _new
            a.station_id = st.id
            a.current = 0
            a.phases = sp.phases if sp is not None else 3
            a.decision = _IDLE
            a.reason = "no car" if state is no_car else "finished: the car needs no energy"
            a.phase_switch = False
            out[i] = a
            continue
        shed = shed_mode[leaf]
        if shed is shed_zero:
            out[i] = Allocation(
                st.id, 0, sp.phases if sp is not None else 3, _SHED, f"shed by {shed_src[leaf]}"
            )
            continue
        lo = st.min_current
        # effective_max(), inlined
        hi = st.max_current
        kind = HI_STATION
        if st.installer_max < hi:
            hi = st.installer_max
            kind = HI_INSTALLER
        drawn = st.drawn_phases
        active = sp is not None and sp.current > 0
        if shed is shed_min:
            hi = min(hi, lo)
            kind = HI_SHED
        elif active and state is charging and meas is not None and headroom is not None:
            assert sp is not None
            draw = meas[0]  # max() over the phases it draws on, spelt out
            if sp.phases == 3:
                if drawn is None:
                    if meas[1] > draw:
                        draw = meas[1]
                    if meas[2] > draw:
                        draw = meas[2]
                elif len(drawn) > 1:
                    draw = max(meas[p] for p in drawn)
            if draw <= sp.current - headroom:
                capped = max(lo, math.ceil(draw) + headroom)
                if capped < hi:
                    hi = capped
                    kind = HI_DEMAND
        if hi < lo:
            out[i] = Allocation(
                st.id,
                0,
                sp.phases if sp is not None else 3,
                _IDLE,
                f"cannot charge: minimum {lo} A is above the maximum {hi} A",
            )
            continue
        arrival = st.arrival
        if arrival is None:
            arrival = now
        # phase_options(), inlined
        if drawn is not None and len(drawn) == 1:
            fixed = sp.phases if sp is not None else 3
            ret = False
        elif not st.can_switch_phases:
            fixed = 3
            ret = False
        elif active and st.phase_switches >= max_sw:
            assert sp is not None
            fixed = sp.phases
            ret = False
        else:
            fixed = 0
            ret = active and sp.phases == 1  # type: ignore[union-attr]
        if drawn is None:
            # The three rotations differ in their first grid phase: a list index, no hashing.
            fpi = fp_all[rot[0]]
        else:
            fpi = fp_cache.get((rot, drawn))
            if fpi is None:
                fpi = fp_cache[(rot, drawn)] = _footprints(rot, drawn)
        # Load of every candidate at its minimal footprint (for step 2), summed on the way.
        if fixed == 3:
            key = keys[leaf][fpi[2]]
            if state is suspended:
                susp.append((-st.priority, arrival, i, st, key, 3))
                continue
            append((-st.priority, arrival, i, leaf, lo, hi, kind, fpi, fixed, ret, key, sp))
            if drawn is None:
                r0, r1, r2 = res3
                total[r0] += lo
                total[r1] += lo
                total[r2] += lo
            else:
                for r in own[key]:
                    total[r] += lo
        else:
            # On 1 phase: the grid phase of the station's L1.
            key = keys[leaf][fpi[3]]
            if state is suspended:
                susp.append((-st.priority, arrival, i, st, key, 1))
                continue
            append((-st.priority, arrival, i, leaf, lo, hi, kind, fpi, fixed, ret, key, sp))
            total[res3[0]] += lo

    # -- 1. budgets ---------------------------------------------------------------------------
    if ev_acc is not None:
        topo.sum_up_in_order(ev_acc)
    budget: list[tuple[float, float, float]] = []
    cap = [0] * R  # free whole ampere per resource; shrinks as things are fixed
    zero = (0.0, 0.0, 0.0)
    floor = math.floor
    for n, node in enumerate(nodes):
        r = 3 * n
        if node.measured is None and not node.has_meter:
            b = node.limit  # no meter: Node.budget() is the limit
        else:
            b = node.budget(now, (ev_acc[r], ev_acc[r + 1], ev_acc[r + 2]) if ev_acc else zero)
        budget.append(b)
        cap[r] = floor(b[0])
        cap[r + 1] = floor(b[1])
        cap[r + 2] = floor(b[2])
    warnings: list[str] = []
    warning_nodes: list[str] = []
    binding = [False] * R
    offline_fixed = [0] * R
    for i, leaf, st in offline:
        fp = offline_footprint(st, now)
        f0, f1, f2 = math.ceil(fp[0]), math.ceil(fp[1]), math.ceil(fp[2])
        for n in path[leaf]:
            r = 3 * n
            offline_fixed[r] += f0
            offline_fixed[r + 1] += f1
            offline_fixed[r + 2] += f2
        cur = max(f0, f1, f2)
        out[i] = Allocation(
            st.id,
            cur,
            3,
            _OFFLINE,
            f"offline: counted at {cur} A on all phases"
            + (" until its lease ends" if cur > st.fail_safe_current else " (fail-safe)"),
        )
    if offline:
        for r in range(R):
            fixed_r = offline_fixed[r]
            if fixed_r:
                if fixed_r > cap[r]:
                    n, g = divmod(r, 3)
                    warnings.append(
                        f"{nodes[n].label} {PHASE_NAMES[g]}: offline stations may draw"
                        f" {fixed_r} A, more than the budget {budget[n][g]:.1f} A"
                    )
                    warning_nodes.append(nodes[n].id)
                    binding[r] = True
                cap[r] -= fixed_r
    for r in range(R):
        if cap[r] < 0 and not binding[r]:
            n, g = divmod(r, 3)
            warnings.append(
                f"{nodes[n].label} {PHASE_NAMES[g]}: no room for cars (budget {budget[n][g]:.1f} A)"
            )
            warning_nodes.append(nodes[n].id)
            binding[r] = True

    # -- per-car arrays, in queue order (priority high first, then arrival, then input) --------
    # Two stable sorts on a single key each instead of one sort on tuples: equal to ordering by
    # (-priority, arrival, input position), as recs are in input order, and much faster.
    recs.sort(key=_ARRIVAL)
    if any(map(_NEG_PRIO, recs)):
        recs.sort(key=_NEG_PRIO)

    # -- 2. admission at the minimal footprint ------------------------------------------------
    # The cars are read from their records here; columns are made for the admitted ones only.
    topo.sum_up(total)
    violated = [t > c for t, c in zip(total, cap, strict=True)]
    n_queued = 0
    admitted_min: list[int] | None = None
    if True in violated:
        room = list(cap)  # what is left per resource for the cars admitted so far
        # Per (parent node, footprint): the overfull resources on the way up, leaf first (none:
        # the car fits whoever else is admitted).
        vres_cache: list[tuple[int, ...] | None] = [None] * (8 * n_nodes)
        queued_text: list[str | None] = [None] * R
        resources_at = topo.resources_at
        admitted: list[_Rec] = []
        # For step 3: the admitted cars at their minimal footprint, per resource of their node.
        admitted_min = [0] * R if susp else None
        for rec in recs:
            key = rec[10]
            need = rec[4]
            vres = vres_cache[key]
            if vres is None:
                # filter() with a C-level predicate: no Python frame per resource.
                vres = vres_cache[key] = tuple(filter(violated.__getitem__, resources_at(key)))
            for r in vres:
                if room[r] < need:
                    break
            else:
                for r in vres:
                    room[r] -= need
                admitted.append(rec)
                if admitted_min is not None:
                    for r in own[key]:
                        admitted_min[r] += need
                continue
            # Queued at r, the first full resource on its way up.
            binding[r] = True
            text = queued_text[r]
            if text is None:
                n, g = divmod(r, 3)
                text = queued_text[r] = f"queued: {nodes[n].label} full on {PHASE_NAMES[g]}"
            sp = rec[11]
            i = rec[2]
            a = new(Allocation)  # Allocation(...) without the __init__ call: see _new
            a.station_id = ids[i]
            a.current = 0
            a.phases = sp.phases if sp is not None else 3
            a.decision = _QUEUED
            a.reason = text
            a.phase_switch = False
            out[i] = a
            n_queued += 1
    else:
        admitted = recs
    del recs, append  # freed while still in the cache (the bound append holds the list)

    # Per admitted car (index k, in queue order), one column per field of its record.
    prio_neg: tuple[int, ...] = ()
    cand: tuple[int, ...] = ()
    leaves: tuple[int, ...] = ()
    lo_l: tuple[int, ...] = ()
    hi_l: tuple[int, ...] = ()
    hikind: tuple[int, ...] = ()
    fpis: tuple[FPInfo, ...] = ()
    fixed_mode: tuple[int, ...] = ()
    returning: tuple[bool, ...] = ()
    min_key: tuple[int, ...] = ()
    sps: tuple[Setpoint | None, ...] = ()
    if admitted:
        (
            prio_neg,
            _arrival,
            cand,
            leaves,
            lo_l,
            hi_l,
            hikind,
            fpis,
            fixed_mode,
            returning,
            min_key,
            sps,
        ) = zip(*admitted, strict=True)
    del admitted

    # -- 3. reservations for cars that suspended themselves -----------------------------------
    reserved = [0] * R
    if susp:
        susp.sort(key=_SUSP_ORDER)
        # What the admitted cars take at their minimal footprint.
        if n_queued:
            assert admitted_min is not None
            topo.sum_up(admitted_min)
            total = admitted_min
        res_memo = topo.res_memo
        for _p, _a, i, st, key, ph in susp:
            need = st.min_current
            res = res_memo.get(key) or topo.resources_at(key)
            for r in res:
                if total[r] + need > cap[r]:
                    out[i] = _off(
                        st, _QUEUED, "suspended by the car: no room to reserve its minimum"
                    )
                    break
            else:
                for r in res:
                    cap[r] -= need
                    reserved[r] += need
                out[i] = Allocation(
                    st.id,
                    need,
                    ph,
                    _RESERVED,
                    f"suspended by the car: {need} A reserved so that it can resume",
                    _switched(st, ph),
                )

    # -- 4. phase mode, bottom-up -------------------------------------------------------------
    mode = [fm or 3 for fm in fixed_mode]
    if 0 in fixed_mode:
        _choose_modes(
            topo,
            cap,
            leaves,
            lo_l,
            mode,
            fixed_mode,
            returning,
            fpis,
            min_key,
            settings.phase_switch_hysteresis,
        )

    # -- 5. water-filling per priority tier ---------------------------------------------------
    load, values, why = water_fill(
        topo,
        cap,
        leaves,
        lo_l,
        hi_l,
        prio_neg,
        mode,
        fpis,
        min_key,
        hikind,
        shed_src,
        binding,
    )

    # -- outputs ------------------------------------------------------------------------------
    # Reason texts are shared, not rebuilt per car: the 1-phase ones per grid phase.
    prefixed: tuple[dict[str, str], ...] = ({}, {}, {})
    for i, sp, ph, text, value, fixed, fpi in zip(
        cand, sps, mode, why, values, fixed_mode, fpis, strict=True
    ):
        if ph == 1 and not fixed:
            g = fpi[1][0]
            pt = prefixed[g].get(text)
            if pt is None:
                pt = prefixed[g][text] = f"1-phase on {PHASE_NAMES[g]}, {text}"
            text = pt
        a = new(Allocation)  # Allocation(...) without the __init__ call: see _new
        a.station_id = ids[i]
        a.current = value
        a.phases = ph
        a.decision = _CHARGE
        a.reason = text
        a.phase_switch = sp is not None and sp.current > 0 and sp.phases != ph
        out[i] = a

    out_nodes: dict[str, NodeLoad] = {}
    for n, node in enumerate(nodes):
        r = 3 * n
        out_nodes[node.id] = NodeLoad(
            node.id,
            budget[n],
            (
                load[r] + reserved[r] + offline_fixed[r],
                load[r + 1] + reserved[r + 1] + offline_fixed[r + 1],
                load[r + 2] + reserved[r + 2] + offline_fixed[r + 2],
            ),
            (binding[r], binding[r + 1], binding[r + 2]),
        )
    allocations = dict(zip(ids, out, strict=True))
    if len(allocations) != n_st:
        raise ValueError("duplicate station ids")
    return Plan(allocations, out_nodes, warnings, warning_nodes)  # type: ignore[arg-type]


def _footprints(rot: tuple[int, int, int], drawn: frozenset[int] | None) -> FPInfo:
    """Grid phases of a car on 3 phases (sorted) and on 1 phase, and their bit masks."""
    fp3 = tuple(sorted(rot if drawn is None else [rot[p] for p in drawn]))
    fp1 = rot[:1]
    return fp3, fp1, MASK[fp3], MASK[fp1]


# Footprints by (rotation, drawn phases): a handful of combinations, computed once.
_FP: dict[tuple[tuple[int, int, int], frozenset[int] | None], FPInfo] = {}
#: The same for cars whose drawn phases are unknown, by the rotation's first grid phase.
_FP_ALL = [_footprints(r.value, None) for r in sorted(PhaseRotation, key=lambda r: r.value[0])]

#: A car that wants energy, as classified: (-priority, arrival, station position, parent node,
#: min, max, why the max (HI_*), footprints, fixed phases (0: the engine chooses), returning to
#: 3 phases, ``8 * parent node + mask`` of its minimal footprint (3 phases if fixed there,
#: else 1), current setpoint).
_Rec = tuple[int, float, int, int, int, int, int, FPInfo, int, bool, int, Setpoint | None]
_ARRIVAL = operator.itemgetter(1)
_NEG_PRIO = operator.itemgetter(0)
#: Suspended cars in queue order: (-priority, arrival, station position).
_SUSP_ORDER = operator.itemgetter(0, 1, 2)


def _off(st: Station, decision: Decision, reason: str) -> Allocation:
    """A 0 A allocation; the phases stay as they are, since switching at 0 A gains nothing."""
    ph = st.setpoint.phases if st.setpoint is not None else 3
    return Allocation(st.id, 0, ph, decision, reason)


def _switched(st: Station, phases: int) -> bool:
    sp = st.setpoint
    return sp is not None and sp.current > 0 and sp.phases != phases


def _choose_modes(
    topo: Topology,
    cap: list[int],
    leaves: Sequence[int],
    lo: Sequence[int],
    mode: list[int],
    fixed_mode: Sequence[int],
    returning: Sequence[bool],
    fpis: Sequence[FPInfo],
    min_key: Sequence[int],
    hyst: int,
) -> None:
    """Step 4: switch cars to 1 phase where their 3-phase minimums do not fit (in place).

    Nodes are visited children first. A node fits on 3 phases if every switchable car below it
    has its minimum on 3 phases, plus the hysteresis headroom for cars that are on 1 phase now;
    if not, every switchable car below it goes to 1 phase. Loads only ever decrease, so nodes
    already visited stay fine, and at worst everyone ends at the admitted minimal footprint.
    """
    n_nodes = len(topo.nodes)
    R = 3 * n_nodes
    # Per node, its cars that the engine may switch, and what they add to the node's own
    # resources on 3 phases and on 1 phase. A node's switchable cars are all on 3 phases until
    # a subtree holding the node switches, and then all on 1 phase: they switch together, so
    # the node's sums are swapped at once instead of car by car.
    switchable: list[list[int] | None] = [None] * n_nodes
    sw3 = [0] * R
    sw1 = [0] * R
    direct = [0] * R  # per node's own resources: its cars' minimums in their current mode
    # What cars on all three phases add to each of them, per node (spread out below).
    sw3_all = [0] * n_nodes
    direct_all = [0] * n_nodes
    keys = topo.keys
    own = topo.own
    for k, m, low, ret, fixed, key, leaf, fpi in zip(
        count(), mode, lo, returning, fixed_mode, min_key, leaves, fpis
    ):
        if m == 1:
            direct[own[key][0]] += low  # fixed on 1 phase: its minimal footprint
            continue
        mask3 = fpi[2]
        # Returning to 3 phases must fit with headroom, or the next wobble switches back.
        a = low + hyst if ret else low
        if fixed:
            if mask3 == 7:
                direct_all[leaf] += a
            else:
                for r in own[keys[leaf][mask3]]:
                    direct[r] += a
            continue
        if mask3 == 7:
            sw3_all[leaf] += a
        else:
            for r in own[keys[leaf][mask3]]:
                sw3[r] += a
        sw1[own[key][0]] += low  # its minimal footprint: 1 phase
        cars = switchable[leaf]
        if cars is None:
            switchable[leaf] = [k]
        else:
            cars.append(k)
    for n in range(n_nodes):
        a = direct_all[n]
        if a:
            r = 3 * n
            direct[r] += a
            direct[r + 1] += a
            direct[r + 2] += a
        a = sw3_all[n]
        if a:
            r = 3 * n
            sw3[r] += a
            sw3[r + 1] += a
            sw3[r + 2] += a
    direct = list(map(operator.add, direct, sw3))
    agg = list(direct)
    topo.sum_up(agg)
    if all(map(operator.le, agg, cap)):
        return

    children = topo.children
    parent = topo.parent
    # A node's aggregate is its own cars' plus its children's. It changes only when cars in
    # its subtree switch; then what they change is added to the node's aggregate at once, and
    # its ancestors are marked to be rebuilt when the walk (children first) reaches them. (The
    # aggregates inside a switched subtree go stale: they are never read again, as their
    # parents were visited already and the subtree is all on 1 phase from then on.)
    dirty = [False] * n_nodes
    for n in reversed(topo.order):
        r = 3 * n
        if dirty[n]:
            a0, a1, a2 = direct[r], direct[r + 1], direct[r + 2]
            for c in children[n]:
                q = 3 * c
                a0 += agg[q]
                a1 += agg[q + 1]
                a2 += agg[q + 2]
            agg[r], agg[r + 1], agg[r + 2] = a0, a1, a2
        else:
            a0, a1, a2 = agg[r], agg[r + 1], agg[r + 2]
        if a0 <= cap[r] and a1 <= cap[r + 1] and a2 <= cap[r + 2]:
            continue
        # The seed's group rule: the whole node goes to 1 phase, not just some of its cars
        # (a car left on 3 phases among 1-phase ones would get three times the power).
        switched = False
        for m in topo.subtree(n):
            cars = switchable[m]
            if cars is None:
                continue  # no switchable cars, or switched already
            switchable[m] = None
            switched = True
            q = 3 * m
            d0 = sw1[q] - sw3[q]
            d1 = sw1[q + 1] - sw3[q + 1]
            d2 = sw1[q + 2] - sw3[q + 2]
            direct[q] += d0
            direct[q + 1] += d1
            direct[q + 2] += d2
            a0 += d0
            a1 += d1
            a2 += d2
            for k in cars:
                mode[k] = 1
        if not switched:
            continue
        agg[r], agg[r + 1], agg[r + 2] = a0, a1, a2
        p = parent[n]
        while p >= 0 and not dirty[p]:
            dirty[p] = True
            p = parent[p]
