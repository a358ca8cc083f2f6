"""After leases lapsed (no worker renewed them) the stations run on their fail-safe profiles,
and the next recompute must count them so: a station whose fail-safe is 6 A on three phases,
while its lease was 16 A on one phase, draws 6 A on two phases a plan on its lapsed lease
thinks free, and its neighbours' leases of the same batch may arrive before its own: 38 A on
a 32 A line (found by tests/resilience/test_service_faults.py::test_celery_worker_killed).

Every batch of leases the recompute sends before an acknowledgement may apply in any order,
so the line must hold for the worst case of each batch: per grid phase, the sum over the
stations of the larger of what each applies now and what it was just sent.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from loadmgmt import recompute as recompute_module
from loadmgmt.models import ConnectorSetpoint, StationLimits
from loadmgmt.recompute import recompute
from stations.models import ChargingSession, Connector, StationCommand
from tests.loadmgmt.factories import LoadGroupFactory
from tests.stations.factories import StationFactory

pytestmark = pytest.mark.django_db

LINE_A = 32
ROTATIONS = ["L1-L2-L3", "L2-L3-L1", "L3-L1-L2"]
GRID = [(0, 1, 2), (1, 2, 0), (2, 0, 1)]


@pytest.fixture(autouse=True)
def quick(settings):
    settings.LOADMGMT_ACK_WAIT_SECONDS = 0.05
    settings.LOADMGMT_SAMPLE_EVERY_SECONDS = 0.0


def _per_phase(index: int, current: float, phases: int) -> list[float]:
    out = [0.0, 0.0, 0.0]
    for g in GRID[index % 3][:phases]:
        out[g] = current
    return out


def _sent(command: StationCommand) -> tuple[float, int]:
    period = command.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    return period[0]["limit"], period[0]["numberPhases"]


def _accept(commands) -> None:
    StationCommand.objects.filter(pk__in=[c.pk for c in commands]).update(
        status="accepted", finished_at=timezone.now()
    )


def test_after_leases_lapsed_no_batch_of_leases_can_overload_the_line(tenants, monkeypatch):
    group = LoadGroupFactory(organization=tenants.a, max_current=LINE_A)
    stations = []
    for i in range(6):
        station = StationFactory(organization=tenants.a, charge_point_id=f"LL-{i}", connectors=1)
        station.online = True
        station.save()
        StationLimits.objects.create(
            station=station,
            phase_rotation=ROTATIONS[i % 3],
            can_switch_phases=True,
            fail_safe_current=6 if i == 0 else 0,
        )
        group.members.create(station=station)
        stations.append(station)
    arrived = timezone.now() - timedelta(minutes=5)
    for station in stations:
        Connector.objects.filter(station=station).update(status="Charging", status_at=arrived)
        ChargingSession.objects.create(
            station=station, connector_id=1, id_tag="T", meter_start=0, started_at=arrived,
            station_started_at=arrived, idempotency_key=f"ll{station.pk}",
        )  # fmt: skip
    for _ in range(4):  # plan, answers read, until settled
        recompute(tenants.a.pk)
        _accept(StationCommand.objects.filter(status="pending"))
    recompute(tenants.a.pk)
    states = list(ConnectorSetpoint.objects.order_by("station_id"))
    # Six cars on 32 A: one phase each, 16 A, two per grid phase.
    assert [(s.accepted_current, s.accepted_phases) for s in states] == [(16, 1)] * 6

    # The worker was down: every lease ended, the stations apply their fail-safes.
    lapsed = timezone.now() - timedelta(seconds=1)
    ConnectorSetpoint.objects.update(accepted_valid_to=lapsed)
    applied = {s.pk: [6.0, 6.0, 6.0] if i == 0 else [0.0] * 3 for i, s in enumerate(stations)}
    index = {s.pk: i for i, s in enumerate(stations)}
    first = StationCommand.objects.order_by("-pk").values_list("pk", flat=True).first()
    batches: list[list[StationCommand]] = []

    def sent_since_last_batch() -> list[StationCommand]:
        seen = {c.pk for batch in batches for c in batch}
        return [
            c
            for c in StationCommand.objects.filter(pk__gt=first, action="SetChargingProfile")
            if c.pk not in seen
        ]

    real_answers = recompute_module._answers

    def acknowledged(ids):
        batch = sent_since_last_batch()
        batches.append(batch)
        _accept(batch)  # the stations answer the batch
        return real_answers(ids)

    monkeypatch.setattr(recompute_module, "_answers", acknowledged)
    recompute(tenants.a.pk)
    batches.append(sent_since_last_batch())

    for batch in batches:
        worst = [0.0, 0.0, 0.0]
        sent = {c.station_id: _per_phase(index[c.station_id], *_sent(c)) for c in batch}
        for station_id, now_applied in applied.items():
            new = sent.get(station_id, now_applied)
            could = [max(a, b) for a, b in zip(now_applied, new, strict=True)]
            worst = [w + c for w, c in zip(worst, could, strict=True)]
        assert max(worst) <= LINE_A, (worst, [(c.station_id, _sent(c)) for c in batch])
        applied.update(sent)
