"""Closed connections are recorded together: a stopping process closes all of its stations
at once and has a few seconds to record them (stations/disconnects.py)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from stations import disconnects, services
from stations.models import Station
from tests.stations.factories import StationFactory


def online(tenants, n: int) -> list[Station]:
    stations = [
        StationFactory(organization=tenants.a, charge_point_id=f"CLOSE-{i}") for i in range(n)
    ]
    for station in stations:
        Station.objects.filter(pk=station.pk).update(online=True, channel_name=f"chan-{station.pk}")
    return stations


@pytest.mark.django_db
def test_only_connections_still_holding_their_station_go_offline(
    tenants, receiver, django_capture_on_commit_callbacks
):
    kept, taken_over, gone = online(tenants, 3)
    Station.objects.filter(pk=taken_over.pk).update(channel_name="a-newer-connection")
    with django_capture_on_commit_callbacks(execute=True):
        results = services.connections_closed(
            [
                (kept.pk, f"chan-{kept.pk}", tenants.a.pk),
                (taken_over.pk, f"chan-{taken_over.pk}", tenants.a.pk),
                (gone.pk, f"chan-{gone.pk}", None),
            ]
        )
    assert results == [{}, None, {}]  # nobody watches: no fragments
    state = dict(Station.objects.values_list("pk", "online"))
    assert state == {kept.pk: False, taken_over.pk: True, gone.pk: False}
    assert Station.objects.get(pk=taken_over.pk).channel_name == "a-newer-connection"
    assert Station.objects.get(pk=kept.pk).channel_name == ""
    assert sorted((e.kind, e.station_id) for e in receiver) == sorted(
        [("offline", kept.pk), ("offline", gone.pk)]
    )
    assert services.connections_closed([]) == []
    # Closed twice (a retried teardown): the second finds nothing to do.
    assert services.connections_closed([(kept.pk, f"chan-{kept.pk}", None)]) == [None]


@pytest.mark.django_db(transaction=True)
async def test_closes_at_once_are_recorded_in_few_database_calls(tenants, monkeypatch):
    stations = await sync_to_async(online)(tenants, 30)
    calls: list[int] = []
    real = services.connections_closed

    def counting(closed):
        calls.append(len(closed))
        return real(closed)

    monkeypatch.setattr(services, "connections_closed", counting)
    monkeypatch.setattr(disconnects, "BATCH_MOST", 10)
    batcher = disconnects.batcher()
    results = await asyncio.gather(
        *(batcher.add((s.pk, f"chan-{s.pk}", tenants.a.pk)) for s in stations)
    )
    assert results == [{}] * 30
    assert calls == [10, 10, 10]  # not 30 calls of one
    assert not await Station.objects.filter(online=True).aexists()
    # A close on its own is recorded at once, by itself.
    calls.clear()
    await sync_to_async(Station.objects.filter(pk=stations[0].pk).update)(
        online=True, channel_name="again"
    )
    assert await batcher.add((stations[0].pk, "again", tenants.a.pk)) == {}
    assert calls == [1]


@pytest.mark.django_db(transaction=True)
async def test_a_cancelled_teardown_still_has_its_station_recorded(tenants, monkeypatch):
    """The shutdown's grace runs out and cancels the teardowns still waiting: the closes
    already gathered are recorded all the same."""
    (station,) = await sync_to_async(online)(tenants, 1)
    started, release = asyncio.Event(), asyncio.Event()
    real = services.connections_closed
    loop = asyncio.get_running_loop()

    def slow(closed):
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        return real(closed)

    monkeypatch.setattr(services, "connections_closed", slow)
    waiter = asyncio.ensure_future(
        disconnects.batcher().add((station.pk, f"chan-{station.pk}", None))
    )
    await started.wait()
    waiter.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with asyncio.timeout(5):
        while await Station.objects.filter(pk=station.pk, online=True).aexists():  # noqa: ASYNC110 (a database row, no event)
            await asyncio.sleep(0.02)


@pytest.mark.django_db(transaction=True)
async def test_a_failed_batch_hands_each_teardown_the_error(tenants, monkeypatch):
    stations = await sync_to_async(online)(tenants, 2)

    def broken(closed):
        raise RuntimeError("database away")

    monkeypatch.setattr(services, "connections_closed", broken)
    batcher = disconnects.batcher()
    results = await asyncio.gather(
        *(batcher.add((s.pk, f"chan-{s.pk}", None)) for s in stations),
        return_exceptions=True,
    )
    assert [str(r) for r in results] == ["database away", "database away"]


@pytest.mark.django_db
def test_the_offline_events_of_closes_recorded_together_are_one_delivery(
    tenants, settings, django_capture_on_commit_callbacks
):
    from stations import events
    from tests.stations import test_events

    settings.OCPP_EVENT_HOOK = "tests.stations.test_events.with_many"
    events.reset_receiver_cache()
    test_events.received_batches.clear()
    stations = online(tenants, 3)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.connections_closed([(s.pk, f"chan-{s.pk}", tenants.a.pk) for s in stations])
    finally:
        events.reset_receiver_cache()
    assert test_events.received_batches == [("many", "offline", [s.pk for s in stations])]
