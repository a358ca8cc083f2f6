"""A recompute of some trees: an event plans its own tree again, not the whole organization,
with the same result for that tree as a whole recompute, the other trees untouched, and the
live view of every tree kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from loadmgmt import hooks, live, tasks
from loadmgmt.engine import model as engine
from loadmgmt.models import ConnectorSetpoint, NodeLoadSample
from loadmgmt.recompute import recompute, scope_resolve, tree_roots
from stations.events import StationEvent
from stations.models import StationCommand
from tests.loadmgmt.factories import (
    LoadGroupFactory,
    MeterFactory,
    TreeNodeFactory,
)
from tests.loadmgmt.test_recompute import (  # noqa: F401 - quick: the same autouse fixture
    accept_all,
    arrive,
    idle_line,
    leases,
    limit,
    quick,
    stations_of,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def site(tenants):
    """Three trees: a board above two groups, a second board above one, and a group under no
    node; each station holds the 0 A lease it accepted (no car yet)."""
    board = TreeNodeFactory(organization=tenants.a, limit_l1=50, limit_l2=50, limit_l3=50)
    lines = {
        "a": idle_line(tenants.a, board),
        "b": idle_line(tenants.a, board),
        "c": idle_line(tenants.a, TreeNodeFactory(organization=tenants.a)),
        "d": idle_line(tenants.a),
    }
    recompute(tenants.a.pk)
    accept_all()
    return lines


def eid(group):
    return f"g{group.pk}"


def rows(group):
    return {
        s.station_id: (s.target_current, s.sent_command_id, s.updated_at)
        for s in ConnectorSetpoint.objects.filter(station__in=group.stations.all())
    }


# --- which trees ---------------------------------------------------------------------------


def _node(node_id, parent=None):
    return engine.Node(node_id, parent, (32.0, 32.0, 32.0))


NODES = [
    _node("n1"),
    _node("n2", "n1"),
    _node("g1", "n2"),
    _node("g2", "n1"),
    _node("n3"),
    _node("g3", "n3"),
    _node("g4"),
]


@pytest.mark.parametrize(
    ("parts", "nodes", "groups"),
    [
        ({"g1"}, ["n1", "n2", "g1", "g2"], [1, 2]),  # the whole tree, from a leaf up and down
        ({"n2"}, ["n1", "n2", "g1", "g2"], [1, 2]),  # a node's meter: its tree
        ({"g4"}, ["g4"], [4]),  # a group under no node is a tree of its own
        ({"n3", "g4"}, ["n3", "g3", "g4"], [3, 4]),
        ({"g9"}, [], []),  # deleted meanwhile: nothing
        ({"g1", "g3", "g4"}, None, None),  # every tree: the whole organization
        ({"g1", tasks.WHOLE}, None, None),
        (None, None, None),
    ],
)
def test_scope_is_the_trees_of_the_parts(parts, nodes, groups):
    chosen, group_ids = scope_resolve(NODES, parts)
    if nodes is None:
        assert chosen is NODES and group_ids is None
    else:
        assert [n.id for n in chosen] == nodes and group_ids == groups


def test_tree_roots():
    assert tree_roots(NODES) == {
        "n1": "n1",
        "n2": "n1",
        "g1": "n1",
        "g2": "n1",
        "n3": "n3",
        "g3": "n3",
        "g4": "g4",
    }


# --- the recompute of some trees -----------------------------------------------------------


def test_a_tree_is_planned_alone_and_as_the_whole_organization_would(tenants, site):
    a1 = stations_of(site["a"])[0]
    c1 = stations_of(site["c"])[0]
    arrive(a1)
    arrive(c1)
    untouched = {k: rows(site[k]) for k in "cd"}
    report = recompute(tenants.a.pk, parts={eid(site["a"])})
    assert not report.whole and report.trees == 1
    assert report.stations == 4  # the board's two groups, not the other trees' stations
    assert limit(leases(a1).last()) == (32.0, 3)
    # The other trees are neither read nor written: c1's car waits for their turn.
    assert {k: rows(site[k]) for k in "cd"} == untouched
    assert not leases(c1).filter(status="pending").exists()
    accept_all()
    sent = leases().count()
    whole = recompute(tenants.a.pk)
    assert whole.whole and whole.stations == 8
    # The whole organization's plan gives a1's tree nothing new: the same plan as its own.
    assert [c.station_id for c in leases().filter(pk__gt=_last(sent))] == [c1.pk]
    assert limit(leases(c1).last()) == (32.0, 3)


def _last(count):
    return StationCommand.objects.order_by("pk").values_list("pk", flat=True)[count - 1]


def test_a_tree_of_a_board_shares_its_fuse_among_all_its_groups(tenants, site):
    """The board's 50 A is shared by groups a and b: recomputing for b's car must count a's
    car too (the tree, not just the group of the event)."""
    a1, b1 = stations_of(site["a"])[0], stations_of(site["b"])[0]
    arrive(a1, minutes_ago=5)
    recompute(tenants.a.pk, parts={eid(site["a"])})
    accept_all()
    arrive(b1)
    recompute(tenants.a.pk, parts={eid(site["b"])})
    accept_all()
    targets = {
        s.station_id: s.target_current
        for s in ConnectorSetpoint.objects.filter(station__in=[a1, b1])
    }
    assert targets == {a1.pk: 25, b1.pk: 25}


def test_samples_are_taken_by_the_whole_organizations_recompute_only(tenants, site):
    before = NodeLoadSample.objects.count()
    recompute(tenants.a.pk, parts={eid(site["d"])})
    assert NodeLoadSample.objects.count() == before
    recompute(tenants.a.pk, now=timezone.now() + timedelta(seconds=1))
    assert NodeLoadSample.objects.count() == before + 6  # 2 boards and 4 groups


def test_parts_deleted_meanwhile_plan_nothing(tenants, site):
    report = recompute(tenants.a.pk, parts={"g999999"})
    assert report.stations == 0 and not report.whole


# --- the triggers --------------------------------------------------------------------------


def test_a_station_event_marks_its_group(tenants, site, monkeypatch):
    b1 = stations_of(site["b"])[0]
    hooks.station_event(StationEvent("boot", b1.pk, tenants.a.pk))
    assert tasks._due == {tenants.a.pk: {eid(site["b"])}}
    calls = []

    def spy(organization_id, **kwargs):
        calls.append(kwargs["parts"])
        return recompute(organization_id, **kwargs)

    monkeypatch.setattr("loadmgmt.recompute.recompute", spy)
    assert tasks.loadmgmt_due() == 1
    assert calls == [{eid(site["b"])}]


def test_a_meter_reading_marks_its_node(tenants, django_capture_on_commit_callbacks):
    from loadmgmt.services import meter_reading_record

    meter = MeterFactory(node=TreeNodeFactory(organization=tenants.a))
    with django_capture_on_commit_callbacks(execute=True):
        meter_reading_record(meter=meter, current=(10.0, 10.0, 10.0))
    assert tasks._due == {tenants.a.pk: {f"n{meter.node_id}"}}


def test_a_configuration_change_recomputes_the_whole_organization(
    tenants, site, django_capture_on_commit_callbacks
):
    """A change may move a group from one tree to another: both must be planned again."""
    from loadmgmt.services import group_update

    with django_capture_on_commit_callbacks(execute=True):
        group_update(group=site["d"], max_current=20)
    assert tasks._due == {tenants.a.pk: {tasks.WHOLE}}


@pytest.fixture
def broker(settings, monkeypatch):
    """With a broker: the recompute tasks scheduled (none run) and the recomputes run, with
    the parts each was asked for."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    scheduled: list[tuple] = []
    monkeypatch.setattr(
        tasks.loadmgmt_recompute, "apply_async", lambda args, **kw: scheduled.append(args)
    )
    runs: list[set[str]] = []

    def fake_recompute(organization_id, *, parts=None, now=None):
        runs.append(set(parts))

    monkeypatch.setattr("loadmgmt.recompute.recompute", fake_recompute)
    return scheduled, runs


