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

Costs: O(stations x depth) to build the classes, then O(classes x depth x 27) for the fill
(the level of a resource comes from histograms of its classes' minimums and maximums); no
per-ampere iteration.
"""

from __future__ import annotations

import gc
import math
import operator
from collections.abc import Sequence

from .fill import HI_DEMAND, HI_INSTALLER, HI_SHED, HI_STATION, MASK, water_fill
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
    susp: list[tuple[int, float, int, Station, int]] = []
    # One record per car that wants energy, unpacked into columns once sorted (see _Rec).
    recs: list[_Rec] = []
    fp_cache = _FP
    for i, st in enumerate(stations):
        try:
            leaf = index[st.parent]
        except KeyError:
            raise ValueError(f"station {st.id!r}: unknown parent node {st.parent!r}") from None
        rot = st.rotation._value_
        meas = st.measured
        if ev_acc is not None and meas is not None:
            b = 3 * leaf
            ev_acc[b + rot[0]] += meas[0]
            ev_acc[b + rot[1]] += meas[1]
            ev_acc[b + rot[2]] += meas[2]
        if not st.online:
            offline.append((i, leaf, st))
            continue
        state = st.state
        sp = st.setpoint
        if state is _NO_CAR or state is _FINISHED:
            out[i] = Allocation(
                st.id,
                0,
                sp.phases if sp is not None else 3,
                _IDLE,
                "no car" if state is _NO_CAR else "finished: the car needs no energy",
            )
            continue
        shed = shed_mode[leaf]
        if shed is _SHED_ZERO:
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
        if shed is _SHED_MIN:
            hi = min(hi, lo)
            kind = HI_SHED
        elif headroom is not None and active and state is _CHARGING and meas is not None:
            assert sp is not None
            if sp.phases == 1:
                draw = meas[0]
            elif drawn is None:
                draw = max(meas)
            else:
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
        arrival = now if st.arrival is None else st.arrival
        if state is _SUSPENDED:
            susp.append((-st.priority, arrival, i, st, leaf))
            continue
        # phase_options(), inlined
        if drawn is not None and len(drawn) == 1:
            fixed = sp.phases if sp is not None else 3
            ret = False
        elif not st.can_switch_phases:
            fixed, ret = 3, False
        elif active and st.phase_switches >= max_sw:
            assert sp is not None
            fixed, ret = sp.phases, False
        else:
            fixed, ret = 0, active and sp is not None and sp.phases == 1
        if drawn is None:
            # The three rotations differ in their first grid phase: a list index, no hashing.
            fp3, fp1, mask3, mask1 = _FP_ALL[rot[0]]
        else:
            fpi = fp_cache.get((rot, drawn))
            if fpi is None:
                fpi = fp_cache[(rot, drawn)] = _footprints(rot, drawn)
            fp3, fp1, mask3, mask1 = fpi
        if fixed == 3:
            recs.append(
                (-st.priority, arrival, i, leaf, lo, hi, kind, fp3, fp1, fixed, ret, fp3, mask3, sp)
            )
            mfp = fp3
        else:
            recs.append(
                (-st.priority, arrival, i, leaf, lo, hi, kind, fp3, fp1, fixed, ret, fp1, mask1, sp)
            )
            mfp = fp1
        # Load of every candidate at its minimal footprint (for step 2), summed on the way.
        b = 3 * leaf
        for g in mfp:
            total[b + g] += lo
    ids = [st.id for st in stations]
    if len(set(ids)) != n_st:
        raise ValueError("duplicate station ids")

    # -- 1. budgets ---------------------------------------------------------------------------
    if ev_acc is not None:
        for n in reversed(order):
            p = parent[n]
            if p >= 0:
                r, q = 3 * n, 3 * p
                ev_acc[q] += ev_acc[r]
                ev_acc[q + 1] += ev_acc[r + 1]
                ev_acc[q + 2] += ev_acc[r + 2]
    budget: list[tuple[float, float, float]] = []
    cap = [0] * R  # free whole ampere per resource; shrinks as things are fixed
    zero = (0.0, 0.0, 0.0)
    for n, node in enumerate(nodes):
        r = 3 * n
        b = node.budget(now, (ev_acc[r], ev_acc[r + 1], ev_acc[r + 2]) if ev_acc else zero)
        budget.append(b)
        cap[r] = math.floor(b[0])
        cap[r + 1] = math.floor(b[1])
        cap[r + 2] = math.floor(b[2])
    warnings: list[str] = []
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
                    binding[r] = True
                cap[r] -= fixed_r
    for r in range(R):
        if cap[r] < 0 and not binding[r]:
            n, g = divmod(r, 3)
            warnings.append(
                f"{nodes[n].label} {PHASE_NAMES[g]}: no room for cars (budget {budget[n][g]:.1f} A)"
            )
            binding[r] = True

    # -- per-car arrays, in queue order (priority high first, then arrival, then input) --------
    # Two stable sorts on a single key each instead of one sort on tuples: equal to ordering by
    # (-priority, arrival, input position), as recs are in input order, and much faster.
    recs.sort(key=_ARRIVAL)
    if any(map(_NEG_PRIO, recs)):
        recs.sort(key=_NEG_PRIO)
    n_c = len(recs)
    if n_c:
        cols = list(zip(*recs, strict=True))
        prio_neg: tuple[int, ...] = cols[0]
        cand: tuple[int, ...] = cols[2]
        leaves: tuple[int, ...] = cols[3]
        lo_l: tuple[int, ...] = cols[4]
        hi_l: tuple[int, ...] = cols[5]
        hikind: tuple[int, ...] = cols[6]
        fp3s: tuple[tuple[int, ...], ...] = cols[7]
        fp1s: tuple[tuple[int, ...], ...] = cols[8]
        fixed_mode: tuple[int, ...] = cols[9]
        returning: tuple[bool, ...] = cols[10]
        min_fp: tuple[tuple[int, ...], ...] = cols[11]
        min_mask: tuple[int, ...] = cols[12]
        sps: tuple[Setpoint | None, ...] = cols[13]
    else:
        prio_neg = cand = leaves = lo_l = hi_l = fixed_mode = min_mask = sps = ()
        hikind = ()
        fp3s = fp1s = min_fp = ()
        returning = ()

    # -- 2. admission at the minimal footprint ------------------------------------------------
    for n in reversed(order):
        p = parent[n]
        if p >= 0:
            r, q = 3 * n, 3 * p
            total[q] += total[r]
            total[q + 1] += total[r + 1]
            total[q + 2] += total[r + 2]
    violated = [total[r] > cap[r] for r in range(R)]
    admitted = [True] * n_c
    queued_at: dict[int, int] = {}
    if True in violated:
        vmask = [0] * n_nodes
        for r in range(R):
            if violated[r]:
                vmask[r // 3] |= 1 << (r % 3)
        pmask = [0] * n_nodes
        for n in order:
            p = parent[n]
            pmask[n] = vmask[n] | (pmask[p] if p >= 0 else 0)
        room = list(cap)  # what is left per resource for the cars admitted so far
        # Per (parent node, footprint): the overfull resources on the way up, leaf first.
        vres_cache: list[tuple[int, ...] | None] = [None] * (8 * n_nodes)
        for k, leaf, fmask, need in zip(range(n_c), leaves, min_mask, lo_l, strict=True):
            if not pmask[leaf] & fmask:
                continue  # touches no overfull resource: fits whoever else is admitted
            ck = 8 * leaf + fmask
            vres = vres_cache[ck]
            if vres is None:
                # filter() with a C-level predicate: no Python frame per resource.
                vres = vres_cache[ck] = tuple(
                    filter(violated.__getitem__, topo.resources(leaf, min_fp[k]))
                )
            for r in vres:
                if room[r] < need:
                    admitted[k] = False
                    queued_at[k] = r
                    binding[r] = True
                    break
            else:
                for r in vres:
                    room[r] -= need
        adm = [k for k in range(n_c) if admitted[k]]
    else:
        adm = list(range(n_c))

    # -- 3. reservations for cars that suspended themselves -----------------------------------
    reserved = [0] * R
    if susp:
        susp.sort(key=lambda x: x[:3])
        total = _aggregate(topo, leaves, min_fp, lo_l, adm) if queued_at else total
        for _p, _a, i, st, leaf in susp:
            ph = minimal_phases(st, settings)
            fps = _FP.get((st.rotation._value_, st.drawn_phases))
            if fps is None:
                fps = _footprints(st.rotation._value_, st.drawn_phases)
            fp = fps[1] if ph == 1 else fps[0]
            need = st.min_current
            res = topo.resources(leaf, fp)
            if all(total[r] + need <= cap[r] for r in res):
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
            else:
                out[i] = _off(st, _QUEUED, "suspended by the car: no room to reserve its minimum")

    # -- 4. phase mode, bottom-up -------------------------------------------------------------
    mode = [fm or 3 for fm in fixed_mode]
    if 0 in fixed_mode:
        _choose_modes(
            topo,
            cap,
            adm,
            leaves,
            lo_l,
            mode,
            fixed_mode,
            returning,
            fp1s,
            fp3s,
            settings.phase_switch_hysteresis,
        )

    # -- 5. water-filling per priority tier ---------------------------------------------------
    # One pass over the admitted cars: their footprints, their load at the minimum (summed up
    # the tree below) and their classes.
    fps_k: list[tuple[int, ...]] = [()] * n_c  # set for admitted cars only
    load = [0] * R
    values = [0] * n_c
    why: list[str] = [""] * n_c
    class_of: dict[tuple[int, tuple[int, ...], int, int, int], int] = {}
    cls_members: list[list[int]] = []
    cls_key: list[tuple[int, tuple[int, ...], int, int, int]] = []
    for k in adm:
        leaf = leaves[k]
        lo = lo_l[k]
        fp = fps_k[k] = fp1s[k] if mode[k] == 1 else fp3s[k]
        b = 3 * leaf
        for g in fp:
            load[b + g] += lo
        key = (leaf, fp, lo, hi_l[k], -prio_neg[k])
        c = class_of.get(key)
        if c is None:
            class_of[key] = c = len(cls_members)
            cls_members.append([k])
            cls_key.append(key)
        else:
            cls_members[c].append(k)
    _sum_up(topo, load)
    if cls_members:
        water_fill(
            nodes,
            topo.resources,
            cap,
            load,
            cls_key,
            cls_members,
            values,
            why,
            binding,
            hikind,
            shed_src,
        )

    # -- outputs ------------------------------------------------------------------------------
    queued_text: dict[int, str] = {}
    prefixed: dict[tuple[int, str], str] = {}  # reason texts are shared, not rebuilt per car
    for k, (i, sp) in enumerate(zip(cand, sps, strict=True)):
        if not admitted[k]:
            r = queued_at[k]
            text = queued_text.get(r)
            if text is None:
                n, g = divmod(r, 3)
                text = queued_text[r] = f"queued: {nodes[n].label} full on {PHASE_NAMES[g]}"
            out[i] = Allocation(ids[i], 0, sp.phases if sp is not None else 3, _QUEUED, text)
            continue
        ph = mode[k]
        text = why[k]
        if ph == 1 and fixed_mode[k] == 0:
            g = fps_k[k][0]
            pt = prefixed.get((g, text))
            if pt is None:
                pt = prefixed[(g, text)] = f"1-phase on {PHASE_NAMES[g]}, {text}"
            text = pt
        out[i] = Allocation(
            ids[i],
            values[k],
            ph,
            _CHARGE,
            text,
            sp is not None and sp.current > 0 and sp.phases != ph,
        )

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
    return Plan(dict(zip(ids, out, strict=True)), out_nodes, warnings)  # type: ignore[arg-type]


def _footprints(
    rot: tuple[int, int, int], drawn: frozenset[int] | None
) -> tuple[tuple[int, ...], tuple[int, ...], int, int]:
    """Grid phases of a car on 3 phases (sorted) and on 1 phase, and their bit masks."""
    fp3 = tuple(sorted(rot if drawn is None else [rot[p] for p in drawn]))
    fp1 = rot[:1]
    return fp3, fp1, MASK[fp3], MASK[fp1]


# Footprints by (rotation, drawn phases): a handful of combinations, computed once.
_FP: dict[
    tuple[tuple[int, int, int], frozenset[int] | None],
    tuple[tuple[int, ...], tuple[int, ...], int, int],
] = {}
#: The same for cars whose drawn phases are unknown, by the rotation's first grid phase.
_FP_ALL = [_footprints(r.value, None) for r in sorted(PhaseRotation, key=lambda r: r.value[0])]

#: A car that wants energy, as classified: (-priority, arrival, station position, parent node,
#: min, max, why the max (HI_*), 3-phase footprint, 1-phase footprint, fixed phases (0: the
#: engine chooses), returning to 3 phases, minimal footprint, its mask, current setpoint).
_Rec = tuple[
    int,
    float,
    int,
    int,
    int,
    int,
    int,
    tuple[int, ...],
    tuple[int, ...],
    int,
    bool,
    tuple[int, ...],
    int,
    Setpoint | None,
]
_ARRIVAL = operator.itemgetter(1)
_NEG_PRIO = operator.itemgetter(0)


def _off(st: Station, decision: Decision, reason: str) -> Allocation:
    """A 0 A allocation; the phases stay as they are, since switching at 0 A gains nothing."""
    ph = st.setpoint.phases if st.setpoint is not None else 3
    return Allocation(st.id, 0, ph, decision, reason)


def _switched(st: Station, phases: int) -> bool:
    sp = st.setpoint
    return sp is not None and sp.current > 0 and sp.phases != phases


def _aggregate(
    topo: Topology,
    leaves: Sequence[int],
    fps: Sequence[tuple[int, ...]],
    amounts: Sequence[int],
    which: Sequence[int] | range,
) -> list[int]:
    """Per resource, the sum of ``amounts[k]`` on grid phases ``fps[k]`` of the cars ``which``
    at every node from their parent node up to the root."""
    acc = [0] * (3 * len(topo.nodes))
    for k in which:
        base = 3 * leaves[k]
        a = amounts[k]
        for g in fps[k]:
            acc[base + g] += a
    _sum_up(topo, acc)
    return acc


def _sum_up(topo: Topology, acc: list[int]) -> None:
    """Add every node's per-resource amounts to its ancestors' (in place), children first."""
    parent = topo.parent
    for n in reversed(topo.order):
        p = parent[n]
        if p >= 0:
            r, q = 3 * n, 3 * p
            acc[q] += acc[r]
            acc[q + 1] += acc[r + 1]
            acc[q + 2] += acc[r + 2]


def _choose_modes(
    topo: Topology,
    cap: list[int],
    adm: list[int],
    leaves: Sequence[int],
    lo: Sequence[int],
    mode: list[int],
    fixed_mode: Sequence[int],
    returning: Sequence[bool],
    fp1s: Sequence[tuple[int, ...]],
    fp3s: Sequence[tuple[int, ...]],
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
    for k in adm:
        leaf = leaves[k]
        base = 3 * leaf
        if mode[k] == 1:
            direct[base + fp1s[k][0]] += lo[k]
            continue
        # Returning to 3 phases must fit with headroom, or the next wobble switches back.
        a = lo[k] + hyst if returning[k] else lo[k]
        if fixed_mode[k]:
            for g in fp3s[k]:
                direct[base + g] += a
            continue
        for g in fp3s[k]:
            sw3[base + g] += a
        sw1[base + fp1s[k][0]] += lo[k]
        cars = switchable[leaf]
        if cars is None:
            switchable[leaf] = [k]
        else:
            cars.append(k)
    for r in range(R):
        direct[r] += sw3[r]
    agg = list(direct)
    _sum_up(topo, agg)
    if all(agg[r] <= cap[r] for r in range(3 * n_nodes)):
        return

    children = topo.children

    def rebuild(m: int) -> tuple[int, int, int]:
        """Node m's aggregate from its own cars and its children's aggregates."""
        r = 3 * m
        a0, a1, a2 = direct[r], direct[r + 1], direct[r + 2]
        for c in children[m]:
            q = 3 * c
            a0 += agg[q]
            a1 += agg[q + 1]
            a2 += agg[q + 2]
        agg[r], agg[r + 1], agg[r + 2] = a0, a1, a2
        return a0, a1, a2

    def recompute(sub: list[int]) -> None:
        for m in reversed(sub):
            rebuild(m)

    # Children first. A node's aggregate is rebuilt from its own cars and its children's
    # (final) aggregates when it is visited, so switches below are already seen.
    for n in reversed(topo.order):
        r = 3 * n
        a0, a1, a2 = rebuild(n)
        if a0 <= cap[r] and a1 <= cap[r + 1] and a2 <= cap[r + 2]:
            continue
        # The seed's group rule: the whole node goes to 1 phase, not just some of its cars
        # (a car left on 3 phases among 1-phase ones would get three times the power).
        sub = topo.subtree(n)
        for m in sub:
            cars = switchable[m]
            if cars is None:
                continue  # no switchable cars, or switched already
            switchable[m] = None
            for r in range(3 * m, 3 * m + 3):
                direct[r] += sw1[r] - sw3[r]
            for k in cars:
                mode[k] = 1
        recompute(sub)
