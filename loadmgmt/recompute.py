"""One recompute of an organization's load management: rows → engine → setpoints → stations.

1. **Acknowledgements**: leases the stations answered since the last cycle become *accepted*;
   a rejection, an error, a timeout or an offline station marks the connector *unresponsive*.
2. **Inputs for the engine**: the tree and groups (``selectors.engine_nodes``, with the
   stations' shedding inputs shedding their whole group), one engine station per connector of
   every grouped station: car state from the connector status, arrival, the latest per-phase
   currents, the phases the car was seen drawing on, and what the station *may apply now*
   (the accepted lease, or the larger of it and an unanswered one). Offline and unresponsive
   stations are passed as offline: the engine counts them at the higher of their lease and
   their fail-safe current and sends them nothing.
3. **Plan** (``engine.allocate``) and **transition**: decreases first; each increase goes out
   as soon as the decreases acknowledged so far leave room for it on every node and phase it
   loads (``engine.transition.IncreaseGate``; at the latest when every decrease is accepted,
   waiting up to ``LOADMGMT_ACK_WAIT_SECONDS``). Unchanged setpoints are renewed when 40-60 %
   of their lease is left (``renew_below``); a station whose fail-safe is above its lease gets
   a longer one (``lease_length``).
4. **Record** targets, reasons and the node loads (samples for the chart) and push the live
   view.

A recompute covers the whole organization or only some of its trees (``scope_resolve``): a
tree is a root node, or a group under no node, with everything below it. Trees share no
fuse, so the plan of one depends on nothing outside it, and an event (a car, a boot) needs
only its own tree planned again; at a site of a hundred separate lines a station's event
then reads twenty stations instead of two thousand. The periodic cycle recomputes the whole
organization (lease renewals, time-outs, stale meters, the chart's samples).

The caller holds the organization's lock (``tasks.recompute_locked``): one recompute per
organization at a time. Every step is idempotent: running it twice sends nothing new.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from loadmgmt import conf, live, profiles, selectors
from loadmgmt.engine import model as engine
from loadmgmt.engine.allocate import allocate
from loadmgmt.engine.metering import cars_below
from loadmgmt.engine.model import Triple
from loadmgmt.engine.transition import Change, IncreaseGate, StepKind, plan_transition
from loadmgmt.models import (
    ConnectorSetpoint,
    FailureAction,
    LoadGroup,
    LoadGroupMember,
    NodeLoadSample,
    SheddingInputs,
    StationInputs,
    StationLimits,
)
from loadmgmt.tasks import WHOLE
from portal.models import Organization
from stations.commands import commands_send_bulk
from stations.models import (
    AuthMode,
    ChargingSession,
    CommandStatus,
    Connector,
    MeterSample,
    SessionStatus,
    Station,
    StationCommand,
)

log = logging.getLogger(__name__)
# A recompute taking this long is logged at INFO even when it changed nothing.
SLOW_RECOMPUTE_SECONDS = 1.0

CAR_STATE = {
    "Preparing": engine.CarState.WAITING,
    "SuspendedEVSE": engine.CarState.WAITING,
    "Charging": engine.CarState.CHARGING,
    "SuspendedEV": engine.CarState.SUSPENDED_EV,
    "Finishing": engine.CarState.FINISHED,
}
FAILED = (
    CommandStatus.REJECTED,
    CommandStatus.NOT_SUPPORTED,
    CommandStatus.ERROR,
    CommandStatus.TIMED_OUT,
    CommandStatus.OFFLINE,
)
# Failures after which the station may still have applied the lease: no answer came (a
# time-out, a connection or process lost after the call went out). A rejection, an
# unsupported call or a command never sent (offline) leave the lease unapplied.
OUTCOME_UNKNOWN = (CommandStatus.ERROR, CommandStatus.TIMED_OUT)
# A car draws on a phase when it takes more than this (meter noise stays below).
DRAWING_A = 1.0


def engine_id(station_id: int, connector_id: int) -> str:
    return f"s{station_id}c{connector_id}"


@dataclass
class Report:
    organization_id: int
    #: Whether it covered the whole organization (else only the trees of ``parts``).
    whole: bool = True
    trees: int = 0
    stations: int = 0
    sent_decreases: int = 0
    sent_increases: int = 0
    renewed: int = 0
    increases_held: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Milliseconds spent per step (for the log and the benchmark).
    steps: dict[str, float] = field(default_factory=dict)

    def mark(self, step: str, since: float) -> float:
        now = time.monotonic()
        self.steps[step] = round((now - since) * 1000, 1)
        return now


# --- 1. acknowledgements -------------------------------------------------------------------


def acknowledgements_record(states: Iterable[ConnectorSetpoint], now: datetime) -> None:
    """Fold the answers to sent leases into the states (saved by the caller)."""
    waiting = {s.sent_command_id: s for s in states if s.sent_command_id is not None}
    if not waiting:
        return
    answered = StationCommand.objects.filter(pk__in=waiting).values_list(
        "pk", "status", "finished_at"
    )
    for command_id, status, finished_at in answered:
        _answer_fold(waiting.pop(command_id), status, finished_at or now)
    # Left over: commands deleted meanwhile (station deleted, log purged): no answer will come.
    for state in waiting.values():
        state.sent_command_id = None


def _answer_fold(state: ConnectorSetpoint, status: str, at: datetime) -> None:
    if status == CommandStatus.ACCEPTED:
        state.accepted_current = state.sent_current
        state.accepted_phases = state.sent_phases
        state.accepted_valid_to = state.sent_valid_to
        state.accepted_at = at
        state.unresponsive_since = None
        state.unresponsive_status = ""
        state.sent_command_id = None
    elif status in FAILED:
        if status in OUTCOME_UNKNOWN:
            _sent_may_hold(state)
        state.unresponsive_since = state.unresponsive_since or at
        state.unresponsive_status = status
        state.sent_command_id = None


def _sent_may_hold(state: ConnectorSetpoint) -> None:
    """A lease without a known answer counts as accepted until it ends: an increase the
    station applied while its answer was lost (the process holding the connection killed, a
    time-out) would otherwise no longer be counted, and its amperes given to a neighbour."""
    if state.sent_current is None:
        return
    sent = engine.Setpoint(state.sent_current, state.sent_phases or 3)
    accepted = _accepted_setpoint(state)
    held = _larger(accepted, sent)
    if accepted is None or state.accepted_valid_to is None or state.sent_valid_to is None:
        until = state.sent_valid_to if accepted is None else None
    else:
        until = max(state.accepted_valid_to, state.sent_valid_to)
    state.accepted_current, state.accepted_phases = held.current, held.phases
    state.accepted_valid_to = until


def _accepted_setpoint(state: ConnectorSetpoint) -> engine.Setpoint | None:
    if state.accepted_current is None:
        return None
    return engine.Setpoint(state.accepted_current, state.accepted_phases or 3)


def _larger(a: engine.Setpoint | None, b: engine.Setpoint | None) -> engine.Setpoint | None:
    """A setpoint covering both (what a station may draw while either may apply)."""
    if a is None or b is None:
        return a or b
    return engine.Setpoint(max(a.current, b.current), max(a.phases, b.phases))


def may_apply(
    state: ConnectorSetpoint, *, now: datetime, fail_safe: int, keep_last: bool = False
) -> tuple[engine.Setpoint | None, datetime | None]:
    """What the station may apply now and until when (None: no expiry known).

    A lease that has ended leaves the station on its fail-safe profile (3 phases): after the
    worker was down, a station at 0 A with a 6 A fail-safe draws 6 A, and counting it at its
    lapsed lease would give those amperes to its neighbours. After a boot or a reconnect it
    is unknown whether the lease is still in force: the larger of both counts."""
    fallback = engine.Setpoint(fail_safe, 3)
    accepted = _accepted_setpoint(state)
    until = state.accepted_valid_to
    if accepted is None and not keep_last:
        # No lease accepted yet: the station applies its fail-safe profile (sent at every
        # boot). Counted at 0 A instead, a lease on its way to it (a renewal waiting for its
        # moment) hid the fail-safe's current, and a neighbour was given it: 6 A + 32 A on
        # a 32 A line at the start of a fault test.
        accepted = fallback
    elif accepted is not None and not keep_last:
        if until is None:
            accepted = _larger(accepted, fallback)
        elif until <= now:
            accepted, until = fallback, None
    if state.sent_command_id is not None and state.sent_current is not None:
        sent = engine.Setpoint(state.sent_current, state.sent_phases or 3)
        accepted = _larger(accepted, sent)
        if until is not None and state.sent_valid_to is not None:
            until = max(until, state.sent_valid_to)
        elif state.sent_valid_to is None:
            until = None
    return accepted, until


# --- 2. inputs -----------------------------------------------------------------------------


def _group_shedding(
    organization: Organization, group_ids: list[int] | None = None
) -> dict[str, tuple[engine.ShedMode, str]]:
    """Groups shed by one of their stations' inputs: engine node id → (mode, who)."""
    limits = StationLimits.objects.for_tenant(organization).exclude(
        shedding_inputs=SheddingInputs.NONE
    )
    if group_ids is not None:
        limits = limits.filter(station__load_group_member__group_id__in=group_ids)
    wired = {lim.station_id: lim for lim in limits}
    if not wired:
        return {}
    shed: dict[str, tuple[engine.ShedMode, str]] = {}
    members = dict(
        LoadGroupMember.objects.filter(station_id__in=wired).values_list("station_id", "group_id")
    )
    for inputs in StationInputs.objects.filter(station_id__in=wired).select_related("station"):
        lim = wired[inputs.station_id]
        if lim.shedding_inputs == SheddingInputs.IN1_IN2:
            active, mode = inputs.in1 or inputs.in2, engine.ShedMode.TO_ZERO
        else:
            active, mode = inputs.in2, engine.ShedMode.TO_MIN
        group_id = members.get(inputs.station_id)
        if not active or group_id is None:
            continue
        key = f"g{group_id}"
        who = f"inputs of {inputs.station.charge_point_id}"
        previous = shed.get(key)
        if previous is None or mode is engine.ShedMode.TO_ZERO:
            shed[key] = (mode, who)
    return shed


