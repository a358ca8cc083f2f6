"""Recompute: rows → engine → leases, with decreases acknowledged before increases, unresponsive
stations counted safely, shedding inputs, and the triggers (hooks, debounce, lock)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from loadmgmt import hooks, live, tasks
from loadmgmt.models import ConnectorSetpoint, StationInputs
from loadmgmt.recompute import recompute
from stations.events import StationEvent
from stations.models import ChargingSession, Connector, StationCommand
from tests.loadmgmt.factories import LoadGroupFactory, LoadGroupMemberFactory, StationLimitsFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick(settings):
    settings.LOADMGMT_ACK_WAIT_SECONDS = 0.05
    settings.LOADMGMT_SAMPLE_EVERY_SECONDS = 0.0
    cache.clear()
    tasks._due.clear()


@pytest.fixture
def group(tenants):
    """Four one-connector stations on a 32 A line, online, no car yet, each holding the 0 A
    lease it accepted in place of its 6 A fail-safe (the state before any car comes)."""
    group = fresh_group(tenants)
    recompute(tenants.a.pk)
    accept_all()
    return group


@pytest.fixture
def booted(tenants):
    """As ``group``, but just booted: every station on its 6 A fail-safe, no lease yet."""
    return fresh_group(tenants)


def fresh_group(tenants):
    return idle_line(tenants.a, stations=4)


def idle_line(organization, node=None, stations=2, max_current=32):
    """A group of online one-connector stations with a 6 A fail-safe, idle."""
    group = LoadGroupFactory(organization=organization, node=node, max_current=max_current)
    for _ in range(stations):
        member = LoadGroupMemberFactory(group=group, station__connectors=1)
        member.station.online = True
        member.station.save()
        StationLimitsFactory(station=member.station, fail_safe_current=6)
    Connector.objects.filter(station__in=group.stations.all()).update(status="Available")
    return group


def stations_of(group):
    return list(group.stations.order_by("pk"))


def leases(station=None):
    qs = StationCommand.objects.filter(action="SetChargingProfile").order_by("pk")
    if station is not None:
        qs = qs.filter(station=station)
    return qs


def counted(tenants, station):
    """The engine's view of the station's connector 1 (what it is counted at now)."""
    from loadmgmt.recompute import engine_id, inputs_build

    stations = inputs_build(tenants.a, timezone.now()).stations
    return next(s for s in stations if s.id == engine_id(station.pk, 1))


def limit(command):
    period = command.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    return period[0]["limit"], period[0]["numberPhases"]


def accept_all():
    StationCommand.objects.filter(status="pending").update(
        status="accepted", finished_at=timezone.now()
    )


def arrive(station, minutes_ago=1):
    now = timezone.now() - timedelta(minutes=minutes_ago)
    Connector.objects.filter(station=station).update(status="Preparing", status_at=now)
    ChargingSession.objects.create(
        station=station,
        connector_id=1,
        id_tag="T",
        meter_start=0,
        started_at=now,
        station_started_at=now,
        idempotency_key=f"k{station.pk}",
    )


def test_first_car_gets_the_line_idle_stations_get_0(tenants, group):
    s1, s2, *_ = stations_of(group)
    arrive(s1)
    report = recompute(tenants.a.pk)
    assert report.stations == 4 and report.sent_increases == 1
    assert limit(leases(s1).last()) == (32.0, 3)
    assert limit(leases(s2).last()) == (0.0, 3)  # idle: 0 A until the engine admits a car
    lease = leases(s1).last().payload["csChargingProfiles"]
    assert lease["chargingProfilePurpose"] == "TxDefaultProfile" and lease["stackLevel"] == 1
    assert "validTo" in lease
    state = ConnectorSetpoint.objects.get(station=s1)
    assert (state.target_current, state.decision) == (32, "charge")


def test_running_twice_sends_nothing_new(tenants, group):
    arrive(stations_of(group)[0])
    recompute(tenants.a.pk)
    accept_all()
    sent = leases().count()
    report = recompute(tenants.a.pk)
    assert leases().count() == sent and report.sent_increases == report.renewed == 0
    state = ConnectorSetpoint.objects.get(station=stations_of(group)[0])
    assert (state.accepted_current, state.accepted_phases) == (32, 3)


def test_a_recompute_is_logged_at_info_only_when_it_changed_a_setpoint(tenants, group, caplog):
    """Every tree is recomputed every 10 s: one that sent nothing but renewals is DEBUG, or
    the log has a line per organization per cycle; one that moved a setpoint is INFO."""
    import logging

    with caplog.at_level(logging.DEBUG, logger="loadmgmt.recompute"):
        recompute(tenants.a.pk)  # nothing changed since the fixture's recompute
        arrive(stations_of(group)[0])
        recompute(tenants.a.pk)  # the car gets the line
    summaries = [r for r in caplog.records if r.getMessage().startswith(f"org {tenants.a.pk}")]
    assert [r.levelno for r in summaries] == [logging.DEBUG, logging.INFO]
    assert "0 down, 0 up" in summaries[0].getMessage()
    assert "1 up" in summaries[1].getMessage()


def test_increases_wait_until_every_decrease_is_accepted(tenants, group):
    s1, s2, *_ = stations_of(group)
    arrive(s1, minutes_ago=10)
    recompute(tenants.a.pk)
    accept_all()
    arrive(s2)
    report = recompute(tenants.a.pk)
    # s1 must come down to 16 A first; s2's 16 A is held: s1 has not answered.
    assert report.sent_decreases == 1 and report.increases_held
    assert limit(leases(s1).last()) == (16.0, 3)
    assert limit(leases(s2).last()) == (0.0, 3)
    accept_all()
    report = recompute(tenants.a.pk)
    assert report.sent_increases == 1 and limit(leases(s2).last()) == (16.0, 3)


def test_an_increase_that_fits_beside_the_pending_decreases_goes_out_at_once(tenants, group):
    """Pipelining: s2's 16 A fits on the line even with s1 still at its old 10 A, so it goes
    out in the same recompute although s1 has not answered its decrease."""
    from loadmgmt.models import StationLimits

    s1, s2, *_ = stations_of(group)
    StationLimits.objects.filter(station=s1).update(max_current=10)
    arrive(s1, minutes_ago=10)
    recompute(tenants.a.pk)
    accept_all()
    recompute(tenants.a.pk)
    assert limit(leases(s1).last()) == (10.0, 3)
    StationLimits.objects.filter(station=s1).update(max_current=8)
    StationLimits.objects.filter(station=s2).update(max_current=16)
    arrive(s2)
    report = recompute(tenants.a.pk)
    assert report.sent_decreases == 1 and report.sent_increases == 1
    assert not report.increases_held
    assert leases(s1).last().status == "pending"  # unanswered, yet:
    assert limit(leases(s2).last()) == (16.0, 3)


def stations_answer_while_the_recompute_waits(monkeypatch):
    """Every pending lease is accepted as soon as the recompute waits for the decreases."""
    from loadmgmt import recompute as module

    real_answers = module._answers

    def answered(ids):
        accept_all()
        return real_answers(ids)

    monkeypatch.setattr(module, "_answers", answered)


def test_increases_follow_at_once_when_the_decrease_is_accepted_in_time(
    tenants, group, settings, monkeypatch
):
    s1, s2, *_ = stations_of(group)
    arrive(s1, minutes_ago=10)
    recompute(tenants.a.pk)
    accept_all()
    arrive(s2)
    stations_answer_while_the_recompute_waits(monkeypatch)
    report = recompute(tenants.a.pk)
    assert report.sent_decreases == 1 and report.sent_increases == 1
    assert limit(leases(s2).last()) == (16.0, 3)


def test_renewals_go_out_after_the_changes(tenants, group, monkeypatch):
    """A car's arrival waits for no lease renewal: the unchanged setpoints whose leases are
    half over are re-sent after the decreases and the increases."""
    s1, s2, s3, s4 = stations_of(group)
    arrive(s1, minutes_ago=10)
    recompute(tenants.a.pk)
    accept_all()
    recompute(tenants.a.pk)  # the answers are read
    half_over = timezone.now() + timedelta(seconds=10)
    ConnectorSetpoint.objects.update(accepted_valid_to=half_over, sent_valid_to=half_over)
    arrive(s2)
    stations_answer_while_the_recompute_waits(monkeypatch)
    first = StationCommand.objects.order_by("-pk").values_list("pk", flat=True).first()
    from loadmgmt import conf
    from loadmgmt import recompute as recompute_module

    sends = []
    real = recompute_module.commands_send_bulk
    monkeypatch.setattr(
        recompute_module,
        "commands_send_bulk",
        lambda items, **kw: (
            sends.append((len(items), kw.get("spread_seconds"))) or real(items, **kw)
        ),
    )
    report = recompute(tenants.a.pk)
    assert (report.sent_decreases, report.sent_increases, report.renewed) == (1, 1, 2)
    # Changes go out at once; renewals may be spread over a cycle (or a sixth of a lease).
    spread = conf.renewal_spread_seconds()
    assert spread == min(conf.cycle_seconds(), conf.lease_seconds() / 6) > 0
    assert sends == [(1, 0.0), (1, 0.0), (2, spread)]
    sent = list(leases().filter(pk__gt=first).values_list("station_id", flat=True))
    assert sent[:2] == [s1.pk, s2.pk]  # the decrease, then the increase
    assert sorted(sent[2:]) == sorted([s3.pk, s4.pk])  # then the renewals (0 A, idle)
    assert [limit(c) for c in leases().filter(pk__gt=first)] == [(16.0, 3), (16.0, 3)] + [
        (0.0, 3)
    ] * 2


def test_a_rejecting_station_is_counted_at_its_last_accepted_limit(tenants, group):
    s1, s2, *_ = stations_of(group)
    arrive(s1, minutes_ago=10)
    recompute(tenants.a.pk)
    accept_all()  # s1 accepted 32 A
    arrive(s2)
    recompute(tenants.a.pk)  # s1 asked down to 16 A ...
    StationCommand.objects.filter(status="pending", station=s1).update(
        status="rejected", finished_at=timezone.now()
    )
    accept_all()
    recompute(tenants.a.pk)
    state = ConnectorSetpoint.objects.get(station=s1)
    assert state.unresponsive_since is not None and state.unresponsive_status == "rejected"
    # The live view tells a refusal from silence: no smart charging at this station.
    html = tenants.client(tenants.viewer_a).get("/o/alpha/load/").content.decode()
    assert "refuses charging profiles: no smart charging" in html
    assert "not answering" not in html
    # s1 may still draw 32 A: nothing is left for s2 on a 32 A line.
    assert ConnectorSetpoint.objects.get(station=s2).target_current == 0
    # s1 is offered its fail-safe again; once it accepts, it takes part again.
    assert limit(leases(s1).last()) == (6.0, 3)
    # It times out instead: that is silence, not a refusal.
    StationCommand.objects.filter(status="pending", station=s1).update(
        status="timed_out", finished_at=timezone.now()
    )
    recompute(tenants.a.pk)
    assert ConnectorSetpoint.objects.get(station=s1).unresponsive_status == "timed_out"
    html = tenants.client(tenants.viewer_a).get("/o/alpha/load/").content.decode()
    assert "not answering" in html and "no smart charging" not in html
    recompute(tenants.a.pk)  # offered its fail-safe again
    accept_all()
    recompute(tenants.a.pk)
    state = ConnectorSetpoint.objects.get(station=s1)
    assert state.unresponsive_since is None and state.unresponsive_status == ""


def test_offline_station_counted_at_its_lease_until_it_ends(tenants, group):
    s1, s2, *_ = stations_of(group)
    arrive(s1, minutes_ago=10)
    recompute(tenants.a.pk)
    accept_all()
    s1.online = False
    s1.save()
    arrive(s2)
    recompute(tenants.a.pk)
    assert ConnectorSetpoint.objects.get(station=s2).target_current == 0
    later = timezone.now() + timedelta(minutes=5)  # the lease ended: s1 at its fail-safe 6 A
    recompute(tenants.a.pk, now=later)
    assert ConnectorSetpoint.objects.get(station=s2).target_current == 26


def test_shedding_input_sheds_the_whole_group(tenants, group):
    s1, s2, s3, _ = stations_of(group)
    arrive(s1)
    arrive(s2)
    limits = s3.load_limits
    limits.shedding_inputs = "in1_in2"
    limits.save()
    hooks.station_event(
        StationEvent("inputs", s3.pk, tenants.a.pk, data={"in1": True, "in2": True})
    )
    assert StationInputs.objects.get(station=s3).in1
    recompute(tenants.a.pk)
    targets = ConnectorSetpoint.objects.filter(station__in=[s1, s2])
    assert [t.target_current for t in targets] == [0, 0]
    assert all("inputs of" in t.reason for t in targets), [t.reason for t in targets]
    hooks.station_event(
        StationEvent("inputs", s3.pk, tenants.a.pk, data={"in1": False, "in2": False})
    )
    recompute(tenants.a.pk)
    assert {t.target_current for t in ConnectorSetpoint.objects.filter(station=s1)} == {16}


def test_boot_sends_the_fail_safe_profile_and_forces_renewal(tenants, group):
    s1 = stations_of(group)[0]
    arrive(s1)
    recompute(tenants.a.pk)
    accept_all()
    hooks.station_event(StationEvent("boot", s1.pk, tenants.a.pk))
    fail_safe = leases(s1).last().payload
    assert fail_safe["csChargingProfiles"]["stackLevel"] == 0
    assert "validTo" not in fail_safe["csChargingProfiles"]
    assert limit(leases(s1).last()) == (6.0, 3)
    assert tenants.a.pk in tasks._due  # embedded default: marked for the next second
    accept_all()
    before = leases(s1).count()
    recompute(tenants.a.pk)
    assert leases(s1).count() == before + 1  # the setpoint is sent again


@pytest.mark.parametrize(
    ("failure_action", "limits", "online", "expected"),
    [
        ("fail_safe", True, True, ("pending", 6.0)),
        ("stop", True, True, ("pending", 0.0)),  # the group says stop: 0 A whatever the limit
        ("fail_safe", False, True, ("pending", 0.0)),  # no limits set: the default, 0 A
        ("fail_safe", True, False, ("offline", 6.0)),  # gone meanwhile: recorded, not sent
    ],
)
def test_the_fail_safe_at_boot_follows_group_limits_and_connection(
    tenants, booted, failure_action, limits, online, expected
):
    s1 = stations_of(booted)[0]
    booted.failure_action = failure_action
    booted.save()
    if not limits:
        s1.load_limits.delete()
    s1.online = online
    s1.save()
    hooks.station_event(StationEvent("boot", s1.pk, tenants.a.pk))
    command = leases(s1).get()
    assert (command.status, limit(command)[0]) == expected
    assert command.payload["csChargingProfiles"]["stackLevel"] == 0


def test_events_of_stations_outside_groups_are_ignored(tenants):
    from tests.stations.factories import StationFactory

    station = StationFactory(organization=tenants.a)
    hooks.station_event(StationEvent("boot", station.pk, tenants.a.pk))
    assert not StationCommand.objects.exists() and not tasks._due


def test_one_recompute_at_a_time_and_a_burst_gives_one(tenants, group):
    cache.add(tasks._lock_key(tenants.a.pk), "someone", timeout=60)
    assert tasks.recompute_locked(tenants.a.pk) is None
    assert tasks._due == {tenants.a.pk: {tasks.WHOLE}}  # it runs again once the other is done
    cache.delete(tasks._lock_key(tenants.a.pk))
    for _ in range(50):
        tasks.recompute_soon(tenants.a.pk)
    assert tasks.loadmgmt_due() == 1 and tasks.loadmgmt_due() == 0


def test_configuration_change_triggers_a_recompute(
    tenants, group, django_capture_on_commit_callbacks
):
    from loadmgmt.services import group_update

    tasks._due.clear()
    with django_capture_on_commit_callbacks(execute=True):
        group_update(group=group, max_current=40)
    assert tenants.a.pk in tasks._due


def test_live_view_shows_loads_setpoints_reasons_and_the_chart(tenants, booted):
    s1, s2, s3, _ = stations_of(booted)
    arrive(s1)
    arrive(s2)
    limits = s3.load_limits
    limits.shedding_inputs = "in2"
    limits.save()
    recompute(tenants.a.pk)
    html = tenants.client(tenants.viewer_a).get("/o/alpha/load/").content.decode()
    assert "<polyline" not in html and "The chart fills" in html  # one sample: no line yet
    recompute(tenants.a.pk, now=timezone.now() + timedelta(seconds=40))
    html = tenants.client(tenants.viewer_a).get("/o/alpha/load/").content.decode()
    assert 'id="load-live"' in html and 'id="load-chart"' in html
    assert "16 A × 3" in html  # each car's setpoint, with its power
    assert "11.0 kW" in html
    assert "<polyline" in html  # the chart has the sample just taken
    # Shedding shows with its source and the time it began.
    hooks.station_event(
        StationEvent("inputs", s3.pk, tenants.a.pk, data={"in1": False, "in2": True})
    )
    recompute(tenants.a.pk)
    html = tenants.client(tenants.viewer_a).get("/o/alpha/load/").content.decode()
    assert "shed to the minimum" in html and "since" in html and s3.charge_point_id in html
    chart = tenants.client(tenants.viewer_a).get("/o/alpha/load/chart/")
    assert chart.status_code == 200 and b"<svg" in chart.content


def test_recompute_pushes_the_live_fragment_while_a_browser_watches(tenants, group, monkeypatch):
    from portal.live import watching

    pushed = []
    monkeypatch.setattr(
        "portal.live.push", lambda group, event, **kw: pushed.append((group, event, kw))
    )
    arrive(stations_of(group)[0])
    recompute(tenants.a.pk)
    assert pushed == []  # nobody looks: nothing rendered, the summary is stored for page loads
    assert live.summary_get(tenants.a.pk) is not None
    watching(tenants.a.pk)
    arrive(stations_of(group)[1])
    recompute(tenants.a.pk)
    [(_group, event, kw)] = pushed
    assert event == "load.changed" and 'id="load-live"' in kw["fragments"]["load-live"]


def test_with_a_broker_a_burst_of_recomputes_is_pushed_once_then_its_newest_state(
    tenants, group, settings, monkeypatch
):
    from portal.live import watching

    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.LOADMGMT_LIVE_PUSH_SECONDS = 5.0
    watching(tenants.a.pk)
    pushed, scheduled = [], []
    monkeypatch.setattr(
        "portal.live.push", lambda group, event, **kw: pushed.append(kw["fragments"]["load-live"])
    )
    monkeypatch.setattr(
        tasks.loadmgmt_live_push, "apply_async", lambda args, **kw: scheduled.append((args, kw))
    )
    first, second, third = stations_of(group)[:3]
    arrive(first)
    recompute(tenants.a.pk)  # pushed at once
    arrive(second)
    recompute(tenants.a.pk)  # within the interval: one trailing push scheduled
    arrive(third)
    recompute(tenants.a.pk)  # merged into the same trailing push
    assert len(pushed) == 1
    assert scheduled == [((tenants.a.pk,), {"countdown": 5.0})]
    newest = live.fragment(tenants.a, live.summary_get(tenants.a.pk))
    assert newest != pushed[0]
    tasks.loadmgmt_live_push(tenants.a.pk)  # the worker runs it 5 s later
    assert pushed[1:] == [newest]
    # The interval starts again: the next change is merged into a new trailing push.
    recompute(tenants.a.pk)
    assert len(pushed) == 2 and len(scheduled) == 2


@pytest.fixture
def scheduled(settings, monkeypatch) -> list[tuple]:
    """With a broker: the recompute tasks scheduled (their arguments), none run."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    sent: list[tuple] = []
    monkeypatch.setattr(
        tasks.loadmgmt_recompute, "apply_async", lambda args, **kw: sent.append(args)
    )
    return sent