def test_with_a_broker_the_task_recomputes_the_parts_marked_since_the_last(tenants, broker):
    scheduled, runs = broker
    tasks.recompute_soon(tenants.a.pk, "g1")
    tasks.recompute_soon(tenants.a.pk, "g2")
    tasks.recompute_soon(tenants.a.pk, "g1")
    assert scheduled == [(tenants.a.pk,)]
    tasks.loadmgmt_recompute(tenants.a.pk)
    assert runs == [{"g1", "g2"}] and not tasks.dirty(tenants.a.pk)
    # A task whose marks another holder took and recomputed meanwhile does nothing.
    tasks.loadmgmt_recompute(tenants.a.pk)
    assert runs == [{"g1", "g2"}]


def test_with_a_broker_marks_during_a_run_are_the_next_runs(tenants, broker, monkeypatch):
    scheduled, runs = broker

    def busy(organization_id, *, parts=None, now=None):
        runs.append(set(parts))
        if len(runs) == 1:
            tasks.recompute_soon(organization_id, "g3")  # a boot while it plans

    monkeypatch.setattr("loadmgmt.recompute.recompute", busy)
    tasks.recompute_soon(tenants.a.pk, "g1")
    tasks.loadmgmt_recompute(tenants.a.pk)
    assert runs == [{"g1"}, {"g3"}] and len(scheduled) == 1