def _latest_sample_columns() -> dict[str, Subquery]:
    """Per session: (time, L1, L2, L3) of its latest meter sample with currents, as
    annotations of the sessions query (one query for all running sessions)."""
    latest = MeterSample.objects.filter(session_id=OuterRef("pk"), current_l1__isnull=False)
    latest = latest.order_by("-time", "-id")
    return {
        "s_time": Subquery(latest.values("time")[:1]),
        "s_l1": Subquery(latest.values("current_l1")[:1]),
        "s_l2": Subquery(latest.values("current_l2")[:1]),
        "s_l3": Subquery(latest.values("current_l3")[:1]),
    }


@dataclass(frozen=True)
class StationRow:
    """What the recompute needs of a grouped station (read as a plain row)."""

    pk: int
    online: bool
    name: str
    charge_point_id: str
    auth_mode: str

    @property
    def label(self) -> str:
        return self.name or self.charge_point_id  # as Station.label

    def instance(self) -> Station:
        """For the command channel (it needs the station and whether it is online)."""
        return Station(
            pk=self.pk,
            online=self.online,
            name=self.name,
            charge_point_id=self.charge_point_id,
            auth_mode=self.auth_mode,
        )


@dataclass
class Inputs:
    nodes: list[engine.Node]
    stations: list[engine.Station]
    states: dict[str, ConnectorSetpoint]
    station_rows: dict[int, StationRow]
    keep_last: set[str]
    fail_safes: dict[str, int] = dataclasses.field(default_factory=dict)