def test_with_a_broker_a_change_during_a_recompute_runs_it_again_at_once(
    tenants, scheduled, monkeypatch
):
    runs = []

    def fake_recompute(organization_id, **_scope):
        runs.append(organization_id)
        if len(runs) == 1:  # an event arrives while the first run works
            tasks.recompute_soon(organization_id)

    monkeypatch.setattr("loadmgmt.recompute.recompute", fake_recompute)
    for _ in range(10):  # a burst: one task scheduled
        tasks.recompute_soon(tenants.a.pk)
    assert scheduled == [(tenants.a.pk,)]
    tasks.loadmgmt_recompute(tenants.a.pk)
    assert runs == [tenants.a.pk, tenants.a.pk]  # again at once, not via a new task
    assert not cache.get(tasks._lock_key(tenants.a.pk))
    # Another worker holding the lock: this one leaves, the holder runs for the change.
    cache.add(tasks._lock_key(tenants.a.pk), "other", timeout=60)
    tasks.recompute_soon(tenants.a.pk)
    assert tasks.recompute_locked(tenants.a.pk) is None and len(runs) == 2
    assert tasks.dirty(tenants.a.pk)


def test_events_during_a_scheduled_recompute_schedule_no_task_of_their_own(
    tenants, scheduled, monkeypatch
):
    """A reconnect storm: the events during a recompute are merged into its next run. Each
    used to schedule a task that found the lock taken and did nothing."""
    runs = []

    def fake_recompute(organization_id, **_scope):
        runs.append(organization_id)
        if len(runs) == 1:
            for _ in range(5):  # stations booting while it works
                tasks.recompute_soon(organization_id)

    monkeypatch.setattr("loadmgmt.recompute.recompute", fake_recompute)
    tasks.recompute_soon(tenants.a.pk)
    assert len(scheduled) == 1
    tasks.loadmgmt_recompute(tenants.a.pk)
    assert len(runs) == 2 and len(scheduled) == 1
    # Done: the next event schedules the next task itself.
    tasks.recompute_soon(tenants.a.pk)
    assert len(scheduled) == 2


