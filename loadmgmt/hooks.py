"""The receiver of station events (``OCPP_EVENT_HOOK``, see stations/events.py).

Runs on the OCPP path after the change committed: it only records what must be remembered
(the shedding inputs; that a rebooted or reconnected station needs its setpoint again; the
fail-safe profile at boot) and asks for a debounced recompute. Stations outside every group
cost one indexed query.
"""

from __future__ import annotations

from django.db.models import Case, F, Q, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from loadmgmt.models import ConnectorSetpoint, LoadGroupMember, StationInputs
from loadmgmt.profiles import fail_safe_payload
from loadmgmt.selectors import group_engine_id
from loadmgmt.tasks import recompute_soon, recompute_soon_many
from portal.prepared_sql import IdQuery
from stations import events
from stations.events import StationEvent

# The hook's queries are built once (portal/prepared_sql.py): a reconnect storm runs this
# hook two or three times per station, and the ORM spent more building them than the
# database answering.

# One query for what every event needs and what a boot's fail-safe needs besides.
_MEMBERSHIP = IdQuery(
    lambda station_id: LoadGroupMember.objects.filter(station_id=station_id).values_list(
        "group__organization_id",
        "group_id",
        "group__failure_action",
        "station__online",
        "station__load_limits__fail_safe_current",
    )[:1]
)


def _with_unanswered(accepted: str, sent: str) -> Case:
    """The larger of the accepted and the sent value where a sent lease has no answer yet
    (either may be NULL), the accepted one elsewhere."""
    return Case(
        When(
            sent_command__isnull=False,
            then=Greatest(Coalesce(accepted, sent), Coalesce(sent, accepted)),
        ),
        default=F(accepted),
    )


# The station may have lost or kept its lease: count it at what it accepted, and send the
# setpoint again in the next recompute. A lease still unanswered may have been applied with
# its answer lost on the old connection: it counts as accepted.
# Rows with nothing to forget (no lease sent, none in force) are left alone: the update would
# leave them as they are but still write them, lock them against a running recompute and
# wait for it. A reconnect brings ONLINE and BOOT a moment apart; the second mostly finds
# nothing (in a 2,000-station storm this update was among the three costliest statements,
# 0.3-0.55 ms a call for one row: waiting for the recompute's locks; docs/BENCHMARKS.md).
_LEASES_FORGET = IdQuery(
    lambda station_id: ConnectorSetpoint.objects.filter(
        Q(sent_command__isnull=False) | Q(accepted_valid_to__isnull=False),
        station_id=station_id,
    ),
    update={
        "accepted_current": _with_unanswered("accepted_current", "sent_current"),
        "accepted_phases": _with_unanswered("accepted_phases", "sent_phases"),
        "accepted_valid_to": None,
        "sent_command": None,
    },
)


def _connectors_query(station_id: int):
    from stations.models import Connector

    return Connector.objects.filter(station_id=station_id).values_list("connector_id")


_CONNECTORS = IdQuery(_connectors_query)


def station_event(event: StationEvent) -> None:
    member = _MEMBERSHIP.first(event.station_id)
    if member is None:
        return
    organization_id, group_id, failure_action, online, fail_safe_current = member
    if event.kind in (events.BOOT, events.ONLINE):
        _LEASES_FORGET.execute(event.station_id)
    if event.kind == events.BOOT:
        current = 0 if failure_action == "stop" else fail_safe_current or 0
        _fail_safe_send(event.station_id, bool(online), current)
    if event.kind == events.INPUTS:
        _inputs_record(event)
    # Only the station's tree is planned again (recompute.scope_resolve).
    recompute_soon(organization_id, group_engine_id(group_id))


# Events that need nothing but the recompute (no lease to forget, no profile to send).
_RECOMPUTE_ONLY = (events.OFFLINE, events.STATUS, events.SESSION_STARTED, events.SESSION_STOPPED)


def station_events(batch: list[StationEvent]) -> None:
    """Events that come together (``stations.events.station_events_emit``: a stopping
    process's connections, closed at once): those that only ask for a recompute with one
    membership query and one request for all; the others one by one."""
    simple = [e.station_id for e in batch if e.kind in _RECOMPUTE_ONLY]
    for event in batch:
        if event.kind not in _RECOMPUTE_ONLY:
            station_event(event)
    if not simple:
        return
    members = LoadGroupMember.objects.filter(station_id__in=simple).values_list(
        "group__organization_id", "group_id"
    )
    recompute_soon_many(
        (organization_id, group_engine_id(group_id)) for organization_id, group_id in members
    )


station_event.many = station_events  # type: ignore[attr-defined]


def _fail_safe_send(station_id: int, online: bool, current: int) -> None:
    from stations.commands import commands_send_bulk
    from stations.models import Station

    # The command rows need the station only as their key and to know whether it is
    # connected (read above): no need to load the whole row again.
    station = Station(pk=station_id, online=online)
    connectors = [row[0] for row in _CONNECTORS.rows(station_id)] or [1]
    commands_send_bulk(
        [(station, "SetChargingProfile", fail_safe_payload(c, current)) for c in connectors],
        schema_checked=True,
        # Made while the boot is handled: its connection sends them once the boot is
        # answered (stations.events.BOOT).
        notify=False,
    )


def _inputs_record(event: StationEvent) -> None:
    now = timezone.now()
    in1, in2 = bool(event.data.get("in1")), bool(event.data.get("in2"))
    inputs, created = StationInputs.objects.get_or_create(
        station_id=event.station_id, defaults={"in1": in1, "in2": in2, "since": now}
    )
    if not created:
        changed = (inputs.in1, inputs.in2) != (in1, in2)
        inputs.in1, inputs.in2, inputs.reported_at = in1, in2, now
        if changed:
            inputs.since = now
        inputs.save()