def inputs_build(
    organization: Organization,
    now: datetime,
    existing: dict[tuple[int, int], ConnectorSetpoint] | None = None,
    *,
    nodes: list[engine.Node] | None = None,
    group_ids: list[int] | None = None,
) -> Inputs:
    """The engine's inputs for the whole organization, or (``group_ids``) for the trees of
    these groups, whose engine ``nodes`` the caller read (``scope_resolve``)."""
    settings = selectors.engine_station_settings(organization, group_ids=group_ids)
    shed = _group_shedding(organization, group_ids)
    if nodes is None:
        nodes = selectors.engine_nodes(organization, now=now)
    nodes = [
        dataclasses.replace(n, shed=shed[n.id][0], shed_source=shed[n.id][1])
        if n.id in shed and n.shed is engine.ShedMode.NONE
        else n
        for n in nodes
    ]
    groups = LoadGroup.objects.for_tenant(organization)
    if group_ids is not None:
        groups = groups.filter(pk__in=group_ids)
    failure = dict(groups.values_list("pk", "failure_action"))
    # The grouped stations by a join, not by a list of their ids: at 10,000 stations
    # building and sending 10,000 parameters per query cost more than the plan. Plain
    # tuples, not model instances, for the same reason.
    grouped = _grouped(organization, group_ids)
    rows = Station.objects.filter(organization=organization)
    if group_ids is None:
        rows = rows.filter(load_group_member__isnull=False)
    else:
        rows = rows.filter(load_group_member__group_id__in=group_ids)
    station_rows = {
        row[0]: StationRow(*row)
        for row in rows.values_list("pk", "online", "name", "charge_point_id", "auth_mode")
    }
    connectors = list(
        Connector.objects.filter(**grouped)
        .order_by("station_id", "connector_id")
        .values_list("station_id", "connector_id", "status", "status_at", "updated_at")
    )
    sessions: dict[tuple[int, int], tuple] = {}
    samples: dict[int, tuple] = {}
    for pk, station_id, connector_id, started_at, *sample in (
        ChargingSession.objects.filter(**grouped, status=SessionStatus.ACTIVE)
        .annotate(**_latest_sample_columns())
        .order_by("started_at")  # the newest wins per connector
        .values_list(
            "pk", "station_id", "connector_id", "started_at", "s_time", "s_l1", "s_l2", "s_l3"
        )
    ):
        sessions[(station_id, connector_id)] = (pk, started_at)
        if sample[0] is not None:
            samples[pk] = tuple(sample)
    if existing is None:
        existing = {
            (s.station_id, s.connector_id): s for s in ConnectorSetpoint.objects.filter(**grouped)
        }
        _remember(existing.values())
    states: dict[str, ConnectorSetpoint] = {}
    stations: list[engine.Station] = []
    keep_last: set[str] = set()
    stale_sample = timedelta(seconds=3 * conf.cycle_seconds() + 60)
    for station_id, connector_id, status, status_at, updated_at in connectors:
        key = (station_id, connector_id)
        sid = engine_id(*key)
        state = existing.get(key) or ConnectorSetpoint(
            station_id=station_id, connector_id=connector_id
        )
        states[sid] = state
        kwargs = dict(settings[station_id])
        group_id = int(kwargs["parent"][1:])
        action = failure.get(group_id)
        if action == FailureAction.STOP:
            kwargs["fail_safe_current"] = 0
        if action == FailureAction.KEEP_LAST:
            keep_last.add(sid)
        session = sessions.get(key)
        session_id, started_at = session if session is not None else (None, None)
        car = CAR_STATE.get(status, engine.CarState.NO_CAR)
        if session is not None and car is engine.CarState.NO_CAR and status == "Unknown":
            car = engine.CarState.CHARGING  # a session runs: never count it as idle
        arrival_at = started_at if session else (status_at or updated_at)
        measured = None
        drawn = None
        if session is not None:
            if state.session_ref != session_id:
                state.session_ref, state.drawn_phases = session_id, ""
            sample = samples.get(session_id)
            if sample is not None and now - sample[0] <= stale_sample:
                currents = tuple(float(c or 0.0) for c in sample[1:])
                measured = currents
                # Learn the phases only under a 3-phase offer, after the car arrived.
                if (
                    state.accepted_phases == 3
                    and (state.accepted_current or 0) > 0
                    and sum(currents) > DRAWING_A
                    and sample[0] >= started_at
                ):
                    seen = {i for i, c in enumerate(currents) if c > DRAWING_A} | {0}
                    state.drawn_phases = "".join(str(i) for i in sorted(seen))
            if state.drawn_phases:
                drawn = frozenset(int(c) for c in state.drawn_phases)
        elif state.session_ref is not None:
            state.session_ref, state.drawn_phases = None, ""
        setpoint, until = may_apply(
            state, now=now, fail_safe=kwargs["fail_safe_current"], keep_last=sid in keep_last
        )
        if measured is not None and setpoint is not None:
            # The sample may be older than the station's last change: the car cannot draw
            # more than the station applies now. (Counting it higher would make the other
            # loads under a meter look smaller than they are.)
            measured = tuple(
                min(c, setpoint.current) if i < setpoint.phases else 0.0
                for i, c in enumerate(measured)
            )
        online = station_rows[station_id].online and state.unresponsive_since is None
        if station_rows[station_id].auth_mode == AuthMode.THIRD_PARTY:
            # Run by another backend (relayed): the portal cannot limit it, so it is counted
            # as an offline station that may draw up to its installer's maximum.
            kwargs["fail_safe_current"] = kwargs["installer_max"]
            online, setpoint, until = False, None, None
        if until is None and setpoint is not None:
            lease_until = math.inf if sid in keep_last or not online else None
        else:
            lease_until = until.timestamp() if until is not None else None
        stations.append(
            engine.Station(
                sid,
                state=car,
                arrival=arrival_at.timestamp() if arrival_at else None,
                drawn_phases=drawn,
                measured=measured,
                online=online,
                lease_until=lease_until,
                setpoint=setpoint,
                **kwargs,
            )
        )
    nodes = other_load_held(organization.pk, nodes, stations, now)
    fail_safes = {st.id: st.fail_safe_current for st in stations}
    return Inputs(nodes, stations, states, station_rows, keep_last, fail_safes)


