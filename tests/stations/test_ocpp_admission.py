"""Admission control: a process busy bringing stations up refuses new handshakes with 503 and
a spread Retry-After, before any database work, and serves the connected stations meanwhile."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from stations import admission, dbcalls
from tests.stations.factories import STATION_PASSWORD
from tests.stations.helpers import BOOT, basic, portal_served
from tests.stations.helpers import Station as FakeStation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("ocpp_settings")]


async def _refused(cp: FakeStation) -> dict:
    await cp.send_input({"type": "websocket.connect"})
    start = await cp.receive_output(3)
    body = await cp.receive_output(3)
    return {"status": start["status"], "headers": dict(start["headers"]), "body": body["body"]}


async def test_too_many_handshakes_at_once_get_503_with_retry_after(station, settings, monkeypatch):
    settings.OCPP_ADMISSION_MAX_CONNECTING = 3
    settings.OCPP_ADMISSION_RETRY_AFTER = "7-9"
    connected = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await connected.handshake())[0]
    monkeypatch.setattr(admission.gate, "connecting", 3)  # three others are mid-handshake
    queries = []
    monkeypatch.setattr(
        "stations.services.station_for_handshake", lambda identity: queries.append(identity)
    )
    refused = await _refused(FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD))
    assert refused["status"] == 503
    assert 7 <= int(refused["headers"][b"retry-after"]) <= 9
    assert b"try again later" in refused["body"] and queries == []
    # The station already connected is served as before.
    result = await connected.call("BootNotification", BOOT)
    assert result[2]["status"] == "Accepted"
    await connected.disconnect()


async def test_a_long_database_backlog_refuses_new_handshakes_until_it_drains(
    station, settings, monkeypatch
):
    settings.OCPP_ADMISSION_MAX_DB_BACKLOG = 50
    monkeypatch.setattr(dbcalls, "backlog", lambda: 51)
    refused = await _refused(FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD))
    assert refused["status"] == 503 and b"retry-after" in refused["headers"]
    monkeypatch.setattr(dbcalls, "backlog", lambda: 50)
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    assert admission.gate.connecting == 0  # counted while connecting only
    await cp.disconnect()


async def test_no_limit_when_set_to_zero(station, settings, monkeypatch):
    settings.OCPP_ADMISSION_MAX_CONNECTING = 0
    settings.OCPP_ADMISSION_MAX_DB_BACKLOG = 0
    monkeypatch.setattr(admission.gate, "connecting", 10_000)
    monkeypatch.setattr(dbcalls, "backlog", lambda: 10_000)
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    await cp.disconnect()


# --- a request that waited too long before it reached the process --------------------------


def _stamped(seconds_ago: float, *, unit: float = 1.0) -> FakeStation:
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    stamp = (time.time() - seconds_ago) * unit
    cp.scope["headers"] = [*cp.scope["headers"], (b"x-request-start", f"t={stamp:.3f}".encode())]
    return cp


async def test_a_handshake_that_queued_too_long_is_refused_before_the_database(
    station, settings, monkeypatch
):
    settings.OCPP_ADMISSION_MAX_QUEUE_SECONDS = 5
    queries = []
    monkeypatch.setattr(
        "stations.services.station_for_handshake", lambda identity: queries.append(identity)
    )
    refused = await _refused(_stamped(8))
    assert refused["status"] == 503 and b"retry-after" in refused["headers"]
    assert queries == [] and admission.gate.connecting == 0


@pytest.mark.parametrize("unit", [1.0, 1000.0])  # nginx's $msec, or milliseconds
async def test_a_fresh_stamp_is_let_through(station, settings, unit):
    settings.OCPP_ADMISSION_MAX_QUEUE_SECONDS = 5
    cp = _stamped(0.5, unit=unit)
    assert (await cp.handshake())[0]
    await cp.disconnect()


async def test_no_queue_limit_when_set_to_zero(station, settings):
    settings.OCPP_ADMISSION_MAX_QUEUE_SECONDS = 0
    cp = _stamped(600)
    assert (await cp.handshake())[0]
    await cp.disconnect()


@pytest.mark.parametrize("value", [b"t=soon", b"", b"t=", b"nonsense"])
def test_a_bad_stamp_is_ignored(value):
    assert admission.queued_for({"headers": [(b"x-request-start", value)]}) is None
    assert admission.queued_for({"headers": []}) is None


def test_a_stamp_from_the_future_counts_as_no_wait():
    stamp = f"t={time.time() + 30:.3f}".encode()
    assert admission.queued_for({"headers": [(b"x-request-start", stamp)]}) == 0.0


# --- the Retry-After grows with the stations waiting ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gate(settings):
    settings.OCPP_ADMISSION_RETRY_AFTER = "5-30"
    settings.OCPP_ADMISSION_RETRY_AFTER_MAX = 180
    clock = Clock()
    g = admission.Gate(clock)
    clock.now += 60  # an hour-old process: the rate window is whole
    return g, clock


def test_few_refused_get_the_configured_range(gate):
    g, _clock = gate
    waits = [g.refuse(f"/ocpp/CP-{i}") for i in range(50)]
    assert all(5 <= w <= 30 for w in waits), waits
    assert g.waiting() == 50 and g.refused == 50


def test_many_refused_come_back_a_little_faster_than_the_process_completes_handshakes(gate):
    g, clock = gate
    for i in range(200):  # 20 handshakes a second over the last 10 s
        clock.now += 0.05
        g.completed(f"/ocpp/DONE-{i}")
    assert g.admission_rate() == pytest.approx(20, rel=0.01)
    waits = [g.refuse(f"/ocpp/CP-{i}") for i in range(3000)]
    # Booked at 1.5 times the rate, 30 a second: the last come back after 5 + 100 s...
    assert admission.BOOKING_AHEAD == 1.5
    assert 100 <= max(waits) <= 106, max(waits)
    # ...and in no second do many more than 30 come back (the first 25 s: drawn at random).
    per_second = Counter(waits)
    assert max(per_second.values()) < 60, per_second.most_common(3)
    assert all(per_second[s] == 30 for s in range(35, 100)), per_second


def test_a_process_held_back_by_its_own_admission_finds_out_that_it_can_do_more(gate):
    """Stations come back as booked and every one is let through: the rate measured next is
    the booked one, higher than before, so the next bookings come faster still."""
    g, clock = gate
    for i in range(100):  # 10 a second
        clock.now += 0.1
        g.completed(f"/ocpp/DONE-{i}")
    rates = []
    for round_ in range(3):
        waits = [g.refuse(f"/ocpp/R{round_}-{i}") for i in range(2000)]
        back = sorted(clock.now + w for w in waits if w > 30)[:300]  # the booked ones
        for i, moment in enumerate(back):
            clock.now = max(clock.now, moment)
            g.completed(f"/ocpp/R{round_}-{i}")
        rates.append(g.admission_rate())
    assert rates[0] > 14 and rates[1] > rates[0] * 1.3 and rates[2] > rates[1], rates


def test_the_spread_is_capped(gate, settings):
    g, _clock = gate
    settings.OCPP_ADMISSION_RETRY_AFTER_MAX = 60
    waits = [g.refuse(f"/ocpp/CP-{i}") for i in range(5000)]  # no completion: the floor rate
    assert max(waits) <= 60 and max(waits[-1000:]) > 50


def test_a_refusal_after_the_booked_stations_came_back_is_not_sent_to_the_end_of_the_queue(
    gate,
):
    """Late in a storm every booked station is back, and a short busy moment refuses one
    more: it is booked after the stations still waiting (none), not after the last moment
    ever promised (a 10,000-station storm's last stations came back 60-110 s late)."""
    g, clock = gate
    for i in range(200):  # 20 a second
        clock.now += 0.05
        g.completed(f"/ocpp/DONE-{i}")
    waits = [g.refuse(f"/ocpp/CP-{i}") for i in range(3000)]
    assert max(waits) > 100
    for i in range(3000):  # let in, most of them before their moment
        clock.now += 0.01
        g.completed(f"/ocpp/CP-{i}")
    assert g.waiting() == 0
    assert 5 <= g.refuse("/ocpp/LATE") <= 30  # the configured range, as for few refused
    # With others still waiting it goes after them, at the pace.
    others = [g.refuse(f"/ocpp/MORE-{i}") for i in range(600)]
    assert max(others) < 5 + 601 / 30 + 30


def test_a_station_back_too_early_gets_the_same_moment(gate):
    g, clock = gate
    others = [g.refuse(f"/ocpp/CP-{i}") for i in range(1000)]  # each has its own moment
    wait = g.refuse("/ocpp/EARLY")
    assert wait > 30
    clock.now += 10
    assert g.refuse("/ocpp/EARLY") == wait - 10  # ignored Retry-After: the same moment
    # Counted once; those told to come back within 10 s no longer count as waiting.
    assert g.waiting() == 1 + sum(w > 10 for w in others) and g.refused == 1002


def test_a_station_let_through_no_longer_waits_and_a_moment_passes(gate):
    g, clock = gate
    wait = g.refuse("/ocpp/CP-1")
    g.refuse("/ocpp/CP-2")
    assert g.waiting() == 2
    g.completed("/ocpp/CP-2")
    assert g.waiting() == 1
    clock.now += wait - 0.1
    assert g.waiting() == 1
    clock.now += 0.2
    assert g.waiting() == 0


def test_a_new_process_measures_its_rate_from_its_start(settings):
    clock = Clock()
    g = admission.Gate(clock)
    clock.now += 2
    for i in range(60):
        g.completed(f"/ocpp/CP-{i}")
    assert g.admission_rate() == pytest.approx(30)  # 60 in 2 s, not in 10
    assert admission.Gate(Clock()).admission_rate() == admission.RATE_FLOOR


async def test_the_gate_counts_a_handshake_until_it_is_answered(station, monkeypatch):
    seen = []
    real = admission.gate.completed
    monkeypatch.setattr(
        admission.gate, "completed", lambda identity: seen.append(identity) or real(identity)
    )
    cp = FakeStation("/ocpp/ALPHA-1", password=STATION_PASSWORD)
    assert (await cp.handshake())[0]
    assert admission.gate.connecting == 0 and seen == ["/ocpp/ALPHA-1"]
    wrong = FakeStation("/ocpp/ALPHA-1", password="wrong")
    assert (await wrong.handshake()) == (False, 401)
    assert admission.gate.connecting == 0 and len(seen) == 2
    await cp.disconnect()


def test_handshakes_let_in_at_once_follow_the_rate_they_complete_at(gate, settings):
    g, clock = gate
    settings.OCPP_ADMISSION_MAX_CONNECTING = 200
    assert g.connecting_limit() == 50  # nothing completed yet: 10 a second for 5 s
    for i in range(300):  # 30 a second over the last 10 s
        clock.now += 1 / 30
        g.completed(f"/ocpp/DONE-{i}")
    assert g.connecting_limit() == 150
    g.connecting = 150
    assert g.busy() == "handshakes"
    g.connecting = 149
    assert g.busy() is None
    for i in range(1000):  # faster still: the configured limit holds
        clock.now += 0.005
        g.completed(f"/ocpp/FAST-{i}")
    assert g.connecting_limit() == 200
    settings.OCPP_ADMISSION_MAX_CONNECTING = 0
    assert g.connecting_limit() == 0


async def test_refused_handshakes_log_no_spurious_uvicorn_error(station, settings):
    """Uvicorn's websockets-sansio protocol logs "ASGI callable returned without completing
    handshake" at ERROR after every denial response (Kludex/uvicorn#3138): a reconnect storm
    logged thousands. Served by a real Uvicorn: the 503, 401 and 404 answers log no error."""
    import logging

    import websockets

    settings.OCPP_ADMISSION_MAX_CONNECTING = 1
    # Uvicorn's loggers do not propagate to the root (caplog): listen on its own.
    records: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = records.append
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(listener)
    statuses = []
    try:
        async with portal_served() as port:  # Uvicorn's default: websockets-sansio
            for path, password, busy in (
                ("ALPHA-1", "wrong", 0),  # 401
                ("NOBODY", STATION_PASSWORD, 0),  # 404
                ("ALPHA-1", STATION_PASSWORD, 1),  # 503: one handshake already in progress
            ):
                admission.gate.connecting = busy
                with pytest.raises(websockets.InvalidStatus) as refused:
                    async with websockets.connect(
                        f"ws://127.0.0.1:{port}/ocpp/{path}",
                        subprotocols=["ocpp1.6"],
                        additional_headers={"Authorization": basic(path, password)[1].decode()},
                    ):
                        pass
                statuses.append(refused.value.response.status_code)
                admission.gate.connecting = 0
        # Uvicorn has stopped: every connection's application has returned (and logged).
    finally:
        uvicorn_log.removeHandler(listener)
    assert statuses == [401, 404, 503]
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []


def test_the_log_filter_keeps_the_error_where_nothing_was_denied():
    import logging

    record = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, admission.SPURIOUS_DENIAL_ERROR, None, None
    )
    assert admission.DeniedHandshakeLogFilter().filter(record)  # not denied: kept
    token = admission._denied.set(True)
    try:
        assert not admission.DeniedHandshakeLogFilter().filter(record)
    finally:
        admission._denied.reset(token)
