"""The supply tree compiled into index arrays, for :func:`.allocate.allocate`.

A resource below is one node and one grid phase, numbered ``3 * node + grid phase``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .fill import MASK
from .model import Node


@dataclass(frozen=True, slots=True)
class Topology:
    """The node tree compiled into index arrays; build once and reuse while the tree is fixed.

    Invariants: ``order`` lists every node after its parent; ``path[n]`` is ``n`` followed by
    its ancestors up to the root.
    """

    nodes: tuple[Node, ...]
    index: dict[str, int]
    parent: tuple[int, ...]
    children: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    path: tuple[tuple[int, ...], ...]
    #: Memo of :meth:`resources`, filled as cars are seen (the tree is fixed, so it stays valid).
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
        return cls(
            nodes=tuple(nodes),
            index=index,
            parent=tuple(parent),
            children=tuple(tuple(c) for c in kids),
            order=tuple(order),
            path=tuple(path),
        )

    def resources(self, leaf: int, fp: tuple[int, ...]) -> tuple[int, ...]:
        """Resources (``3 * node + grid phase``) loaded by a car below node ``leaf`` on grid
        phases ``fp``: the leaf's first, then its ancestors' up to the root."""
        key = 8 * leaf + MASK[fp]
        res = self.res_memo.get(key)
        if res is None:
            # Concurrent callers may both compute it; they store the same tuple.
            res = self.res_memo[key] = tuple(3 * n + g for n in self.path[leaf] for g in fp)
        return res

    def subtree(self, n: int) -> list[int]:
        """Nodes of the subtree rooted at ``n``, every node after its parent."""
        out = [n]
        k = 0
        while k < len(out):
            out.extend(self.children[out[k]])
            k += 1
        return out