def _grouped(organization: Organization, group_ids: list[int] | None) -> dict:
    """The filter of rows belonging to a grouped station (of these groups)."""
    if group_ids is None:
        return {"station__load_group_member__group__organization": organization}
    return {"station__load_group_member__group_id__in": group_ids}


def scope_resolve(
    nodes: list[engine.Node], parts: Iterable[str] | None
) -> tuple[list[engine.Node], list[int] | None]:
    """The engine nodes of the trees the ``parts`` (engine ids of groups and nodes, as the
    events marked them) belong to, and the ids of those trees' groups; all the nodes and
    ``None`` for the whole organization (``parts`` None or holding ``tasks.WHOLE``, or
    covering every tree). Parts that no longer exist (deleted meanwhile) are left out."""
    if parts is None or WHOLE in parts:
        return nodes, None
    root_of = tree_roots(nodes)
    roots = {root_of[part] for part in parts if part in root_of}
    chosen = [n for n in nodes if root_of[n.id] in roots]
    if len(chosen) == len(nodes):
        return nodes, None
    return chosen, [int(n.id[1:]) for n in chosen if n.id.startswith("g")]


def tree_roots(nodes: list[engine.Node]) -> dict[str, str]:
    """Engine node id → the id of the root of its tree."""
    parent = {n.id: n.parent for n in nodes}
    out: dict[str, str] = {}
    for n in nodes:
        node_id, steps = n.id, 0
        # Bounded: the configuration forbids cycles, but a bad row must not hang the worker.
        while parent.get(node_id) is not None and steps < len(parent):
            node_id, steps = parent[node_id], steps + 1
        out[n.id] = node_id
    return out


