"""The batch writer of meter samples (stations/metering.py) and the migration that made a
station's sample of one instant unique."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from stations.metering import write_batch
from stations.models import MeterSample

AT = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)


@pytest.mark.django_db
def test_one_batch_with_the_same_instant_twice_writes_one_row(station):
    """Two stations' messages share a batch; the same station's repeat can too (PostgreSQL
    refuses to update one row twice in one statement)."""
    write_batch(
        [
            (station.pk, 1, None, [{"time": AT, "energy_wh": 100.0}]),
            (station.pk, 1, None, [{"time": AT, "power_w": 3700.0}]),
            (station.pk, 2, None, [{"time": AT, "energy_wh": 50.0}]),
            (station.pk, 1, None, [{"time": AT, "energy_wh": 100.0, "context": "Sample.Clock"}]),
        ],
    )
    rows = sorted(
        MeterSample.objects.values_list("connector_id", "context", "energy_wh", "power_w")
    )
    assert rows == [(1, "", 100.0, 3700.0), (1, "Sample.Clock", 100.0, None), (2, "", 50.0, None)]


@pytest.mark.django_db
def test_a_value_already_stored_stays_unless_the_new_row_has_one(station):
    write_batch([(station.pk, 1, None, [{"time": AT, "energy_wh": 100.0, "soc": 40.0}])])
    write_batch([(station.pk, 1, None, [{"time": AT, "energy_wh": 101.0, "power_w": 9.0}])])
    sample = MeterSample.objects.get()
    assert (sample.energy_wh, sample.soc, sample.power_w) == (101.0, 40.0, 9.0)


@pytest.mark.django_db(transaction=True)
def test_the_migration_merges_samples_stored_twice(station):
    """A database from before the unique constraint may hold a repeated MeterValues twice:
    the migration keeps one row per instant with every value, and the constraint holds."""
    executor = MigrationExecutor(connection)
    executor.migrate([("stations", "0007_relay")])
    try:
        old = executor.loader.project_state([("stations", "0007_relay")]).apps
        Sample = old.get_model("stations", "MeterSample")
        common = {"station_id": station.pk, "connector_id": 1, "time": AT, "context": ""}
        Sample.objects.create(**common, energy_wh=100.0)
        Sample.objects.create(**common, energy_wh=100.0, power_w=3700.0)
        Sample.objects.create(**common, soc=55.0)
        Sample.objects.create(**{**common, "connector_id": 2}, energy_wh=7.0)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    rows = sorted(MeterSample.objects.values_list("connector_id", "energy_wh", "power_w", "soc"))
    assert rows == [(1, 100.0, 3700.0, 55.0), (2, 7.0, None, None)]
    first = MeterSample.objects.get(connector_id=1)
    assert first.pk == min(MeterSample.objects.values_list("pk", flat=True))


async def test_samples_that_arrive_during_a_write_are_the_next_batch(monkeypatch, settings):
    """Group commit without a delay (the default): the first sample is written at once, not
    held back for company; with one batch in flight, the ones that come while it is being
    written wait for it and then go together in one batch."""
    import asyncio
    import threading

    from stations import metering

    settings.OCPP_METER_BATCHES_IN_FLIGHT = 1

    held_back: list[float] = []
    real_wait_for = asyncio.wait_for

    def wait_for(awaitable, timeout):
        held_back.append(timeout)
        return real_wait_for(awaitable, timeout)

    monkeypatch.setattr(metering.asyncio, "wait_for", wait_for)
    batches: list[list[int]] = []
    first_started, release_first = threading.Event(), threading.Event()

    def write(items):
        batches.append([station_id for station_id, *_ in items])
        if len(batches) == 1:
            first_started.set()
            release_first.wait(5)
        return metering.FlushOutcome({})

    monkeypatch.setattr(metering, "write_batch", write)
    # A thread of its own: the process's pool of database threads may be busy with what
    # earlier tests left behind (this test failed after others on PostgreSQL).
    monkeypatch.setattr(metering, "db", lambda fn: lambda *args: asyncio.to_thread(fn, *args))
    batcher = metering.MeterBatcher()
    first = asyncio.ensure_future(batcher.add(1, 1, None, [{"time": AT}]))
    assert await asyncio.to_thread(first_started.wait, 5)  # written at once, not after a wait
    rest = [asyncio.ensure_future(batcher.add(n, 1, None, [{"time": AT}])) for n in (2, 3, 4)]
    await asyncio.sleep(0.05)
    assert not any(f.done() for f in [first, *rest])  # answered only once written
    release_first.set()
    await real_wait_for(asyncio.gather(first, *rest), 5)
    assert batches == [[1], [2, 3, 4]]
    assert held_back == []


async def test_a_slow_commit_does_not_hold_the_next_batch():
    """Two batches in flight (the default): the samples that come while a commit is slow are
    written beside it and answered first; those that come while both are being written wait
    for the first to finish and go together."""
    import asyncio
    import threading

    from stations import metering

    batches: list[list[int]] = []
    slow_started, release_slow = threading.Event(), threading.Event()
    second_started, release_second = threading.Event(), threading.Event()

    def write(items):
        batches.append([station_id for station_id, *_ in items])
        if len(batches) == 1:
            slow_started.set()
            release_slow.wait(5)
        elif len(batches) == 2:
            second_started.set()
            release_second.wait(5)
        return metering.FlushOutcome({})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metering, "write_batch", write)
        # Threads of their own, as PostgreSQL's pool gives (stations/dbcalls.py; SQLite has
        # one writer, so one database thread), and not busy with earlier tests' calls.
        patch.setattr(metering, "db", lambda fn: lambda *args: asyncio.to_thread(fn, *args))
        batcher = metering.MeterBatcher()
        slow = asyncio.ensure_future(batcher.add(1, 1, None, [{"time": AT}]))
        assert await asyncio.to_thread(slow_started.wait, 5)
        beside = asyncio.ensure_future(batcher.add(2, 1, None, [{"time": AT}]))
        assert await asyncio.to_thread(second_started.wait, 5)  # not behind the slow one
        waiting = [asyncio.ensure_future(batcher.add(n, 1, None, [{"time": AT}])) for n in (3, 4)]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in [slow, beside, *waiting])
        release_second.set()
        await asyncio.wait_for(beside, 5)  # answered while the slow commit still runs
        await asyncio.wait_for(asyncio.gather(*waiting), 5)  # the freed writer took them
        assert not slow.done()
        release_slow.set()
        await asyncio.wait_for(slow, 5)
    assert batches == [[1], [2], [3, 4]]


@pytest.mark.django_db
def test_a_batch_updates_its_sessions_in_one_statement_and_leaves_last_seen(tenants):
    """Energy and power of every open session in one UPDATE; ``last_seen`` is the
    connection's to write (once a minute), not the batch's."""
    from django.test.utils import CaptureQueriesContext

    from stations.models import ChargingSession, SessionStatus, Station
    from tests.stations.factories import StationFactory

    sessions = [
        ChargingSession.objects.create(
            station=StationFactory(organization=tenants.a, connectors=1),
            connector_id=1,
            id_tag="TAG",
            status=SessionStatus.ACTIVE,
            meter_start=1000,
            started_at=AT,
            station_started_at=AT,
            idempotency_key=f"meter-{n}",
        )
        for n in range(2)
    ]
    Station.objects.update(last_seen=None)
    items = [
        (s.station_id, 1, s.pk, [{"time": AT, "energy_wh": 1500.0 + i, "power_w": 7000.0}])
        for i, s in enumerate(sessions)
    ]
    with CaptureQueriesContext(connection) as queries:
        write_batch(items)
    updates = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert "stations_chargingsession" in updates[0]
    assert sorted(ChargingSession.objects.values_list("energy_wh", "last_meter_wh", "power_w")) == [
        (500, 1500.0, 7000.0),
        (501, 1501.0, 7000.0),
    ]
    assert set(Station.objects.values_list("last_seen", flat=True)) == {None}
