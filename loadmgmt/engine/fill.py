"""Step 5 of the allocation: max-min fair water-filling, and the reason texts it writes.

Kept apart from :mod:`.allocate` (which decides who charges and on how many phases) because it
is the one part with its own data structures: classes of cars with identical constraints,
per node-and-phase histograms of the classes' minimums and maximums (one list of their
difference), from which the level at which a node and phase fills is read in at most 27 steps,
and a heap of those levels, seeded with cheap lower bounds so that only the node-phases that
actually come up are ever built.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Sequence
from itertools import chain, compress, count, filterfalse, repeat
from typing import TYPE_CHECKING

from .model import IEC_MIN_CURRENT, MAX_CURRENT, PHASE_NAMES

if TYPE_CHECKING:
    from .topology import Topology

_LEVELS = range(6, MAX_CURRENT)  # the fill level moves from 6 A to 32 A in whole ampere

# Why a car's maximum is what it is, for the reason text.
HI_STATION = 0
HI_INSTALLER = 1
HI_DEMAND = 2
HI_SHED = 3

#: Bit mask of a footprint's grid phases.
MASK: dict[tuple[int, ...], int] = {
    fp: sum(1 << g for g in fp) for fp in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
}
#: The grid phases of a mask (index 0 unused).
MASK_PHASES: tuple[tuple[int, ...], ...] = ((), *sorted(MASK, key=MASK.__getitem__))

#: Subtracted from the lower bounds of the fill levels (below), far above the rounding error
#: of the float bookkeeping, so that a bound is never above the level it stands for.
_BOUND_SLACK = 1e-6


def _level(room: float, h: list[int]) -> float:
    """The level at which a resource with ``room`` above its classes' minimums and histogram
    ``h`` fills (32.0: it never does)."""
    active = 0
    for lv in _LEVELS:
        active += h[lv]
        if active > room:
            # room may be a hair below 0 from float rounding: then it is full at lv.
            return lv + room / active if room > 0.0 else float(lv)
        room -= active
    return float(MAX_CURRENT)


#: A car's footprints: grid phases on 3 phases (sorted) and on 1 phase, and their bit masks.
FPInfo = tuple[tuple[int, ...], tuple[int, ...], int, int]


def water_fill(
    topo: Topology,
    cap: list[int],
    leaves: Sequence[int],
    lo_l: Sequence[int],
    hi_l: Sequence[int],
    prio_neg: Sequence[int],
    mode: Sequence[int],
    fpis: Sequence[FPInfo],
    min_key: Sequence[int],
    hikind: Sequence[int],
    shed_src: Sequence[str],
    binding: list[bool],
) -> tuple[list[int], list[int], list[str]]:
    """Max-min fair water-filling of the admitted cars, one priority tier at a time.

    Car ``k`` (cars in queue order, so priority high first) is below node ``leaves[k]`` on
    ``mode[k]`` phases with minimum ``lo_l[k]``, maximum ``hi_l[k]`` (why: ``hikind[k]``) and
    priority ``-prio_neg[k]``; ``fpis[k]`` are its footprints and ``min_key[k]`` the key
    (``8 * node + mask``) of its minimal one, which is its 1-phase one unless it is fixed on 3
    phases. Returns the load per resource (every car at its final current), and per car its
    current and reason text.

    Cars with identical constraints (parent node, grid phases, min, max, priority) form a
    class, numbered in queue order of its first car. First an exact fill in real numbers: a
    common level rises; the resource that fills first freezes the classes through it at its
    (fractional) level; repeat. Then every class is rounded down to whole ampere and the
    ampere left over are handed out one at a time, lowest car first, then queue order, to cars
    below their maximum whose every resource still has room. Invariant: after each step, every
    resource's load is at most its capacity (integers, so exact).

    The exact fill is lazy: a resource enters the heap of fill levels with a cheap lower bound
    of its level, and its histogram and exact level are built only when that bound reaches the
    top of the heap. Levels only rise as classes freeze, so the resource that fills next is
    still the one with the lowest exact level (then the lowest number); but typically a few
    resources (a house connection) freeze every class before the others' bounds come up, and
    those never cost more than their bound.
    """
    nodes = topo.nodes
    n_nodes = len(nodes)
    R = 3 * n_nodes
    n_c = len(leaves)
    values = list(lo_l)  # every car at its minimum until the fill says more
    why: list[str] = [""] * n_c

    # -- classes, and per tier what its cars could add above their minimums -------------------
    # One pass over the cars, which come tier by tier: their load at the minimum, and per tier
    # the growth up to their maximums and their number, per resource of their own node (summed
    # up the tree below: the same integers as per resource on their way up).
    load = [0] * R
    cls_members: list[list[int]] = []
    c_info: list[tuple[int, int, int]] = []  # per class: key (8 * node + mask), min, max
    keys = topo.keys
    own = topo.own
    # Per tier: its first class, the growth and cars per resource, its classes by key.
    tiers: list[tuple[int, list[int], list[int], dict[int, list[int]]]] = []
    grow: list[int] = []
    n_cars: list[int] = []
    by_key: dict[int, list[int]] = {}
    class_of: dict[tuple[int, int, int], int] = {}  # by (key, min, max), per tier
    tier_pn = None
    for k, pn, lo, hi, m, key, leaf, fpi in zip(
        count(), prio_neg, lo_l, hi_l, mode, min_key, leaves, fpis, strict=False
    ):
        if pn != tier_pn:
            tier_pn = pn
            grow = [0] * R
            n_cars = [0] * R
            by_key = {}
            class_of = {}
            tiers.append((len(cls_members), grow, n_cars, by_key))
        if m == 1:
            # On 1 phase: its minimal footprint (key).
            r = own[key][0]
            load[r] += lo
            grow[r] += hi - lo
            n_cars[r] += 1
        else:
            key = keys[leaf][fpi[2]]
            for r in own[key]:
                load[r] += lo
                grow[r] += hi - lo
                n_cars[r] += 1
        info = (key, lo, hi)
        c = class_of.get(info)
        if c is None:
            c = class_of[info] = len(cls_members)
            cls_members.append([k])
            c_info.append(info)
            cls = by_key.get(key)
            if cls is None:
                by_key[key] = [c]
            else:
                cls.append(c)
        else:
            cls_members[c].append(k)
    topo.sum_up(load)
    n_cls = len(cls_members)
    resources_at = topo.resources_at
    res_memo = topo.res_memo
    n_keys = 8 * n_nodes
    c_n = [len(m) for m in cls_members]
    real = [0.0] * n_cls  # the exact (fractional) level of each class
    frozen = [False] * n_cls
    is_frozen = frozen.__getitem__
    # Reason texts, built once each: by bottleneck resource, and at the maximum by
    # (maximum, why) or, when shed, by (node, maximum).
    limited_text: dict[int, str] = {}
    max_text: dict[int, str] = {}

    def at_max(chi: int, kind: int, leaf: int) -> str:
        tkey = ~(leaf * 64 + chi) if kind == HI_SHED else chi * 4 + kind
        text = max_text.get(tkey)
        if text is None:
            text = max_text[tkey] = at_max_text(chi, kind, shed_src[leaf])
        return text

    for t, (c_first, grow, n_cars, by_key) in enumerate(tiers):
        members = range(c_first, tiers[t + 1][0] if t + 1 < len(tiers) else n_cls)
        topo.sum_up(grow)
        topo.sum_up(n_cars)
        # A resource with room for every class through it at its maximum can never fill:
        # leave it out of the bookkeeping (most group-level phases, in practice).
        may_fill = [g > c - ld for g, c, ld in zip(grow, cap, load, strict=True)]
        keep = may_fill.__getitem__  # filter() with a C-level predicate: no Python frame per call
        # Per key (node and grid phases) of the tier's classes: the resources on their way up,
        # and those of them that may fill.
        tres: list[tuple[int, ...]] = [()] * n_keys
        tres_in_order: list[tuple[int, ...]] = []  # the same, in the order of by_key
        # Each class is rounded down to whole ampere as it freezes (never above the exact
        # fill, so every resource fits); what that adds to the load, per resource of the
        # class's own node, is summed up the tree after the fill.
        added = [0] * R
        left = 0
        for key, cls in by_key.items():
            tr = tres[key] = tuple(filter(keep, res_memo.get(key) or resources_at(key)))
            tres_in_order.append(tr)
            if tr:
                left += len(cls)
                continue
            # Nothing on their way can fill: at their maximum.
            leaf = key >> 3
            for c in cls:
                frozen[c] = True
                _key, clo, chi = c_info[c]
                real[c] = float(chi)
                mem = cls_members[c]
                for k in mem:
                    values[k] = chi
                    why[k] = at_max(chi, hikind[k], leaf)
                if chi > clo:
                    add = len(mem) * (chi - clo)
                    for r in own[key]:
                        added[r] += add

        # The heap starts with a lower bound of every fillable resource's level: its cars'
        # minimums are at least 6 A, so the level is at least 6 + room / cars. (The room is
        # a whole number here; the exact level is never below the bound, and it only rises.)
        lvl = [0.0] * R  # the level each resource is queued at
        heap: list[tuple[float, int]] = []
        for r in compress(range(R), may_fill):
            if n_cars[r]:
                v = IEC_MIN_CURRENT + (cap[r] - load[r]) / n_cars[r] - _BOUND_SLACK
                if v > MAX_CURRENT:
                    v = float(MAX_CURRENT)
                lvl[r] = v
                heap.append((v, r))
        heapq.heapify(heap)
        # Built resources (exact level known) keep, per resource: the histogram of their
        # unfrozen classes (+count at each minimum, -count at each maximum, so that a running
        # sum is the number of cars still growing at a level), the room above the minimums
        # less what frozen classes grew (a float: the exact fill freezes at fractional levels),
        # the number of unfrozen classes and the classes.
        built = [False] * R
        hist: list[list[int]] = [[]] * R
        room0 = [0.0] * R
        nunf = [0] * R
        on_res: list[list[int]] = [[]] * R
        tier_keys = list(by_key)
        # When each class froze: a resource built later replays what the frozen classes grew
        # against its room in the same order as if it had been kept all along.
        fseq: dict[int, int] = {}
        # Per key, those of its fillable resources built, once needed.
        built_tres: list[tuple[int, ...] | None] = [None] * n_keys
        # A built resource whose classes changed is only re-levelled when it reaches the top of
        # the heap: levels only rise, so a stale entry is never too high, and the root (touched
        # by every freeze) is recomputed a handful of times instead of after every freeze.
        stale = [False] * R
        while left:
            lv, r = heapq.heappop(heap)
            if lvl[r] != lv:
                continue
            if not built[r]:
                # The bound reached the top: build the resource and queue its exact level.
                built[r] = True
                built_tres = [None] * n_keys
                # Its classes: those of the keys whose way up holds it, in class order.
                holds = map(operator.contains, tres_in_order, repeat(r))
                on = list(chain.from_iterable(map(by_key.__getitem__, compress(tier_keys, holds))))
                on.sort()
                on_res[r] = on
                room = float(cap[r] - load[r])
                done = list(compress(on, map(is_frozen, on)))
                if done:
                    done.sort(key=fseq.__getitem__)
                    for c in done:
                        room -= c_n[c] * (real[c] - c_info[c][1])
                room0[r] = room
                unf = list(filterfalse(is_frozen, on))
                nunf[r] = len(unf)
                if unf:
                    h = hist[r] = [0] * (MAX_CURRENT + 1)
                    for c in unf:
                        _key, lo, hi = c_info[c]
                        cnt = c_n[c]
                        h[lo] += cnt
                        h[hi] -= cnt
                    v = lvl[r] = _level(room, h)
                    heapq.heappush(heap, (v, r))
                continue
            if not nunf[r]:
                continue
            if stale[r]:
                stale[r] = False
                v = lvl[r] = _level(room0[r], hist[r])
                heapq.heappush(heap, (v, r))
                continue
            if lv >= MAX_CURRENT:
                live = list(filterfalse(is_frozen, members))  # everything fits at its max
                limited = ""  # (every class is at its maximum)
            else:
                live = list(filterfalse(is_frozen, on_res[r]))
                binding[r] = True
                limited = limited_text.get(r, "")
                if not limited:
                    n, g = divmod(r, 3)
                    limited = limited_text[r] = f"limited by {PHASE_NAMES[g]} at {nodes[n].label}"
            left -= len(live)
            if left:
                fseq.update(zip(live, count(len(fseq)), strict=False))
                # r is full now: no class through it is left, so it is never read again.
                built[r] = False
                built_tres = [None] * n_keys
                lvl[r] = math.nan
            lvi = math.floor(lv + 1e-7)  # whole ampere at lv (within every class's min and max)
            for c in live:
                frozen[c] = True
                key, clo, chi = c_info[c]
                if lv < clo:
                    v = float(clo)
                    vi = clo
                elif lv > chi:
                    v = float(chi)
                    vi = chi
                else:
                    v = lv
                    vi = lvi
                real[c] = v
                mem = cls_members[c]
                if vi == chi:
                    leaf = key >> 3
                    for k in mem:
                        values[k] = vi
                        why[k] = at_max(chi, hikind[k], leaf)
                elif vi > clo:
                    for k in mem:
                        values[k] = vi
                        why[k] = limited
                else:
                    for k in mem:
                        why[k] = limited
                if vi > clo:
                    add = len(mem) * (vi - clo)
                    for rr in own[key]:
                        added[rr] += add
                if not left:
                    continue  # the last freeze of the tier: no level is read after it
                bt = built_tres[key]
                if bt is None:
                    bt = built_tres[key] = tuple(filter(built.__getitem__, tres[key]))
                if bt:
                    cnt = c_n[c]
                    grown = cnt * (v - clo)
                    for rr in bt:
                        h = hist[rr]
                        h[clo] -= cnt
                        h[chi] += cnt
                        room0[rr] -= grown
                        nunf[rr] -= 1
                        stale[rr] = True
        topo.sum_up(added)
        load = list(map(operator.add, load, added))

        # Then hand out what is left one ampere at a time, lowest car first (then queue order),
        # to cars below their maximum with room on every resource. Cars under the same
        # constraints share every resource, so they end at most 1 A apart.
        heap2: list[tuple[int, int, int]] = []
        full = [c - ld < 1 for c, ld in zip(cap, load, strict=True)]
        is_full = full.__getitem__  # any(map()) with a C-level predicate: no Python loop
        for key, cls in by_key.items():
            # Full resources that could not fill (room for every car at its maximum) hold
            # only cars at their maximum: looking at those that could is enough.
            if any(map(is_full, tres[key])):
                continue
            for c in cls:
                chi = c_info[c][2]
                heap2.extend((values[k], k, c) for k in cls_members[c] if values[k] < chi)
        heapq.heapify(heap2)
        while heap2:
            v, k, c = heapq.heappop(heap2)
            key, _lo, chi = c_info[c]
            res = res_memo[key]
            if min(cap[r] - load[r] for r in res) < 1:
                continue
            v += 1
            values[k] = v
            for r in res:
                load[r] += 1
            if v < chi:
                heapq.heappush(heap2, (v, k, c))
            else:
                why[k] = at_max(chi, hikind[k], key >> 3)
    return load, values, why


def at_max_text(hi: int, kind: int, shed_source: str) -> str:
    """Why a car at its maximum is not offered more."""
    if kind == HI_SHED:
        return f"shed to its minimum {hi} A by {shed_source}"
    if kind == HI_DEMAND:
        return f"offered {hi} A: the car draws less than it was offered"
    if kind == HI_INSTALLER:
        return f"at the installer's maximum {hi} A"
    return f"at the station's maximum {hi} A"