def _other_key(organization_id: int) -> str:
    return f"loadmgmt:other-load:{organization_id}"


def other_load_held(
    organization_id: int, nodes: list[engine.Node], stations: list[engine.Station], now: datetime
) -> list[engine.Node]:
    """Metered nodes with their other loads (reading less the cars' current below) held at
    the highest of the last ``LOADMGMT_OTHER_LOAD_HOLD_SECONDS``.

    The cars' current is known from their meter values, which lag the node's meter: right
    after the cars change (a setpoint, a phase switch) the difference is wrong for a few
    seconds, and a budget following it would swing and overload the fuse. Held, the budget
    falls at once when other loads rise and rises only once they stayed low for the hold
    time. The history lives in the cache (one recompute per organization at a time)."""
    ts = now.timestamp()
    fresh = [
        n
        for n in nodes
        if n.measured is not None
        and n.measured_at is not None
        and ts - n.measured_at <= n.stale_after
    ]
    if not fresh:
        return nodes
    hold = conf.other_load_hold_seconds()
    cars = cars_below(nodes, stations)
    history: dict[str, list[tuple[float, Triple]]] = cache.get(_other_key(organization_id)) or {}
    replaced: dict[str, engine.Node] = {}
    for node in fresh:
        ev = cars.get(node.id, (0.0, 0.0, 0.0))
        other = tuple(max(0.0, m - e) for m, e in zip(node.measured, ev, strict=True))
        kept = [(t, o) for t, o in history.get(node.id, []) if ts - t <= hold]
        kept.append((ts, other))
        history[node.id] = kept
        held = tuple(max(o[i] for _, o in kept) for i in range(3))
        replaced[node.id] = dataclasses.replace(
            node, measured=tuple(h + e for h, e in zip(held, ev, strict=True)), ev_measured=ev
        )
    cache.set(_other_key(organization_id), history, timeout=int(hold) + 3600)
    return [replaced.get(n.id, n) for n in nodes]


# --- 3. plan and transition ---------------------------------------------------------------


def _answers(command_ids: list[int]) -> list[tuple[int, str, datetime | None]]:
    """(id, status, finished_at) of the commands that have an answer."""
    return list(
        StationCommand.objects.filter(pk__in=command_ids)
        .exclude(status=CommandStatus.PENDING)
        .values_list("pk", "status", "finished_at")
    )


def falls_back_higher(current: int | None, phases: int | None, fail_safe: int) -> bool:
    """Whether the station's fail-safe lets it draw more than this lease on some phase (the
    fail-safe counts on all three phases)."""
    if fail_safe <= 0:
        return False
    return current is None or current < fail_safe or phases != 3


def lease_length(current: int, phases: int, fail_safe: int) -> float:
    """Seconds a lease is valid. A station whose fail-safe is above its lease (a waiting car
    at 0 A, say) gets a lease one lease longer, and renews it as much earlier: when the portal
    is gone, every other station falls back first, so the fail-safe of one is never added to
    the leases of the others (seen in the worker-kill fault test: 38 A on a 32 A line when a
    waiting car's 0 A lease ended before the charging cars' ones)."""
    lease = conf.lease_seconds()
    return 2 * lease if falls_back_higher(current, phases, fail_safe) else lease


def _send(
    changes: list[tuple[ConnectorSetpoint, engine.Setpoint]],
    inputs: Inputs,
    now: datetime,
    spread_seconds: float = 0.0,
) -> list[int]:
    """Send one lease per change; records what was sent on the states. ``spread_seconds``:
    the stations' connections may start them at random within this time."""
    if not changes:
        return []
    rows, keep_last = inputs.station_rows, inputs.keep_last
    items = []
    for state, sp in changes:
        sid = engine_id(state.station_id, state.connector_id)
        valid_to = (
            None
            if sid in keep_last
            else now
            + timedelta(seconds=lease_length(sp.current, sp.phases, inputs.fail_safes.get(sid, 0)))
        )
        payload = profiles.lease_payload(
            profiles.Lease(state.connector_id, sp.current, sp.phases, valid_to)
        )
        items.append((rows[state.station_id].instance(), "SetChargingProfile", payload))
        state.sent_current, state.sent_phases = sp.current, sp.phases
        state.sent_valid_to, state.sent_at = valid_to, now
    with transaction.atomic():
        # Built by loadmgmt.profiles, valid by construction (tests/loadmgmt/test_profiles.py).
        commands = commands_send_bulk(items, schema_checked=True, spread_seconds=spread_seconds)
        for (state, _sp), command in zip(changes, commands, strict=True):
            state.sent_command_id = command.pk
        # Recorded with the commands, before any station hears of them (they are sent after
        # the commit): a recompute that fails later (Redis or the database gone) must not
        # leave a lease out there that the next one does not count.
        _save([state for state, _sp in changes])
    return [c.pk for c in commands if c.status == CommandStatus.PENDING]


