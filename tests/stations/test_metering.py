"""The batch writer of meter samples (stations/metering.py) and the migration that made a
station's sample of one instant unique."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

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
        timezone.now(),
    )
    rows = sorted(
        MeterSample.objects.values_list("connector_id", "context", "energy_wh", "power_w")
    )
    assert rows == [(1, "", 100.0, 3700.0), (1, "Sample.Clock", 100.0, None), (2, "", 50.0, None)]


@pytest.mark.django_db
def test_a_value_already_stored_stays_unless_the_new_row_has_one(station):
    write_batch([(station.pk, 1, None, [{"time": AT, "energy_wh": 100.0, "soc": 40.0}])], AT)
    write_batch([(station.pk, 1, None, [{"time": AT, "energy_wh": 101.0, "power_w": 9.0}])], AT)
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


async def test_samples_that_arrive_during_a_write_are_the_next_batch(monkeypatch):
    """Group commit without a delay (the default): the first sample is written at once, not
    held back for company; the ones that come while it is being written wait for it and then
    go together in one batch."""
    import asyncio
    import threading

    from stations import metering

    held_back: list[float] = []
    real_wait_for = asyncio.wait_for

    def wait_for(awaitable, timeout):
        held_back.append(timeout)
        return real_wait_for(awaitable, timeout)

    monkeypatch.setattr(metering.asyncio, "wait_for", wait_for)
    batches: list[list[int]] = []
    first_started, release_first = threading.Event(), threading.Event()

    def write(items, now):
        batches.append([station_id for station_id, *_ in items])
        if len(batches) == 1:
            first_started.set()
            release_first.wait(5)
        return metering.FlushOutcome({})

    monkeypatch.setattr(metering, "write_batch", write)
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