def test_a_failed_recompute_leaves_the_next_event_free_to_schedule(tenants, scheduled, monkeypatch):
    def broken(organization_id, **_scope):
        raise RuntimeError("database away")

    monkeypatch.setattr("loadmgmt.recompute.recompute", broken)
    tasks.recompute_soon(tenants.a.pk)
    with pytest.raises(RuntimeError):
        tasks.loadmgmt_recompute(tenants.a.pk)
    tasks.recompute_soon(tenants.a.pk)
    assert len(scheduled) == 2


def test_a_task_finding_the_lock_taken_leaves_the_next_event_free_to_schedule(
    tenants, scheduled, monkeypatch
):
    """The holder may be the periodic cycle, which owns no scheduled mark: an event during
    it must still get a task (it runs after the holder, or the holder reruns for it)."""
    cache.add(tasks._lock_key(tenants.a.pk), "the cycle", timeout=60)
    tasks.recompute_soon(tenants.a.pk)
    assert tasks.loadmgmt_recompute(tenants.a.pk) == 0
    tasks.recompute_soon(tenants.a.pk)
    assert len(scheduled) == 2


def _rerun_once(tenants, settings, monkeypatch, spend, report=None) -> tuple[list, list]:
    """Run a task whose recompute ``spend()``s and sees a change meanwhile once: (runs,
    rests)."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    if not hasattr(settings, "LOADMGMT_RERUN_GATHER_SECONDS"):
        settings.LOADMGMT_RERUN_GATHER_SECONDS = 0.0  # the pace alone (tested below)
    monkeypatch.setattr(tasks.loadmgmt_recompute, "apply_async", lambda args, **kw: None)
    rests, runs = [], []
    monkeypatch.setattr(tasks.time, "sleep", rests.append)

    def fake_recompute(organization_id, **_scope):
        runs.append(organization_id)
        spend()
        if len(runs) == 1:
            tasks.recompute_soon(organization_id)  # a change meanwhile: run again
        return report

    monkeypatch.setattr("loadmgmt.recompute.recompute", fake_recompute)
    tasks.recompute_soon(tenants.a.pk)
    tasks.loadmgmt_recompute(tenants.a.pk)
    return runs, rests


def _burn_cpu(seconds: float = 0.03) -> None:
    burn_until = time.thread_time() + seconds
    while time.thread_time() < burn_until:  # CPU, as a big recompute spends it
        pass


def _wait(seconds: float = 0.05) -> None:
    threading.Event().wait(seconds)  # the clock runs, this thread computes nothing


@pytest.mark.parametrize(("pace_from", "paced"), [(0.01, True), (10.0, False)])
def test_a_costly_recompute_rests_before_it_runs_again(
    tenants, settings, monkeypatch, pace_from, paced
):
    """An organization of thousands of stations in a reconnect storm: each rerun first rests
    as long as the last run took, so that it keeps at most half of its worker thread."""
    settings.LOADMGMT_RERUN_PACE_FROM_SECONDS = pace_from
    runs, rests = _rerun_once(tenants, settings, monkeypatch, _burn_cpu)
    assert len(runs) == 2
    if paced:
        assert len(rests) == 1 and rests[0] >= 0.03
    else:
        assert rests == []


def test_the_rest_is_as_long_as_the_recompute_took_on_the_clock_not_its_cpu(
    tenants, settings, monkeypatch
):
    """In a storm a recompute waits for the interpreter lock, PostgreSQL and the cores far
    longer than it computes (70 ms of CPU, 0.6 s on the clock): a rest as long as its CPU
    barely spaced the reruns."""
    settings.LOADMGMT_RERUN_PACE_FROM_SECONDS = 0.02
    runs, rests = _rerun_once(tenants, settings, monkeypatch, _wait)
    assert len(runs) == 2
    assert len(rests) == 1 and rests[0] >= 0.05


def test_the_wait_for_the_decreases_answers_is_not_rested_again(tenants, settings, monkeypatch):
    """A recompute that waited for stations to accept their decreases (up to
    LOADMGMT_ACK_WAIT_SECONDS) did not load the worker meanwhile."""
    from loadmgmt.recompute import Report

    settings.LOADMGMT_RERUN_PACE_FROM_SECONDS = 0.02
    # The whole run was the wait (1 s recorded against a 0.05 s run: no margin to flake on a
    # loaded machine); without subtracting it, the 0.05 s run would be rested.
    report = Report(tenants.a.pk, steps={"send_up": 1000.0})
    runs, rests = _rerun_once(tenants, settings, monkeypatch, _wait, report)
    assert len(runs) == 2
    assert rests == []


def test_the_rest_is_at_most_half_a_cycle(tenants, settings, monkeypatch):
    settings.LOADMGMT_RERUN_PACE_FROM_SECONDS = 0.01
    settings.LOADMGMT_CYCLE_SECONDS = 0.04
    runs, rests = _rerun_once(tenants, settings, monkeypatch, _wait)
    assert len(runs) == 2
    assert rests == [0.02]


@pytest.mark.parametrize(("cycle", "rest"), [(10.0, 0.25), (0.2, 0.1)])
def test_a_quick_recompute_rests_to_gather_the_events_before_it_runs_again(
    tenants, settings, monkeypatch, cycle, rest
):
    """A recompute of one tree takes milliseconds; in a storm the next events come before it
    ends. Run again at once, it planned them one or two at a time, each paying its fixed
    part; it first waits LOADMGMT_RERUN_GATHER_SECONDS for more (at most half a cycle)."""
    settings.LOADMGMT_RERUN_GATHER_SECONDS = 0.25
    settings.LOADMGMT_CYCLE_SECONDS = cycle
    runs, rests = _rerun_once(tenants, settings, monkeypatch, lambda: None)
    assert len(runs) == 2 and rests == [rest]


def test_a_relayed_station_is_counted_at_its_installer_max_and_sent_nothing(tenants, booted):
    s1, s2, *_ = stations_of(booted)
    s1.auth_mode, s1.third_party_url = "ocpp_third_party", "wss://other.example/ocpp"
    s1.save()
    limits = s1.load_limits
    limits.installer_max, limits.max_current = 20, 20
    limits.save()
    arrive(s2)
    recompute(tenants.a.pk)
    assert not leases(s1).exists()
    assert ConnectorSetpoint.objects.get(station=s2).target_current == 12  # 32 - 20


# --- other loads under a reference meter ----------------------------------------------------


def test_other_loads_under_a_meter_are_held_at_their_highest_for_the_hold_time(settings):
    """Reading less the cars' current is the house's other load; a drop counts only once it
    lasted LOADMGMT_OTHER_LOAD_HOLD_SECONDS (the cars' meter values lag the meter)."""
    from loadmgmt.engine import model as engine
    from loadmgmt.recompute import other_load_held

    settings.LOADMGMT_OTHER_LOAD_HOLD_SECONDS = 15.0
    t0 = timezone.now()
    group = engine.Node("g1", "n1", (32.0,) * 3)
    cars = [
        engine.Station("s1", "g1", measured=(10.0, 10.0, 10.0)),
        engine.Station("s2", "g1", rotation=engine.PhaseRotation.L2_L3_L1, measured=(5.0, 0, 0)),
    ]

    def house(reading, at):
        node = engine.Node(
            "n1", None, (40.0,) * 3, measured=reading, measured_at=at.timestamp(), stale_after=60
        )
        [held, _group] = other_load_held(99, [node, group], cars, at)
        return held.measured, held.ev_measured

    # Cars: (10, 15, 10) per grid phase; other loads (20, 15, 20).
    assert house((30.0, 30.0, 30.0), t0) == ((30.0, 30.0, 30.0), (10.0, 15.0, 10.0))
    # The reading drops by 15 A (say, the cars' values lag): still counted as before.
    later = t0 + timedelta(seconds=5)
    assert house((15.0, 15.0, 15.0), later)[0] == (30.0, 30.0, 30.0)
    # A rise counts at once.
    assert house((35.0, 30.0, 30.0), t0 + timedelta(seconds=6))[0] == (35.0, 30.0, 30.0)
    # Low for longer than the hold time: the budget may grow again.
    assert house((15.0, 15.0, 15.0), t0 + timedelta(seconds=22))[0] == (15.0, 15.0, 15.0)
    # A stale reading is left to the engine's fallback.
    stale = engine.Node("n1", None, (40.0,) * 3, measured=(1.0,) * 3, measured_at=0.0)
    assert other_load_held(99, [stale, group], cars, t0)[0] is stale


def test_a_cars_lagging_meter_values_count_at_most_what_its_station_applies(tenants, booted):
    """A sample taken before the station came down from 16 A to 8 A counts as 8 A: counting
    it at 16 A would make the other loads under a meter look 8 A smaller than they are."""
    from loadmgmt.recompute import inputs_build
    from stations.models import MeterSample

    s1 = stations_of(booted)[0]
    arrive(s1, minutes_ago=10)
    session = ChargingSession.objects.get(station=s1)
    MeterSample.objects.create(
        station=s1,
        connector_id=1,
        session=session,
        time=timezone.now() - timedelta(seconds=20),
        current_l1=16.0,
        current_l2=16.0,
        current_l3=16.0,
    )
    ConnectorSetpoint.objects.create(
        station=s1,
        connector_id=1,
        accepted_current=8,
        accepted_phases=1,
        accepted_valid_to=timezone.now() + timedelta(seconds=30),
    )
    inputs = inputs_build(tenants.a, timezone.now())
    [station] = [s for s in inputs.stations if s.id == f"s{s1.pk}c1"]
    assert station.measured == (8.0, 0.0, 0.0)


def test_a_station_whose_lease_ended_counts_at_its_fail_safe(tenants, booted):
    """No renewal reached it (the worker was down): it is back on its fail-safe profile, here
    6 A on three phases, whatever its lapsed lease said (0 A). After a reconnect, when it is
    unknown whether the lease is still in force, the larger of both counts."""

    s1 = stations_of(booted)[0]
    ConnectorSetpoint.objects.create(
        station=s1,
        connector_id=1,
        accepted_current=0,
        accepted_phases=3,
        accepted_valid_to=timezone.now() - timedelta(seconds=1),
    )
    station = counted(tenants, s1)
    assert (station.setpoint.current, station.setpoint.phases) == (6, 3)
    ConnectorSetpoint.objects.update(accepted_current=16, accepted_phases=1, accepted_valid_to=None)
    station = counted(tenants, s1)
    assert (station.setpoint.current, station.setpoint.phases) == (16, 3)


def test_the_lock_is_renewed_while_a_long_recompute_runs_and_lapses_without_its_holder(
    tenants, monkeypatch
):
    import time

    monkeypatch.setattr(tasks, "LOCK_SECONDS", 1)
    monkeypatch.setattr(tasks, "LOCK_RENEW_SECONDS", 0.2)
    key = tasks._lock_key(tenants.a.pk)
    held_late = []

    def slow_recompute(organization_id, **kwargs):
        time.sleep(2.5)  # longer than LOCK_SECONDS: only the renewals keep the lock
        held_late.append(not cache.add(key, "another worker", timeout=1))

    monkeypatch.setattr("loadmgmt.recompute.recompute", slow_recompute)
    tasks.recompute_locked(tenants.a.pk)
    assert held_late == [True]
    assert not cache.get(key)  # released at the end
    # A holder that died (no renewals): the organization is free again after LOCK_SECONDS.
    cache.add(key, "killed worker", timeout=tasks.LOCK_SECONDS)
    time.sleep(1.2)
    assert cache.add(key, "next worker", timeout=1)
    cache.delete(key)


def test_renewal_thresholds_are_spread_between_40_and_60_percent_of_the_lease(settings):
    from loadmgmt.recompute import renew_below

    settings.LOADMGMT_LEASE_SECONDS = 60
    thresholds = [renew_below(station_id, 1) for station_id in range(1, 2001)]
    assert min(thresholds) >= 24 and max(thresholds) <= 36
    # Spread, not bunched: every 2-second band of the range is used by many connectors.
    bands = [sum(24 + 2 * b <= t < 26 + 2 * b for t in thresholds) for b in range(6)]
    assert min(bands) > 200, bands
    assert renew_below(7, 1) == renew_below(7, 1)  # stable per connector


def test_stations_whose_fail_safe_is_above_their_lease_fall_back_last(tenants, group, settings):
    """When the portal is gone every lease ends on its own. A station whose fail-safe (6 A)
    is above its lease (0 A: no car, or a waiting one) must not reach it while the others still
    hold theirs: its lease is one lease longer, and renewed as much earlier."""
    from loadmgmt.recompute import renew_below

    settings.LOADMGMT_LEASE_SECONDS = 60
    s1, s2, *_ = stations_of(group)
    arrive(s1)
    before = timezone.now()
    recompute(tenants.a.pk)
    accept_all()
    recompute(tenants.a.pk)

    def valid_for(station):
        command = leases(station).last()
        valid_to = command.payload["csChargingProfiles"]["validTo"]
        return (datetime.fromisoformat(valid_to.replace("Z", "+00:00")) - before).total_seconds()

    assert limit(leases(s1).last()) == (32.0, 3) and 59 <= valid_for(s1) <= 62
    assert limit(leases(s2).last()) == (0.0, 3) and 119 <= valid_for(s2) <= 122
    # Renewals keep the order: the long lease is renewed one lease earlier than the short.
    state1 = ConnectorSetpoint.objects.get(station=s1)
    state2 = ConnectorSetpoint.objects.get(station=s2)
    left = 60 + renew_below(s2.pk, 1) - 1  # just below its threshold
    ConnectorSetpoint.objects.filter(pk=state2.pk).update(
        accepted_valid_to=timezone.now() + timedelta(seconds=left)
    )
    ConnectorSetpoint.objects.filter(pk=state1.pk).update(
        accepted_valid_to=timezone.now() + timedelta(seconds=renew_below(s1.pk, 1) + 2)
    )
    sent = leases().count()
    recompute(tenants.a.pk)
    renewed = {c.station_id for c in leases()[sent:]}
    assert s2.pk in renewed and s1.pk not in renewed


@pytest.mark.parametrize(
    ("failure", "s2_gets"),
    [("timed_out", 0), ("error", 0), ("rejected", 16), ("offline", 16)],
)
def test_an_increase_without_an_answer_counts_until_its_lease_ends(
    tenants, group, failure, s2_gets
):
    """s1 was sent 32 A (up from 16 A) and no answer came: it may have applied it (the answer
    lost with the connection or the process), so a newcomer gets nothing until that lease
    ends. A station that refused the lease, or never got it, is counted at its last one."""
    from loadmgmt.models import StationLimits

    s1, s2, *_ = stations_of(group)
    StationLimits.objects.filter(station=s1).update(max_current=16)
    arrive(s1, minutes_ago=10)
    recompute(tenants.a.pk)
    accept_all()
    StationLimits.objects.filter(station=s1).update(max_current=32)
    recompute(tenants.a.pk)
    assert limit(leases(s1).last()) == (32.0, 3)
    leases(s1).filter(status="pending").update(status=failure, finished_at=timezone.now())
    arrive(s2)
    recompute(tenants.a.pk)
    assert ConnectorSetpoint.objects.get(station=s2).target_current == s2_gets
    if s2_gets == 0:  # once s1's unanswered lease has ended, it counts at its fail-safe
        later = timezone.now() + timedelta(minutes=5)
        recompute(tenants.a.pk, now=later)
        assert ConnectorSetpoint.objects.get(station=s2).target_current == 26


def test_a_lease_sent_is_recorded_even_if_the_recompute_fails_after_it(tenants, group, monkeypatch):
    """Redis or the database goes away after an increase went out: the next recompute still
    counts the station at it (the state is written with the command, not at the end)."""
    from loadmgmt import recompute as module

    s1, s2, *_ = stations_of(group)
    arrive(s1, minutes_ago=10)
    recompute(tenants.a.pk)
    accept_all()
    arrive(s2)
    stations_answer_while_the_recompute_waits(monkeypatch)
    real_record, calls = module.acknowledgements_record, []

    def record_then_fail(states, now):
        calls.append(now)
        if len(calls) == 2:  # after the increases went out
            raise ConnectionError("Redis is gone")
        real_record(states, now)

    monkeypatch.setattr(module, "acknowledgements_record", record_then_fail)
    with pytest.raises(ConnectionError):
        recompute(tenants.a.pk)
    sent = leases(s2).last()
    assert limit(sent) == (16.0, 3) and sent.status == "pending"
    state = ConnectorSetpoint.objects.get(station=s2)
    assert (state.sent_command_id, state.sent_current) == (sent.pk, 16)
    station = counted(tenants, s2)
    assert station.setpoint.current == 16


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_recompute_excludes_others_even_when_redis_lost_its_lock(tenants, monkeypatch):
    """Redis restarts empty while a recompute runs: the cache lock is gone, but the
    PostgreSQL advisory lock still keeps a second worker out; the running one goes again for
    the change that brought the second."""
    import threading

    from django.db import connection

    monkeypatch.setattr(tasks, "eager", lambda: False)
    monkeypatch.setattr(tasks.loadmgmt_recompute, "apply_async", lambda args, **kw: None)
    inside, go, runs = threading.Event(), threading.Event(), []

    def slow_recompute(organization_id, **kwargs):
        runs.append(threading.current_thread().name)
        if len(runs) == 1:
            inside.set()
            assert go.wait(10)

    monkeypatch.setattr("loadmgmt.recompute.recompute", slow_recompute)

    def first_worker():
        try:
            tasks.recompute_locked(tenants.a.pk)
        finally:
            connection.close()

    holder = threading.Thread(target=first_worker, name="first")
    holder.start()
    assert inside.wait(10)
    cache.clear()  # Redis restarted empty
    assert tasks.recompute_locked(tenants.a.pk) is None  # the second worker stays out
    go.set()
    holder.join(10)
    assert runs == ["first", "first"]  # ran again for the second's change
    tasks.recompute_locked(tenants.a.pk)  # both locks were released
    assert runs == ["first", "first", "MainThread"]


def test_just_booted_stations_count_at_their_fail_safe_until_they_accept_a_lease(tenants, booted):
    """Before a station accepted any lease it applies its fail-safe (6 A here), whatever
    lease is on its way: the first car's 32 A waits until the others accepted 0 A."""
    s1, *_ = stations_of(booted)
    arrive(s1)
    report = recompute(tenants.a.pk)
    assert report.sent_decreases == 3 and report.sent_increases == 0
    assert report.increases_held
    accept_all()
    report = recompute(tenants.a.pk)
    assert report.sent_increases == 1 and limit(leases(s1).last()) == (32.0, 3)


def test_a_lease_unanswered_when_its_station_reconnects_counts_as_accepted(tenants, group):
    """The station may have applied it and its answer was lost with the old connection: it
    counts at the larger of it and its last accepted lease until it accepts a new one."""

    s1, *_ = stations_of(group)
    arrive(s1)
    recompute(tenants.a.pk)
    assert limit(leases(s1).last()) == (32.0, 3) and leases(s1).last().status == "pending"
    hooks.station_event(StationEvent("online", s1.pk, tenants.a.pk))
    state = ConnectorSetpoint.objects.get(station=s1)
    assert (state.accepted_current, state.accepted_phases) == (32, 3)
    assert state.sent_command_id is None and state.accepted_valid_to is None
    station = counted(tenants, s1)
    assert (station.setpoint.current, station.setpoint.phases) == (32, 3)
    # A station without an unanswered lease keeps what it accepted.
    s2 = stations_of(group)[1]
    hooks.station_event(StationEvent("online", s2.pk, tenants.a.pk))
    assert ConnectorSetpoint.objects.get(station=s2).accepted_current == 0


def test_forgetting_leases_writes_only_rows_with_something_to_forget(tenants, group):
    """ONLINE and BOOT come a moment apart: the second finds nothing to forget and must not
    write (and lock) the rows again while a recompute holds them."""
    s1, *_ = stations_of(group)
    arrive(s1)
    recompute(tenants.a.pk)
    assert hooks._LEASES_FORGET.execute(s1.pk) == 1  # the unanswered lease
    assert hooks._LEASES_FORGET.execute(s1.pk) == 0  # nothing left to forget
    state = ConnectorSetpoint.objects.get(station=s1)
    assert (state.accepted_current, state.sent_command_id, state.accepted_valid_to) == (
        32,
        None,
        None,
    )
    # An accepted lease in force is forgotten as before (its end: sent again).
    accept_all()
    recompute(tenants.a.pk)
    accept_all()
    recompute(tenants.a.pk)  # reads the answers
    assert ConnectorSetpoint.objects.get(station=s1).accepted_valid_to is not None
    assert hooks._LEASES_FORGET.execute(s1.pk) == 1
    assert ConnectorSetpoint.objects.get(station=s1).accepted_valid_to is None
