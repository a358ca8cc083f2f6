"""The allocator's internal tables and shortcuts, against their plain definitions."""

from __future__ import annotations

import dataclasses
import random

from loadmgmt.engine.allocate import _ALLOCATION_FIELDS, Topology, _new
from loadmgmt.engine.fill import MASK, MASK_PHASES
from loadmgmt.engine.model import Allocation, Decision, Node, PhaseRotation


def _forest(seed: int) -> list[Node]:
    rnd = random.Random(seed)
    nodes: list[Node] = []
    for i in range(rnd.randint(1, 30)):
        parent = None if i == 0 or rnd.random() < 0.1 else f"n{rnd.randrange(i)}"
        nodes.append(Node(f"n{i}", parent, (10.0, 10.0, 10.0)))
    rnd.shuffle(nodes)  # parents need not come first
    return nodes


def test_topology_tables_match_their_definitions() -> None:
    for seed in range(50):
        topo = Topology.build(_forest(seed))
        n_nodes = len(topo.nodes)
        # up: every node with a parent once, after all of its descendants; child_res: the same
        # grouped by parent
        assert sorted(r // 3 for r, _q in topo.up) == [
            n for n in range(n_nodes) if topo.parent[n] >= 0
        ]
        seen: set[int] = set()
        for r, q in topo.up:
            n, p = r // 3, q // 3
            assert topo.parent[n] == p
            assert all(c in seen for c in topo.children[n])
            seen.add(n)
        assert sorted(q // 3 for q, *_k in topo.child_res) == [
            n for n in range(n_nodes) if topo.children[n]
        ]
        for q, k0, k1, k2 in topo.child_res:
            n = q // 3
            assert (k0, k1, k2) == tuple(
                tuple(3 * c + g for c in topo.children[n]) for g in range(3)
            )
        for n in range(n_nodes):
            for rot in PhaseRotation:
                g0 = rot.value[0]
                assert topo.rotated[n][g0] == tuple(3 * n + g for g in rot.value)
            for mask in range(8):
                key = 8 * n + mask
                assert topo.keys[n][mask] == key
                assert topo.own[key] == tuple(3 * n + g for g in MASK_PHASES[mask])
            for fp, mask in MASK.items():
                expected = tuple(3 * m + g for m in topo.path[n] for g in fp)
                assert topo.resources(n, fp) == expected
                assert topo.resources_at(8 * n + mask) == expected


def test_sum_up_adds_every_node_to_its_ancestors() -> None:
    rnd = random.Random(7)
    for seed in range(50):
        topo = Topology.build(_forest(seed))
        own = [rnd.randint(0, 9) for _ in range(3 * len(topo.nodes))]
        acc = list(own)
        topo.sum_up(acc)
        in_order: list[float] = [float(x) for x in own]
        topo.sum_up_in_order(in_order)
        for n in range(len(topo.nodes)):
            for g in range(3):
                below = [m for m in range(len(topo.nodes)) if n in topo.path[m]]
                assert acc[3 * n + g] == sum(own[3 * m + g] for m in below)
                assert in_order[3 * n + g] == acc[3 * n + g]


def test_allocations_made_without_init_are_the_same_objects() -> None:
    # allocate() builds Allocation objects by setting these fields on object.__new__: a new
    # field must be added there too.
    assert tuple(f.name for f in dataclasses.fields(Allocation)) == _ALLOCATION_FIELDS
    fast = _new(Allocation)
    fast.station_id = "cp1"
    fast.current = 16
    fast.phases = 1
    fast.decision = Decision.CHARGE
    fast.reason = "limited by L1 at house"
    fast.phase_switch = True
    slow = Allocation("cp1", 16, 1, Decision.CHARGE, "limited by L1 at house", True)
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert fast.setpoint == slow.setpoint