def _increases_send(
    gate: IncreaseGate,
    down: list[Change],
    pending: list[int],
    states: dict[str, ConnectorSetpoint],
    inputs: Inputs,
    seconds: float,
) -> int:
    """Send every increase as soon as the gate lets it through (see
    ``engine.transition.IncreaseGate``), polling the decreases' answers for up to ``seconds``.
    Returns how many went out; the gate keeps those still held."""
    sent = 0

    def release() -> None:
        nonlocal sent
        ready = gate.ready()
        if ready:
            _send([(states[c.station_id], c.after) for c in ready], inputs, timezone.now())
            sent += len(ready)

    release()
    station_of = {
        states[c.station_id].sent_command_id: c.station_id
        for c in down
        if states[c.station_id].sent_command_id in pending
    }
    deadline = time.monotonic() + seconds
    while station_of and gate.waiting:
        answered = _answers(list(station_of))
        for command_id, status, finished_at in answered:
            sid = station_of.pop(command_id)
            # Folded now: the station's own increase may go out next and replaces sent_*.
            _answer_fold(states[sid], status, finished_at or timezone.now())
            if status == CommandStatus.ACCEPTED:
                gate.acknowledged(sid)
        if answered:
            release()
        elif time.monotonic() >= deadline:
            break
        else:
            time.sleep(0.005)
    return sent


def _idle_at_fail_safe_zero(station: engine.Station, previous: engine.Setpoint) -> bool:
    """0 A wanted where the fail-safe is 0 A too: when the lease ends the station falls back
    to exactly that, so renewing it would only add traffic (most connectors are idle)."""
    return previous.current == 0 and station.fail_safe_current == 0


def _needs_renewal(
    state: ConnectorSetpoint, now: datetime, keep_last: bool, fail_safe: int
) -> bool:
    if state.sent_command_id is not None:
        return False  # an answer is still awaited
    if keep_last:
        return state.sent_at is None
    if state.accepted_valid_to is None:
        return True
    # A longer lease (see lease_length) is renewed as much earlier: its holder stays last.
    extra = (
        conf.lease_seconds()
        if falls_back_higher(state.accepted_current, state.accepted_phases, fail_safe)
        else 0.0
    )
    left = (state.accepted_valid_to - now).total_seconds()
    return left < extra + renew_below(state.station_id, state.connector_id)


def renew_below(station_id: int, connector_id: int) -> float:
    """Seconds of lease left below which a lease is renewed: between 40 % and 60 % of the
    lease, fixed per connector. With one threshold for all, leases sent together (a fleet
    after a restart) were renewed together for good: thousands of profiles in one cycle, then
    none; spread thresholds spread the renewals over the cycles. 40 % of the 60 s lease still
    leaves two 10 s cycles before a lease could end."""
    spread = ((station_id * 7919 + connector_id * 104_729) % 1000) / 1000
    return conf.lease_seconds() * (0.4 + 0.2 * spread)


