"""The supply tree compiled into index arrays, for :func:`.allocate.allocate`.

A resource below is one node and one grid phase, numbered ``3 * node + grid phase``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .fill import MASK, MASK_PHASES
from .model import Node


@dataclass(frozen=True, slots=True)
class Topology:
    """The node tree compiled into index arrays; build once and reuse while the tree is fixed.

    Invariants: ``order`` lists every node after its parent; ``path[n]`` is ``n`` followed by
    its ancestors up to the root; ``up`` is ``(3 * node, 3 * parent)`` for every node that has
    a parent, children before parents. The lookup tables below ``up`` are derived from these
    by :meth:`build` (make a Topology with it, not by hand).
    """

    nodes: tuple[Node, ...]
    index: dict[str, int]
    parent: tuple[int, ...]
    children: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    path: tuple[tuple[int, ...], ...]
    up: tuple[tuple[int, int], ...] = ()
    #: Per node with children, children first: ``(3 * node, its children's resources on L1,
    #: on L2, on L3)``, for :meth:`sum_up`.
    child_res: tuple[tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...] = ()
    #: ``rotated[n][g]``: the resources of node ``n`` on the grid phases of station phases L1,
    #: L2, L3 for a station whose L1 is wired to grid phase ``g`` (rotations are cyclic).
    rotated: tuple[tuple[tuple[int, int, int], ...], ...] = ()
    #: ``keys[n][mask]``: ``8 * n + mask``, the key of node ``n`` and a footprint (as shared ints:
    #: no arithmetic in the hot loops).
    keys: tuple[tuple[int, ...], ...] = ()
    #: ``own[8 * n + mask]``: the resources of node ``n`` itself on the footprint's grid phases.
    own: tuple[tuple[int, ...], ...] = ()
    #: Memo of :meth:`resources`, filled as cars are seen (the tree is fixed, so it stays valid),
    #: by ``8 * leaf + MASK[grid phases]``.
    res_memo: dict[int, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, nodes: Sequence[Node]) -> Topology:
        """Compile ``nodes``; raises ``ValueError`` on duplicate ids, unknown parents, cycles."""
        index: dict[str, int] = {}
        for i, n in enumerate(nodes):
            if n.id in index:
                raise ValueError(f"duplicate node id {n.id!r}")
            index[n.id] = i
        parent: list[int] = []
        kids: list[list[int]] = [[] for _ in nodes]
        for i, n in enumerate(nodes):
            if n.parent is None:
                parent.append(-1)
                continue
            p = index.get(n.parent)
            if p is None:
                raise ValueError(f"node {n.id!r}: unknown parent {n.parent!r}")
            parent.append(p)
            kids[p].append(i)
        order: list[int] = [i for i, p in enumerate(parent) if p < 0]
        k = 0
        while k < len(order):  # breadth-first: parents before children
            order.extend(kids[order[k]])
            k += 1
        if len(order) != len(nodes):
            raise ValueError("the node tree has a cycle")
        path: list[tuple[int, ...]] = [()] * len(nodes)
        for i in order:
            p = parent[i]
            path[i] = (i,) if p < 0 else (i, *path[p])
        # The lookup tables, spelt out per node (a few hundred nodes: this is most of build()).
        own: list[tuple[int, ...]] = []
        rotated: list[tuple[tuple[int, int, int], ...]] = []
        for n in range(len(nodes)):
            a, b, c = 3 * n, 3 * n + 1, 3 * n + 2
            own += ((), (a,), (b,), (a, b), (c,), (a, c), (b, c), (a, b, c))  # by MASK
            rotated.append(((a, b, c), (b, c, a), (c, a, b)))
        return cls(
            nodes=tuple(nodes),
            index=index,
            parent=tuple(parent),
            children=tuple(tuple(c) for c in kids),
            order=tuple(order),
            path=tuple(path),
            up=tuple((3 * n, 3 * parent[n]) for n in reversed(order) if parent[n] >= 0),
            child_res=tuple(
                (
                    3 * n,
                    tuple(3 * c for c in kids[n]),
                    tuple(3 * c + 1 for c in kids[n]),
                    tuple(3 * c + 2 for c in kids[n]),
                )
                for n in reversed(order)
                if kids[n]
            ),
            keys=tuple(tuple(range(8 * n, 8 * n + 8)) for n in range(len(nodes))),
            own=tuple(own),
            rotated=tuple(rotated),
        )

    def resources(self, leaf: int, fp: tuple[int, ...]) -> tuple[int, ...]:
        """Resources (``3 * node + grid phase``) loaded by a car below node ``leaf`` on grid
        phases ``fp``: the leaf's first, then its ancestors' up to the root."""
        return self.resources_at(8 * leaf + MASK[fp])

    def resources_at(self, key: int) -> tuple[int, ...]:
        """:meth:`resources` by ``8 * leaf + MASK[fp]`` (no tuple to hash on the hot paths)."""
        res = self.res_memo.get(key)
        if res is None:
            fp = MASK_PHASES[key & 7]
            # Concurrent callers may both compute it; they store the same tuple.
            res = self.res_memo[key] = tuple(3 * n + g for n in self.path[key >> 3] for g in fp)
        return res

    def sum_up(self, acc: list[int]) -> None:
        """Add every node's per-resource amounts to its ancestors' (in place), children first.

        Whole numbers only: a node's children are added in one C-level sum per phase, in no
        particular order (exact for ints, not for floats: see :meth:`sum_up_in_order`).
        """
        get = acc.__getitem__
        for q, k0, k1, k2 in self.child_res:
            acc[q] += sum(map(get, k0))
            acc[q + 1] += sum(map(get, k1))
            acc[q + 2] += sum(map(get, k2))

    def sum_up_in_order(self, acc: list[float]) -> None:
        """:meth:`sum_up` for floats: one child at a time, every node after its descendants,
        in a fixed order (float sums depend on it)."""
        for r, q in self.up:
            acc[q] += acc[r]
            acc[q + 1] += acc[r + 1]
            acc[q + 2] += acc[r + 2]

    def subtree(self, n: int) -> list[int]:
        """Nodes of the subtree rooted at ``n``, every node after its parent."""
        out = [n]
        k = 0
        while k < len(out):
            out.extend(self.children[out[k]])
            k += 1
        return out