def test_with_a_broker_the_cycle_finding_the_lock_taken_gets_the_whole_organization_planned(
    tenants, broker
):
    """The holder may be planning one tree: the cycle's whole organization (renewals, time-
    outs) must not be lost because the lock was taken."""
    scheduled, runs = broker
    cache.add(tasks._lock_key(tenants.a.pk), "a task", timeout=60)
    LoadGroupFactory(organization=tenants.a)
    assert tasks.loadmgmt_cycle() == 1 and runs == []
    assert tasks.dirty(tenants.a.pk) and scheduled == [(tenants.a.pk,)]
    cache.delete(tasks._lock_key(tenants.a.pk))
    tasks.loadmgmt_recompute(tenants.a.pk)
    assert runs == [{tasks.WHOLE}]


# --- the live view of every tree -----------------------------------------------------------


def test_the_live_view_keeps_every_tree_when_one_is_planned_again(tenants, site, monkeypatch):
    monkeypatch.setattr(live, "MAX_CONNECTOR_ROWS", 3)
    a1, d1 = stations_of(site["a"])[0], stations_of(site["d"])[0]
    summary = live.summary_get(tenants.a.pk)
    assert len(summary.nodes) == 6 and summary.more_connectors == 8 - 3
    arrive(d1)
    recompute(tenants.a.pk, parts={eid(site["d"])})
    summary = live.summary_get(tenants.a.pk)
    assert [n.key for n in summary.nodes][-1] == eid(site["d"])  # groups under no node last
    assert len(summary.nodes) == 6  # the three trees not planned are still shown
    # Charging cars come first, whatever tree was planned last.
    assert summary.connectors[0].station == d1.label and summary.connectors[0].current == 32
    assert summary.more_connectors == 8 - 3
    arrive(a1)
    recompute(tenants.a.pk, parts={eid(site["a"])})
    summary = live.summary_get(tenants.a.pk)
    assert [c.station for c in summary.connectors[:2]] == [
        s.label for s in sorted([a1, d1], key=lambda s: s.pk)
    ]
    html = tenants.client(tenants.viewer_a).get("/o/alpha/load/").content.decode()
    assert html.count("32 A × 3") == 2 and "5 more connectors" in html


def test_the_live_view_keeps_a_trees_warning_when_another_is_planned(tenants, site):
    c_group = site["c"]
    for station in c_group.stations.all():
        station.online = False
        station.save()
    c_group.max_current = 10  # two offline stations may draw 6 A each: more than 10 A
    c_group.save()
    recompute(tenants.a.pk)
    warnings = live.summary_get(tenants.a.pk).warnings
    assert any("offline stations may draw 12 A" in w for w in warnings), warnings
    recompute(tenants.a.pk, parts={eid(site["d"])})
    assert live.summary_get(tenants.a.pk).warnings == warnings
    c_group.max_current = 32
    c_group.save()
    recompute(tenants.a.pk, parts={eid(c_group)})
    assert live.summary_get(tenants.a.pk).warnings == []


def test_a_deleted_tree_leaves_the_live_view_at_the_next_whole_recompute(tenants, site):
    site["d"].delete()
    recompute(tenants.a.pk)
    assert eid(site["d"]) not in {n.key for n in live.summary_get(tenants.a.pk).nodes}