def recompute(
    organization_id: int, *, now: datetime | None = None, parts: Iterable[str] | None = None
) -> Report:
    """Recompute the organization, or only the trees of ``parts`` (engine ids of groups and
    nodes; None or ``tasks.WHOLE``: everything)."""
    started = time.monotonic()
    now = now or timezone.now()
    report = Report(organization_id)
    organization = Organization.objects.get(pk=organization_id)
    nodes, group_ids = scope_resolve(selectors.engine_nodes(organization, now=now), parts)
    report.whole = group_ids is None
    if not report.whole and not nodes:
        return report  # the parts are gone (deleted meanwhile): nothing to plan
    if report.whole:
        # With the states of stations no longer in a group: their answers are still folded.
        setpoints = ConnectorSetpoint.objects.filter(station__organization_id=organization_id)
    else:
        setpoints = ConnectorSetpoint.objects.filter(**_grouped(organization, group_ids))
    existing = {(s.station_id, s.connector_id): s for s in setpoints}
    _remember(existing.values())
    acknowledgements_record(existing.values(), now)
    tick = report.mark("acks", started)
    inputs = inputs_build(organization, now, existing, nodes=nodes, group_ids=group_ids)
    tick = report.mark("inputs", tick)
    report.stations = len(inputs.stations)
    if not inputs.stations and not inputs.nodes:
        _save(existing.values())
        return report
    plan = allocate(inputs.nodes, inputs.stations, now.timestamp())
    tick = report.mark("plan", tick)
    report.warnings = list(plan.warnings)
    states = inputs.states
    for sid, allocation in plan.allocations.items():
        state = states[sid]
        decided = (
            allocation.current,
            allocation.phases,
            allocation.decision.value,
            allocation.reason[:200],
        )
        if decided != (state.target_current, state.target_phases, state.decision, state.reason):
            state.target_current, state.target_phases, state.decision, state.reason = decided
            state.updated_at = now

    online = {s.id: s for s in inputs.stations if s.online}
    previous = {sid: st.setpoint or engine.OFF for sid, st in online.items()}
    target = plan.setpoints()
    transition = plan_transition(previous, target)
    down = [c for step in transition.steps if step.kind is StepKind.DECREASE for c in step.changes]
    up = [c for step in transition.steps if step.kind is StepKind.INCREASE for c in step.changes]
    decreases = [(states[c.station_id], c.after) for c in down]
    increases = [(states[c.station_id], c.after) for c in up]
    changing = {id(s) for s, _ in decreases} | {id(s) for s, _ in increases}
    renewals = [
        (state, previous[sid])
        for sid, state in states.items()
        if sid in online
        and id(state) not in changing
        and sid in target
        and not _idle_at_fail_safe_zero(online[sid], previous[sid])
        and _needs_renewal(state, now, sid in inputs.keep_last, inputs.fail_safes.get(sid, 0))
    ]
    # Unresponsive but connected: offer the fail-safe current again (never more than what
    # the station is counted at); once accepted, it takes part in the next plan.
    retries = []
    for st in inputs.stations:
        state = states[st.id]
        if (
            state.unresponsive_since is not None
            and inputs.station_rows[state.station_id].online
            and state.sent_command_id is None
        ):
            retries.append((state, engine.Setpoint(st.fail_safe_current, 3)))
    # Renewals and retries keep a setpoint as it is (the lease has 40-60 % of its time left):
    # they go out after the changes, so that a car's arrival waits for none of them.
    pending = _send(decreases, inputs, now)
    tick = report.mark("send_down", tick)
    report.sent_decreases, report.renewed = len(decreases), len(renewals) + len(retries)
    grouped = {id(x) for x in states.values()}
    _save([*states.values(), *(x for x in existing.values() if id(x) not in grouped)])
    if increases:
        gate = IncreaseGate(inputs.nodes, online, plan, down, up)
        report.sent_increases = _increases_send(
            gate, down, pending, states, inputs, conf.ack_wait_seconds()
        )
        tick = report.mark("send_up", tick)
        if gate.waiting:
            report.increases_held = True
            log.info("org %s: increases held until every decrease is accepted", organization_id)
    acknowledgements_record([s for s, _ in decreases], timezone.now())
    if renewals or retries:
        # Hundreds at once every cycle in a large fleet: each process holding the stations
        # would start them all together, and the stations' own messages arriving meanwhile
        # waited behind them (the slowest 1 % of a 10,000-station fleet's answers came in
        # those moments, docs/BENCHMARKS.md). Spread, they wait for nothing.
        _send(renewals + retries, inputs, timezone.now(), conf.renewal_spread_seconds())
        tick = report.mark("renew", tick)
    if decreases or increases or renewals or retries:
        _save(states.values())  # changed rows only: the answers folded since the first save
    if report.whole:
        # From the whole organization only: the chart needs every node's sample at once (the
        # last sample's time decides when the next is due), and the cycle comes often enough.
        _samples_record(organization, inputs.nodes, plan, now)
    roots = tree_roots(inputs.nodes)
    report.trees = len(set(roots.values()))
    report.seconds = time.monotonic() - started
    # A recompute that only renewed leases is routine (every tree every 10 s): DEBUG, or
    # the log is a line per organization every cycle with nothing in it for an operator.
    noteworthy = (
        report.sent_decreases
        or report.sent_increases
        or report.increases_held
        or report.seconds >= SLOW_RECOMPUTE_SECONDS
    )
    log.log(
        logging.INFO if noteworthy else logging.DEBUG,
        "org %s%s: %d stations, %d down, %d up%s, %d renewed, %.0f ms %s",
        organization_id,
        "" if report.whole else f" (trees: {report.trees})",
        report.stations,
        report.sent_decreases,
        report.sent_increases,
        " (held)" if report.increases_held else "",
        report.renewed,
        report.seconds * 1000,
        report.steps,
    )
    trees = live.trees_build(
        organization_id,
        inputs.nodes,
        roots,
        plan,
        states,
        {st.id: roots.get(st.parent, "") for st in inputs.stations},
        {pk: s.label for pk, s in inputs.station_rows.items()},
        now,
    )
    live.publish(
        organization,
        trees,
        report.whole,
        {
            "stations": report.stations,
            "decreases": report.sent_decreases,
            "increases": report.sent_increases,
            "held": report.increases_held,
        },
    )
    return report


