"""Step 5 of the allocation: max-min fair water-filling, and the reason texts it writes.

Kept apart from :mod:`.allocate` (which decides who charges and on how many phases) because it
is the one part with its own data structures: per node-and-phase histograms of the classes'
minimums and maximums (one list of their difference), from which the level at which a node and
phase fills is read in at most 27 steps, and a heap of those levels.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

from .model import MAX_CURRENT, PHASE_NAMES, Node

_LEVELS = range(6, MAX_CURRENT)  # the fill level moves from 6 A to 32 A in whole ampere
_EMPTY: list[int] = []  # placeholder in per-resource lists; never mutated

# Why a car's maximum is what it is, for the reason text.
HI_STATION = 0
HI_INSTALLER = 1
HI_DEMAND = 2
HI_SHED = 3

#: Bit mask of a footprint's grid phases.
MASK: dict[tuple[int, ...], int] = {
    fp: sum(1 << g for g in fp) for fp in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
}


def water_fill(
    nodes: Sequence[Node],
    resources: Callable[[int, tuple[int, ...]], tuple[int, ...]],
    cap: list[int],
    load: list[int],
    cls_key: list[tuple[int, tuple[int, ...], int, int, int]],
    cls_members: list[list[int]],
    values: list[int],
    why: list[str],
    binding: list[bool],
    hikind: Sequence[int],
    shed_src: Sequence[str],
) -> None:
    """Max-min fair water-filling over classes, one priority tier at a time.

    ``load`` holds every admitted car at its minimum on entry and the final loads on return.
    First an exact fill in real numbers: a common level rises; the resource that fills first
    freezes the classes through it at its (fractional) level; repeat. Then every class is
    rounded down to whole ampere and the ampere left over are handed out one at a time, lowest
    car first, then queue order, to cars below their maximum whose every resource still has
    room. ``cls_key`` is (parent node, grid phases, min, max, priority) per class and
    ``cls_members`` its cars (indices into ``values``/``why``) in queue order. Invariant:
    after each step, every resource's load is at most its capacity (integers, so exact).
    """
    n_cls = len(cls_key)
    # Classes through the same resources share one tuple (and one id, for the filter below).
    res_of: list[tuple[int, ...]] = []
    rid_of: list[int] = []
    res_cache: dict[int, int] = {}
    res_list: list[tuple[int, ...]] = []
    for leaf, fp, _lo, _hi, _prio in cls_key:
        key = 8 * leaf + MASK[fp]
        rid = res_cache.get(key)
        if rid is None:
            rid = res_cache[key] = len(res_list)
            res_list.append(resources(leaf, fp))
        rid_of.append(rid)
        res_of.append(res_list[rid])
    real = [0.0] * n_cls
    bott = [-1] * n_cls

    c_lo = [k[2] for k in cls_key]
    c_hi = [k[3] for k in cls_key]
    c_n = [len(m) for m in cls_members]
    R = 3 * len(nodes)
    tiers = sorted({k[4] for k in cls_key}, reverse=True)
    # Reason texts by bottleneck resource, built once each (-1: no bottleneck).
    limited_text: dict[int, tuple[str, str]] = {-1: ("", " (at its minimum)")}
    for tier in tiers:
        members = [c for c in range(n_cls) if cls_key[c][4] == tier]
        # Per resource (lists indexed by resource, None where no class of this tier passes):
        # a histogram of the unfrozen classes' cars, +count at each minimum and -count at each
        # maximum (so that a running sum is the number of cars still growing at a level), the
        # number of unfrozen classes, and the classes.
        hist: list[list[int] | None] = [None] * R
        nunf = [0] * R
        on_res: list[list[int]] = [_EMPTY] * R
        touched: list[int] = []
        # A resource with room for every class through it at its maximum can never fill:
        # leave it out of the bookkeeping (most group-level phases, in practice).
        grow = [0] * R
        for c in members:
            g = c_n[c] * (c_hi[c] - c_lo[c])
            for r in res_of[c]:
                grow[r] += g
        may_fill = [g > c - ld for g, c, ld in zip(grow, cap, load, strict=True)]
        keep = may_fill.__getitem__  # filter() with a C-level predicate: no Python frame per call
        tres_by_rid: list[tuple[int, ...] | None] = [None] * len(res_list)
        tres: list[tuple[int, ...]] = [()] * n_cls
        for c in members:
            rid = rid_of[c]
            t = tres_by_rid[rid]
            if t is None:
                t = tres_by_rid[rid] = tuple(filter(keep, res_list[rid]))
            tres[c] = t
        frozen = [False] * n_cls
        left = len(members)
        for c in members:
            if not tres[c]:
                frozen[c] = True
                real[c] = float(c_hi[c])
                left -= 1
        for c in members:
            clo = c_lo[c]
            chi = c_hi[c]
            cnt = c_n[c]
            for r in tres[c]:
                h = hist[r]
                if h is not None:
                    h[clo] += cnt
                    h[chi] -= cnt
                    nunf[r] += 1
                    on_res[r].append(c)
                else:
                    h = hist[r] = [0] * (MAX_CURRENT + 1)
                    h[clo] = cnt
                    h[chi] -= cnt
                    nunf[r] = 1
                    on_res[r] = [c]
                    touched.append(r)
        touched.sort()
        # Room above the minimums per resource; frozen classes' growth is subtracted as they
        # freeze (a float: the exact fill freezes at fractional levels).
        room0 = [0.0] * R
        for r in touched:
            room0[r] = float(cap[r] - load[r])

        def level(r: int) -> float:
            """The level at which resource r fills (32.0: it never does)."""
            room = room0[r]  # noqa: B023 - the function is used within this iteration only
            h = hist[r]  # noqa: B023
            assert h is not None
            active = 0
            for lv in _LEVELS:
                active += h[lv]
                if active > room:
                    # room may be a hair below 0 from float rounding: then it is full at lv.
                    return lv + room / active if room > 0.0 else float(lv)
                room -= active
            return float(MAX_CURRENT)

        lvl = [0.0] * R
        heap: list[tuple[float, int]] = []
        for r in touched:
            v = level(r)
            lvl[r] = v
            heap.append((v, r))
        heapq.heapify(heap)
        # A resource whose classes changed is only re-levelled when it reaches the top of the
        # heap: levels only rise, so a stale entry is never too high, and the root (touched by
        # every freeze) is recomputed a handful of times instead of after every freeze.
        stale = [False] * R
        while left:
            lv, r = heapq.heappop(heap)
            if lvl[r] != lv or not nunf[r]:
                continue
            if stale[r]:
                stale[r] = False
                nv = level(r)
                lvl[r] = nv
                heapq.heappush(heap, (nv, r))
                continue
            if lv >= MAX_CURRENT:
                live = [c for c in members if not frozen[c]]  # everything fits at its max
                b = -1
            else:
                live = [c for c in on_res[r] if not frozen[c]]
                binding[r] = True
                b = r
            for c in live:
                frozen[c] = True
                clo = c_lo[c]
                chi = c_hi[c]
                v = lv if clo <= lv <= chi else (float(clo) if lv < clo else float(chi))
                real[c] = v
                bott[c] = b
                cnt = c_n[c]
                grown = cnt * (v - clo)
                for rr in tres[c]:
                    h = hist[rr]
                    h[clo] -= cnt  # type: ignore[index]
                    h[chi] += cnt  # type: ignore[index]
                    room0[rr] -= grown
                    nunf[rr] -= 1
                    stale[rr] = True
            left -= len(live)

        # Whole ampere: round down (never above the exact fill, so every resource fits) ...
        for c in members:
            _leaf, _fp, clo, chi, _p = cls_key[c]
            v = min(chi, max(clo, math.floor(real[c] + 1e-7)))
            mem = cls_members[c]
            for k in mem:
                values[k] = v
            add = len(mem) * (v - clo)
            if add:
                for r in res_of[c]:
                    load[r] += add
        # ... then hand out what is left one ampere at a time, lowest car first (then queue
        # order), to cars below their maximum with room on every resource. Cars under the same
        # constraints share every resource, so they end at most 1 A apart.
        heap2: list[tuple[int, int, int]] = []
        full = [c - ld < 1 for c, ld in zip(cap, load, strict=True)]
        is_full = full.__getitem__  # any(map()) with a C-level predicate: no Python loop
        for c in members:
            if not any(map(is_full, res_of[c])):
                chi = c_hi[c]
                heap2.extend((values[k], k, c) for k in cls_members[c] if values[k] < chi)
        heapq.heapify(heap2)
        while heap2:
            v, k, c = heapq.heappop(heap2)
            res = res_of[c]
            if min(cap[r] - load[r] for r in res) < 1:
                continue
            values[k] = v + 1
            for r in res:
                load[r] += 1
            if v + 1 < cls_key[c][3]:
                heapq.heappush(heap2, (v + 1, k, c))

        at_max: dict[tuple[int, int, int], str] = {}
        for c in members:
            _leaf, _fp, clo, chi, _p = cls_key[c]
            b = bott[c]
            texts = limited_text.get(b)
            if texts is None:
                n, g = divmod(b, 3)
                limited = f"limited by {PHASE_NAMES[g]} at {nodes[n].label}"
                texts = limited_text[b] = (limited, limited + " (at its minimum)")
            limited, at_min = texts
            for k in cls_members[c]:
                v = values[k]
                if v >= chi:
                    key = (chi, hikind[k], _leaf)
                    text = at_max.get(key)
                    if text is None:
                        text = at_max[key] = at_max_text(chi, hikind[k], shed_src[_leaf])
                    why[k] = text
                elif v == clo and clo > real[c]:
                    why[k] = at_min
                else:
                    why[k] = limited


def at_max_text(hi: int, kind: int, shed_source: str) -> str:
    """Why a car at its maximum is not offered more."""
    if kind == HI_SHED:
        return f"shed to its minimum {hi} A by {shed_source}"
    if kind == HI_DEMAND:
        return f"offered {hi} A: the car draws less than it was offered"
    if kind == HI_INSTALLER:
        return f"at the installer's maximum {hi} A"
    return f"at the station's maximum {hi} A"