def test_offline_events_together_ask_for_their_trees_in_one_request(tenants, site, monkeypatch):
    """A stopping process's closes (stations.events.station_events_emit): one membership
    query and one request for all; stations outside every group are left out; a boot in the
    same batch still gets its fail-safe profile."""
    from tests.stations.factories import StationFactory

    loose = StationFactory(organization=tenants.a)
    a1, c1, d1 = (stations_of(site[k])[0] for k in "acd")
    requests = []
    monkeypatch.setattr(hooks, "recompute_soon_many", lambda marks: requests.append(set(marks)))
    batch = [StationEvent("offline", s.pk) for s in (a1, c1, loose)]
    batch.append(StationEvent("boot", d1.pk))
    before = leases(d1).count()
    hooks.station_event.many(batch)
    assert requests == [{(tenants.a.pk, eid(site["a"])), (tenants.a.pk, eid(site["c"]))}]
    assert leases(d1).count() == before + 1  # the boot's fail-safe profile
    assert limit(leases(d1).last()) == (6.0, 3)


def test_with_a_broker_many_requests_are_one_round_trip_and_one_task_per_organization(
    tenants, broker
):
    scheduled, runs = broker
    tasks.recompute_soon_many([(tenants.a.pk, "g1"), (tenants.b.pk, "g2"), (tenants.a.pk, "g3")])
    assert sorted(scheduled) == sorted([(tenants.a.pk,), (tenants.b.pk,)])
    tasks.recompute_soon_many([(tenants.a.pk, "g4")])  # a task waits already: merged into it
    assert len(scheduled) == 2
    tasks.loadmgmt_recompute(tenants.a.pk)
    tasks.loadmgmt_recompute(tenants.b.pk)
    assert runs == [{"g1", "g3", "g4"}, {"g2"}]


def test_with_a_broker_a_task_carrying_on_after_changes_kept_coming_gathers_first(
    tenants, settings, monkeypatch
):
    """The first event is planned at once; a task that ends (after its reruns) with changes
    still coming hands over to one that first gathers for LOADMGMT_RERUN_GATHER_SECONDS, as
    a rerun would: otherwise each such task planned one or two events."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.LOADMGMT_RERUN_GATHER_SECONDS = 0.3
    countdowns = []
    monkeypatch.setattr(
        tasks.loadmgmt_recompute,
        "apply_async",
        lambda args, **kw: countdowns.append(kw.get("countdown")),
    )
    monkeypatch.setattr(tasks.time, "sleep", lambda seconds: None)

    def storm(organization_id, *, parts=None, now=None):
        tasks.recompute_soon(organization_id, "g1")  # every run sees another event

    monkeypatch.setattr("loadmgmt.recompute.recompute", storm)
    tasks.recompute_soon(tenants.a.pk, "g1")
    assert countdowns == [None]
    tasks.loadmgmt_recompute(tenants.a.pk)  # 1 + MAX_RERUNS runs, then it hands over
    assert countdowns == [None, 0.3]


def test_the_cycle_runs_each_organization_once_and_hands_later_changes_to_a_task(
    tenants, settings, monkeypatch
):
    """The cycle goes through every organization in turn: it must not rest and rerun for
    one organization's changes while the others wait for their renewals."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.LOADMGMT_RERUN_GATHER_SECONDS = 0.3
    countdowns, rests, runs = [], [], []
    monkeypatch.setattr(
        tasks.loadmgmt_recompute,
        "apply_async",
        lambda args, **kw: countdowns.append((args[0], kw.get("countdown"))),
    )
    monkeypatch.setattr(tasks.time, "sleep", rests.append)

    def busy(organization_id, *, parts=None, now=None):
        runs.append((organization_id, set(parts)))
        tasks.recompute_soon(organization_id, "g1")  # a change while it runs

    monkeypatch.setattr("loadmgmt.recompute.recompute", busy)
    LoadGroupFactory(organization=tenants.a)
    LoadGroupFactory(organization=tenants.b)
    assert tasks.loadmgmt_cycle() == 2
    assert runs == [(tenants.a.pk, {tasks.WHOLE}), (tenants.b.pk, {tasks.WHOLE})]
    assert rests == []
    # The change scheduled its task itself (the cycle holds no scheduled mark): one each.
    assert sorted(countdowns) == sorted([(tenants.a.pk, None), (tenants.b.pk, None)])