SAVED_FIELDS = [
    "target_current",
    "target_phases",
    "decision",
    "reason",
    "sent_current",
    "sent_phases",
    "sent_valid_to",
    "sent_at",
    "sent_command_id",
    "accepted_current",
    "accepted_phases",
    "accepted_valid_to",
    "accepted_at",
    "unresponsive_since",
    "unresponsive_status",
    "session_ref",
    "drawn_phases",
    "updated_at",
]


# One C call for all the fields: a recompute fingerprints every connector of its
# organization two or three times, and a generator of getattr calls was 8 % of the worker's
# CPU in a reconnect storm (docs/BENCHMARKS.md, session 14).
_fingerprint = operator.attrgetter(*SAVED_FIELDS)


def _remember(states: Iterable[ConnectorSetpoint]) -> None:
    """Note what was loaded, so that ``_save`` writes only what changed."""
    for state in states:
        state._saved = _fingerprint(state)


def _save(states: Iterable[ConnectorSetpoint]) -> None:
    """Write new and changed states only: most connectors keep their setpoint from one
    recompute to the next, and a bulk update of every row would cost more than the plan."""
    states = list(states)
    new = [s for s in states if s.pk is None]
    changed = [
        s for s in states if s.pk is not None and getattr(s, "_saved", None) != _fingerprint(s)
    ]
    if new:
        ConnectorSetpoint.objects.bulk_create(new, ignore_conflicts=True)
        # ignore_conflicts leaves pks unset: fetch them (a concurrent creator won the race).
        ids = {
            (s.station_id, s.connector_id): s.pk
            for s in ConnectorSetpoint.objects.filter(station_id__in={s.station_id for s in new})
        }
        for s in new:
            s.pk = ids.get((s.station_id, s.connector_id))
        changed += [s for s in new if s.pk is not None]
    if changed:
        _update_changed_columns(changed)
    _remember(changed)


def _update_changed_columns(states: list[ConnectorSetpoint]) -> None:
    """One UPDATE of just the changed columns per row, rows with the same changed columns
    sent together (``executemany``: psycopg pipelines them in one round trip). Django's
    ``bulk_update`` builds a CASE per column and costs more in Python than a handful of
    rows is worth; one ``.update()`` per row costs a round trip each (20 ms for 35 rows)."""
    by_columns: dict[tuple[str, ...], list[list]] = {}
    for state in states:
        before = getattr(state, "_saved", None)
        now = _fingerprint(state)
        columns = tuple(
            f for i, f in enumerate(SAVED_FIELDS) if before is None or before[i] != now[i]
        )
        by_columns.setdefault(columns, []).append(
            [_db_value(state, f) for f in columns] + [state.pk]
        )
    table = connection.ops.quote_name(ConnectorSetpoint._meta.db_table)
    pk = connection.ops.quote_name(ConnectorSetpoint._meta.pk.column)
    with transaction.atomic(), connection.cursor() as cursor:
        for columns, rows in by_columns.items():
            assignments = ", ".join(
                f"{connection.ops.quote_name(_COLUMNS[f])} = %s" for f in columns
            )
            cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {pk} = %s", rows)


_COLUMNS = {f: ConnectorSetpoint._meta.get_field(f).column for f in SAVED_FIELDS}


def _db_value(state: ConnectorSetpoint, name: str):
    field_ = ConnectorSetpoint._meta.get_field(name)
    return field_.get_db_prep_save(getattr(state, field_.attname), connection)


# --- 4. record and show --------------------------------------------------------------------


def _samples_record(
    organization: Organization, nodes: list[engine.Node], plan: engine.Plan, now: datetime
) -> None:
    """At most one sample per node every LOADMGMT_SAMPLE_EVERY_SECONDS, for the chart."""
    last = (
        NodeLoadSample.objects.for_tenant(organization)
        .order_by("-time")
        .values_list("time", flat=True)
        .first()
    )
    if last is not None and (now - last).total_seconds() < conf.sample_every_seconds():
        return
    NodeLoadSample.objects.bulk_create(
        NodeLoadSample(
            organization=organization,
            node_key=node.id,
            time=now,
            limit=list(node.limit),
            budget=[round(x, 1) for x in plan.nodes[node.id].budget],
            planned=list(plan.nodes[node.id].planned),
            measured=list(node.measured) if node.measured is not None else None,
        )
        for node in nodes
        if node.id in plan.nodes
    )
