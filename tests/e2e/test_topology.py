"""The production topology of deploy/topology (nginx balancing HTTP and websockets over two
Uvicorn processes, a Celery worker and beat, PostgreSQL, Redis), with simulated fleets.

a) 40 stations connect through nginx, spread over both processes, charge sessions, and obey
   commands sent through the API of one process whatever process holds their socket.
b) During live sessions under load management on a small fuse, ASGI process 1 is SIGKILLed:
   its stations reconnect through nginx to process 2 by themselves; nothing is lost or
   duplicated, the simulated draw never exceeds the fuse, and the restarted process 1 takes
   connections again. Figures: docs/RESILIENCE.md, "Fault injection: ASGI process killed".
c) The Celery worker SIGKILLed from outside is restarted by the topology's supervisor within
   seconds (counted in ``status``) and load management plans and leases again.
d) ``kill-asgi`` keeps its process down (the supervisor leaves it) until ``start-asgi``;
   nginx stamps each request's arrival for admission control and answers 503 with a
   Retry-After while no process is up.
e) ``restart-asgi`` starts each process once (no race with the supervisor); an nginx master
   SIGKILLed is replaced (its orphaned workers, which hold the port, cleared); ``down``
   leaves no process behind, the supervisor included.
f) nginx refuses station handshakes beyond its rate itself (503, Retry-After), and nothing
   else: pages and /healthz are not counted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import Count
from django.utils import timezone
from rest_framework.authtoken.models import Token

from stations.commands import LOST_ON_RECONNECT
from stations.models import ChargingSession, MeterSample, SessionStatus, Station, StationCommand
from stations.simulator import Car, SimStation
from tests.e2e.test_load_management import (
    Draw,
    fail_safes_accepted_and_planned,
    settled,
    wait_until,
)
from tests.loadmgmt.lines import line_of_stations
from tests.stations.factories import STATION_PASSWORD, StationFactory

METER_INTERVAL = 2
LM_ENV = {
    "LOADMGMT_CYCLE_SECONDS": "2",
    "LOADMGMT_LEASE_SECONDS": "12",
    "LOADMGMT_DEBOUNCE_SECONDS": "0.05",
}


def sim(station: Station, url: str) -> SimStation:
    return SimStation(
        station.charge_point_id,
        f"{url}/ocpp/",
        STATION_PASSWORD,
        connectors=1,
        meter_interval=METER_INTERVAL,
    )


def car() -> Car:
    return Car(battery_kwh=80, soc=10, phases=3, max_current_a=32)


async def holders() -> dict[str, str]:
    """charge point id → the channel-layer client prefix of the process holding its socket
    (channels_redis names a process's channels ``specific.<process prefix>!<random>``)."""
    rows = Station.objects.filter(online=True).values_list("charge_point_id", "channel_name")
    return {cp: name.split("!")[0] async for cp, name in rows if name}


def api_post(base: str, token: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        base + path,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def stop_all(sims: list[SimStation]) -> None:
    await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)
    await sync_to_async(connections.close_all)()


async def assert_sessions_exact(transactions: list, sims: list[SimStation]) -> None:
    """Every transaction the stations ran is one completed session with the stations' own
    figures; no other session exists; meter readings are neither duplicated nor missing."""
    ids = [tx.transaction_id for tx in transactions]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(set(ids)) == len(ids), f"two transactions share an id: {ids}"
    rows = {s.pk: s async for s in ChargingSession.objects.all()}
    assert sorted(rows) == sorted(ids), "a session is missing or was recorded twice"
    for tx in transactions:
        row = rows[tx.transaction_id]
        assert row.status == SessionStatus.COMPLETED, (row.pk, row.status)
        assert (row.meter_start, row.meter_stop) == (tx.meter_start, tx.meter_stop)
    duplicated = [
        row
        async for row in MeterSample.objects.values("session", "time", "context")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    ]
    assert duplicated == [], duplicated
    # Periodic samples are taken every METER_INTERVAL s whether the station is online or not
    # (queued, replayed after the reconnect): a gap means a reading was lost.
    for tx in transactions:
        times = [
            t
            async for t in MeterSample.objects.filter(
                session_id=tx.transaction_id, context="Sample.Periodic"
            )
            .order_by("time")
            .values_list("time", flat=True)
        ]
        expected = int((tx.stop_time - tx.start_time) // METER_INTERVAL)
        assert len(times) >= expected - 1, (tx.transaction_id, len(times), expected)
        gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
        assert max(gaps, default=0) <= 2 * METER_INTERVAL, (tx.transaction_id, gaps)


# ---------------------------------------------------------------------------- a) fleet

FLEET = 40


@pytest.fixture
def fleet_stations(tenants):
    return [
        StationFactory(
            organization=tenants.a,
            charge_point_id=f"TOPO-{i:02d}",
            connectors=1,
            auth_mode="none",  # FREEVEND: sessions start when a car is plugged in
        )
        for i in range(FLEET)
    ]


async def test_a_fleet_through_nginx_uses_both_processes_and_obeys_either(
    topology, fleet_stations, tenants
):
    topo = await asyncio.to_thread(topology, 2)
    token = await sync_to_async(lambda: Token.objects.create(user=tenants.owner_a).key)()
    sims = [sim(s, topo.ws_url) for s in fleet_stations]
    try:
        await asyncio.gather(*(s.start(wait=False) for s in sims))
        await asyncio.gather(*(s.wait_online(30) for s in sims))

        # Both processes hold stations' sockets (least_conn spreads the handshakes).
        held = await wait_until(lambda: _all_held(len(sims)), 10)
        by_process = Counter(held.values())
        assert len(by_process) == 2, by_process
        assert min(by_process.values()) >= FLEET // 4, by_process
        per_port = await asyncio.to_thread(topo.connections)
        assert min(per_port) >= FLEET // 4, per_port

        # Ten cars charge: one session each.
        charging = sims[::4]
        transactions = await asyncio.gather(
            *(s.plug_in(1, car(), id_tag="FREEVEND") for s in charging)
        )
        await asyncio.gather(*(tx.wait_started(15) for tx in transactions))

        # A command through process 1's own port reaches stations on either process.
        targets = {}
        for s in sims:
            if s.connector(1).car is None:
                targets.setdefault(held[s.id], []).append(s)
        pk = {st.charge_point_id: st.pk for st in fleet_stations}
        sent = []
        for group in targets.values():
            for target in group[:3]:
                command = await asyncio.to_thread(
                    api_post,
                    topo.asgi_url(1),
                    token,
                    "/api/v1/organizations/alpha/commands/",
                    {
                        "station": pk[target.id],
                        "action": "RemoteStartTransaction",
                        "payload": {"connectorId": 1, "idTag": "FREEVEND"},
                    },
                )
                sent.append((target, command["id"]))

        async def answered():
            rows = [await StationCommand.objects.aget(pk=i) for _, i in sent]
            return rows if all(r.status != "pending" for r in rows) else None

        rows = await wait_until(answered, 15)
        assert [r.status for r in rows] == ["accepted"] * len(sent)
        for target, _ in sent:
            assert target.received.count("RemoteStartTransaction") == 1, target.id

        await asyncio.sleep(2 * METER_INTERVAL + 0.5)
        for s in charging:
            await s.unplug(1)
        await asyncio.gather(*(tx.wait_stopped(15) for tx in transactions))
        await asyncio.gather(*(s.drain(10) for s in charging))
        await assert_sessions_exact(list(transactions), charging)
        status = await asyncio.to_thread(topo.status)
        assert all(p["running"] for p in status["processes"]), json.dumps(status)
    finally:
        await stop_all(sims)


async def _all_held(count: int) -> dict[str, str] | None:
    held = await holders()
    return held if len(held) == count else None


# ---------------------------------------------------------------------------- b) fault

LINE_A = 32
LM_STATIONS = 20
CARS = 8
# The longer version: TOPOLOGY_FAULT_ROUNDS=10 kills process 1, 2, 1, ... in turn.
ROUNDS = int(os.environ.get("TOPOLOGY_FAULT_ROUNDS", "1"))


@pytest.fixture
def fuse(tenants):
    return line_of_stations(tenants.a, "TOPO-LM", LM_STATIONS, LINE_A)[1]


async def test_b_killing_an_asgi_process_loses_and_duplicates_nothing(topology, fuse):
    topo = await asyncio.to_thread(topology, 2, **LM_ENV)
    sims = [sim(s, topo.ws_url) for s in fuse]
    draw = Draw(sims)
    monitor: asyncio.Task | None = None
    try:
        await asyncio.gather(*(s.start(wait=False) for s in sims))
        await asyncio.gather(*(s.wait_online(30) for s in sims))
        monitor = asyncio.create_task(draw.run())

        await wait_until(fail_safes_accepted_and_planned(LM_STATIONS), 40)
        transactions = []
        for i in range(CARS):
            transactions.append(await sims[i].plug_in(1, car(), id_tag="FREEVEND"))
            await wait_until(settled(i, fuse), 20)
        await asyncio.gather(*(tx.wait_started(15) for tx in transactions))
        assert sum(draw.now()) > 0

        charging = list(range(CARS))  # indexes of stations with a car
        figures = []
        # (when, stations held): a call the killed process had sent to one of its stations
        # has no outcome from it; its station's new connection records it as lost.
        killed_claims: list[tuple[datetime, set[str]]] = []
        for round_ in range(ROUNDS):
            index = 1 if round_ % 2 == 0 else 2  # CI: process 1; longer runs alternate
            before = await wait_until(lambda: _all_held(LM_STATIONS), 10)
            assert len(set(before.values())) == 2, "the stations are not on both processes"
            connects = {s.id: s.stats.connects for s in sims}

            # Sessions start and stop around the kill: their messages may be in flight.
            leaving = charging.pop(0)
            arriving = next(i for i in range(LM_STATIONS) if sims[i].connector(1).car is None)
            old = await sims[leaving].unplug(1)
            transactions.append(await sims[arriving].plug_in(1, car(), id_tag="FREEVEND"))
            charging.append(arriving)
            killed_at = time.monotonic()
            await asyncio.to_thread(topo.run, "kill-asgi", str(index))
            # Once kill-asgi returned the process is gone: what it claimed, it claimed before.
            # (Taken before the command, this missed a call claimed while the kill started.)
            killed_wall = timezone.now()

            # Its stations notice, reconnect through nginx and land on the other process.
            async def moved():
                if not all(s.online for s in sims):
                    return None
                held = await holders()
                one = len(held) == LM_STATIONS and len(set(held.values())) == 1
                return held if one else None

            after = await wait_until(moved, 30)
            reconnect_s = time.monotonic() - killed_at
            reconnected = [s for s in sims if s.stats.connects > connects[s.id]]
            (survivor,) = set(after.values())
            (victim,) = set(before.values()) - {survivor}
            assert {s.id for s in reconnected} == {cp for cp, p in before.items() if p == victim}
            killed_claims.append((killed_wall, {s.id for s in reconnected}))
            await old.wait_stopped(15)
            await transactions[-1].wait_started(15)

            # Live load management goes on from the survivor and the worker (several cycles).
            await asyncio.sleep(8)
            await wait_until(settled(arriving, fuse), 20)

            # The killed process comes back and takes stations again (least_conn prefers it).
            await asyncio.to_thread(topo.run, "start-asgi", str(index))
            movers = [s for s in sims if s.connector(1).car is None][:6]
            for s in movers:
                await s.drop_connection()
                await s.reconnect(wait=False)
            await asyncio.gather(*(s.wait_online(20) for s in movers))
            back = await wait_until(lambda: _all_held(LM_STATIONS), 10)
            (restarted,) = {back[s.id] for s in movers}  # all of them on one process...
            assert restarted != survivor, "the restarted process got no station"  # ...this
            per_port = await asyncio.to_thread(topo.connections)
            assert per_port[index - 1] >= len(movers), per_port
            figures.append((index, len(reconnected), reconnect_s))

        # Every car leaves; then every message has been answered.
        for i in charging:
            await sims[i].unplug(1)
        await asyncio.gather(*(tx.wait_stopped(15) for tx in transactions))
        await asyncio.gather(*(s.drain(15) for s in sims))
        # Wanted state (profiles) settles once the cars are gone.
        await asyncio.sleep(2 * float(LM_ENV["LOADMGMT_CYCLE_SECONDS"]))

        await assert_sessions_exact(transactions, sims)
        unanswered = [
            (c.pk, c.action, c.station.charge_point_id, c.sent_at)
            async for c in StationCommand.objects.filter(
                status="pending", sent_at__lt=timezone.now() - timedelta(seconds=15)
            ).select_related("station")
        ]
        # Those the killed process had in flight were recorded as lost when their stations
        # reconnected, long before the periodic sweep (OCPP_COMMAND_LOST_AFTER).
        assert unanswered == [], f"commands claimed but never answered: {unanswered}"
        lost_on_reconnect = [
            (c.pk, c.station.charge_point_id, c.sent_at, c.finished_at)
            async for c in StationCommand.objects.filter(error=LOST_ON_RECONNECT).select_related(
                "station"
            )
        ]
        for _pk, cp, sent_at, _finished_at in lost_on_reconnect:
            assert any(sent_at < when and cp in held for when, held in killed_claims), cp
        # At most the one call each of the killed process's stations had in flight.
        assert len(lost_on_reconnect) <= sum(len(held) for _, held in killed_claims)
        accepted = await StationCommand.objects.filter(
            action="SetChargingProfile", status="accepted"
        ).acount()
        received = sum(s.received.count("SetChargingProfile") for s in sims)
        assert accepted <= received, (accepted, received)  # no result without a call
        assert draw.samples > 500, draw.samples
        assert max(draw.worst) <= LINE_A, draw.worst
        for index, count, seconds in figures:
            print(f"\nkill-asgi {index}: {count} stations back on the other in {seconds:.2f} s")
        print(
            f"{draw.samples} draw samples, worst per phase "
            f"{[round(w, 1) for w in draw.worst]} A (fuse {LINE_A} A); "
            f"{len(transactions)} sessions; {accepted} profiles accepted, {received} received"
        )
    except BaseException:
        print(await asyncio.to_thread(topo.logs))
        raise
    finally:
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        await stop_all(sims)


async def test_healthz_answers_200_while_stations_are_connected(topology, fleet_stations):
    topo = await asyncio.to_thread(topology, 1)
    sims = [sim(s, topo.ws_url) for s in fleet_stations[:3]]
    try:
        await asyncio.gather(*(s.start(wait=True, timeout=30) for s in sims))
        rows = (await asyncio.to_thread(topo.status))["processes"]
        unhealthy = [r for r in rows if "healthy" in r and not r["healthy"]]
        assert unhealthy == [], json.dumps(unhealthy)
    finally:
        await stop_all(sims)


# ---------------------------------------------------------------------------- c-e) supervisor

SUPERVISED_STATIONS = 6
SUPERVISOR_ROUND = 1.0  # the supervisor looks every second
# ...and waits 1 s before a first restart: a process it restarts is back well within this.
RESTART_WITHIN = 10.0


def process(status: dict, name: str) -> dict:
    (row,) = [r for r in status["processes"] if r["name"] == name]
    return row


def supervisor_log(topo) -> str:
    return (topo.dir / "logs" / "supervisor.log").read_text(errors="replace")


def processes_of(directory: Path, sessions: set[int] | None = None) -> dict[int, str]:
    """pid → command line of every live process of the topology in ``directory``: those
    carrying its marker (nginx's master: its configuration path) and, given ``sessions``,
    every process in one of those sessions (nginx's workers overwrite their environment with
    their title; each started process leads its own session)."""
    marker = f"TOPOLOGY_DIR={directory}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if fields[0] == "Z":  # exited, not reaped yet by its new parent
            continue
        session = int(fields[3])
        if marker in environ or str(directory).encode() in cmdline or session in (sessions or ()):
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


@pytest.fixture
def small_line(tenants):
    return line_of_stations(tenants.a, "TOPO-SV", SUPERVISED_STATIONS, LINE_A)[1]


async def test_c_a_worker_killed_with_sigkill_is_restarted_and_load_management_resumes(
    topology, small_line
):
    topo = await asyncio.to_thread(topology, 1, **LM_ENV)
    sims = [sim(s, topo.ws_url) for s in small_line]
    try:
        await asyncio.gather(*(s.start(wait=False) for s in sims))
        await asyncio.gather(*(s.wait_online(30) for s in sims))

        await wait_until(fail_safes_accepted_and_planned(SUPERVISED_STATIONS), 40)
        worker = process(await asyncio.to_thread(topo.status), "celery-worker")
        assert worker["running"] and worker["restarts"] == 0, worker

        # As the kombu bug or the OOM killer would: no shutdown, no chance to clean up.
        os.kill(worker["pid"], signal.SIGKILL)
        killed_at = time.monotonic()

        async def restarted():
            # The supervisor writes the new pid file as it starts the process and its counts
            # at the end of that round: wait for both.
            row = process(await asyncio.to_thread(topo.status), "celery-worker")
            new = row["running"] and row["pid"] != worker["pid"]
            return row if new and row["restarts"] > 0 else None

        row = await wait_until(restarted, RESTART_WITHIN)
        restart_s = time.monotonic() - killed_at
        assert row["restarts"] == 1, row
        assert row["last_exit"] == "killed by SIGKILL", row
        status = await asyncio.to_thread(topo.status)
        assert status["supervisor"]["running"], status["supervisor"]
        assert status["supervisor"]["restarts"] == 1, status["supervisor"]
        assert f"celery-worker (pid {worker['pid']}) exited unexpectedly" in supervisor_log(topo)

        # Load management runs on the worker: a car arriving now is planned and leased (the
        # killed worker's recompute lock lapses first, up to 15 s).
        since = timezone.now()
        transaction = await sims[0].plug_in(1, car(), id_tag="FREEVEND")
        await wait_until(settled(0, small_line), 40)
        await transaction.wait_started(15)
        leases = await StationCommand.objects.filter(
            action="SetChargingProfile", status="accepted", created_at__gte=since
        ).acount()
        assert leases > 0
        recovered_s = time.monotonic() - killed_at
        await sims[0].unplug(1)
        await transaction.wait_stopped(15)
        print(
            f"\nworker SIGKILLed: new worker after {restart_s:.1f} s, a new car planned and "
            f"leased {recovered_s:.1f} s after the kill ({leases} profiles accepted since)"
        )
    except BaseException:
        print(await asyncio.to_thread(topo.logs))
        raise
    finally:
        await stop_all(sims)


def _handshake(url: str, identity: str, headers: dict[str, str]) -> int:
    """HTTP status of an OCPP websocket handshake (101: accepted)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    auth = base64.b64encode(f"{identity}:{STATION_PASSWORD}".encode()).decode()
    try:
        with connect(
            f"{url}/ocpp/{identity}",
            subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": f"Basic {auth}", **headers},
            open_timeout=10,
        ):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_d_kill_asgi_keeps_the_process_down_until_start_asgi(topology, fleet_stations):
    topo = topology(2)
    before = process(topo.status(), "asgi-1")
    topo.run("kill-asgi", "1")
    # Long enough for the supervisor to have restarted a process that crashed.
    time.sleep(RESTART_WITHIN / 2)
    status = topo.status()
    row = process(status, "asgi-1")
    assert (row["running"], row["held_down"], row["restarts"]) == (False, True, 0), row
    assert not status["ok"]  # a process is down: status says so, on purpose or not
    assert f"asgi-1 (pid {before['pid']}) killed by SIGKILL: held down" in supervisor_log(topo)
    # The other process serves through nginx meanwhile.
    with urllib.request.urlopen(topo.url + "/healthz", timeout=5) as response:
        assert response.status == 200
    # nginx stamps when it received each request (X-Request-Start), replacing any stamp a
    # client sent: a station claiming its handshake is an hour old is still let through.
    stale = {"X-Request-Start": f"t={time.time() - 3600:.3f}"}
    assert _handshake(topo.ws_url, fleet_stations[0].charge_point_id, stale) == 101
    # The same stamp sent to the process directly (no nginx): refused as queued too long.
    assert _handshake(topo.asgi_url(2).replace("http", "ws"), "TOPO-01", stale) == 503

    # Every process down: nginx answers 503 with a Retry-After, not 502.
    topo.run("kill-asgi", "2")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(topo.url + "/healthz", timeout=5)
    assert refused.value.code == 503
    assert refused.value.headers["Retry-After"] in {"5", "10", "15", "20", "30"}
    assert b"try again later" in refused.value.read()

    topo.run("start-asgi", "1")
    topo.run("start-asgi", "2")
    status = topo.status()
    row = process(status, "asgi-1")
    assert (row["running"], row["held_down"], row["restarts"]) == (True, False, 0), row
    assert row["healthy"], row
    assert status["ok"], json.dumps(status)


def _poll_until(url: str, stop: threading.Event, answers: Counter) -> None:
    """GET ``url`` every 20 ms until ``stop``; count the answers (status, or the error)."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answers[response.status] += 1
        except urllib.error.HTTPError as exc:
            answers[f"{exc.code} {exc.read()[:300]!r}"] += 1
        except OSError as exc:
            answers[type(exc).__name__] += 1
        time.sleep(0.02)


def _asgi_pids(status: dict) -> list[int]:
    return [r["pid"] for r in status["processes"] if r["name"].startswith("asgi-")]


def test_e_restart_asgi_starts_each_once_and_down_leaves_no_process(topology, fleet_stations):
    topo = topology(2)
    status = topo.status()
    assert status["ok"] and status["supervisor"]["running"], json.dumps(status)
    old = _asgi_pids(status)

    async def restart_with_stations() -> Counter:
        sims = [sim(s, topo.ws_url) for s in fleet_stations[:10]]
        try:
            await asyncio.gather(*(s.start(wait=False) for s in sims))
            await asyncio.gather(*(s.wait_online(30) for s in sims))
            answers: Counter = Counter()
            stop = threading.Event()
            poller = threading.Thread(
                target=_poll_until, args=(topo.url + "/accounts/login/", stop, answers)
            )
            poller.start()
            try:
                await asyncio.to_thread(topo.run, "restart-asgi")
            finally:
                stop.set()
                await asyncio.to_thread(poller.join)

            # Every station was closed by its old process and came back to a new one.
            async def back() -> bool:
                return all(s.stats.connects >= 2 and s.connected for s in sims)

            await wait_until(back, 30)
            await wait_until(lambda: _all_held(len(sims)), 15)
            return answers
        finally:
            await stop_all(sims)

    # restart-asgi starts each new process beside the old one of its port, and stops the
    # old ones once the new ones answer: the portal's pages answered throughout.
    answers = asyncio.run(restart_with_stations())
    assert set(answers) == {200} and answers[200] > 20, answers
    servers = [cmd for cmd in processes_of(topo.dir).values() if "portal.serve" in cmd]
    assert len(servers) == 2, servers
    assert sorted(cmd.split("--port ")[1].split()[0] for cmd in servers) == [
        str(topo.port + 1),
        str(topo.port + 2),
    ]
    status = topo.status()
    assert status["ok"], json.dumps(status)
    assert not set(old) & set(_asgi_pids(status)), json.dumps(status)
    # Nothing counted as a restart (no exit was taken for a crash).
    assert [r["restarts"] for r in status["processes"]] == [0] * 5, json.dumps(status)

    # nginx's master SIGKILLed: its workers live on, holding the port; the supervisor clears
    # them and starts a new master, which serves.
    nginx = process(status, "nginx")["pid"]
    old_workers = set(processes_of(topo.dir, {nginx})) - set(processes_of(topo.dir))
    assert old_workers, "nginx has no worker processes"
    os.kill(nginx, signal.SIGKILL)
    deadline = time.monotonic() + RESTART_WITHIN
    while True:
        row = process(topo.status(), "nginx")
        if row["running"] and row["pid"] != nginx and row["healthy"] and row["restarts"] > 0:
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    assert row["restarts"] == 1, row
    assert not old_workers & set(processes_of(topo.dir, {nginx})), "old nginx workers live on"

    status = topo.status()
    sessions = {r["pid"] for r in status["processes"]} | {status["supervisor"]["pid"]}
    assert len(processes_of(topo.dir, sessions)) > len(sessions)  # nginx's workers are seen
    topo.run("down")
    # Gone at once, and not started again by a supervisor that outlived 'down'.
    time.sleep(2 * SUPERVISOR_ROUND)
    assert processes_of(topo.dir, sessions) == {}
    status = topo.status()
    assert not status["supervisor"]["running"], status["supervisor"]
    assert not any(r["running"] for r in status["processes"]), json.dumps(status)


def test_e_a_restart_whose_new_processes_fail_leaves_the_old_ones_serving(topology):
    topo = topology(2)
    old = _asgi_pids(topo.status())
    # The processes' environment is read at each start: new ones cannot start with it.
    env_file = topo.dir / "env.json"
    good = env_file.read_text()
    env_file.write_text(json.dumps({**json.loads(good), "DJANGO_SETTINGS_MODULE": "nowhere"}))
    try:
        failed = topo.run("restart-asgi", check=False)
    finally:
        env_file.write_text(good)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "the old ASGI processes go on serving" in failed.stderr, failed.stderr
    status = topo.status()
    assert status["ok"] and _asgi_pids(status) == old, json.dumps(status)
    servers = [cmd for cmd in processes_of(topo.dir).values() if "portal.serve" in cmd]
    assert len(servers) == 2, servers  # the failed new ones are gone
    with urllib.request.urlopen(topo.url + "/healthz", timeout=10) as response:
        assert response.status == 200
    # The supervisor was not left waiting to restart anything: the next restart works.
    topo.run("restart-asgi")
    status = topo.status()
    assert status["ok"] and not set(old) & set(_asgi_pids(status)), json.dumps(status)


# ---------------------------------------------------------------------------- f) nginx limit


def _handshake_refusal(url: str, identity: str) -> tuple[int, str, str | None]:
    """(HTTP status, body, Retry-After) of an OCPP handshake (101: accepted)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    auth = base64.b64encode(f"{identity}:{STATION_PASSWORD}".encode()).decode()
    try:
        with connect(
            f"{url}/ocpp/{identity}",
            subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": f"Basic {auth}"},
            open_timeout=10,
        ):
            return 101, "", None
    except InvalidStatus as exc:
        response = exc.response
        return response.status_code, response.body.decode(), response.headers.get("Retry-After")


def test_f_nginx_refuses_handshakes_beyond_its_rate_and_nothing_else(topology, fleet_stations):
    # One handshake a second and process, two at once: the third of a quick series is
    # refused by nginx, before any process sees it.
    topo = topology(1, up_args=("--handshakes-per-second", "1"))
    answers = [_handshake_refusal(topo.ws_url, s.charge_point_id) for s in fleet_stations[:8]]
    statuses = Counter(status for status, _body, _retry in answers)
    assert statuses[101] >= 2, answers
    refused = [(body, retry) for status, body, retry in answers if status == 503]
    assert refused, answers
    for body, retry in refused:
        assert "Too many stations are connecting at once" in body
        assert retry in {"5", "10", "15", "20", "30"}
    # Pages and the health check are not station handshakes: never counted.
    for _ in range(10):
        with urllib.request.urlopen(topo.url + "/healthz", timeout=5) as response:
            assert response.status == 200
    time.sleep(2)  # the rate's tokens come back
    assert _handshake_refusal(topo.ws_url, fleet_stations[0].charge_point_id)[0] == 101
