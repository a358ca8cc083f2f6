"""Many simulated stations in one process, with an optional random scenario of cars."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .car import random_car
from .clock import Clock, RealClock
from .station import ACCEPTED, SimStation, Stats


@dataclass
class Scenario:
    """Knobs of the random traffic (rates are per connector / per station, per hour)."""

    arrivals_per_hour: float = 0.5
    mean_stay_hours: float = 3.0
    id_tags: tuple[str, ...] = ("SIMCARD0001", "SIMCARD0002", "SIMCARD0003", "SIMCARD0004")
    drops_per_hour: float = 0.0  # connection losses per station
    offline_seconds: float = 60.0
    seed: int | None = None


class Fleet:
    """Runs stations concurrently; `build()` makes N of them with a common URL."""

    def __init__(
        self,
        stations: Iterable[SimStation],
        scenario: Scenario | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
    ) -> None:
        self.stations = list(stations)
        self.scenario = scenario
        self.clock = clock or RealClock()
        self.rng = random.Random(
            seed if seed is not None else (scenario.seed if scenario else None)
        )
        self._drivers: list[asyncio.Task[Any]] = []

    @classmethod
    def build(
        cls,
        count: int,
        url: str,
        *,
        password: str | None = None,
        prefix: str = "SIM-",
        connectors: int = 2,
        seed: int | None = None,
        scenario: Scenario | None = None,
        clock: Clock | None = None,
        **station_kw: Any,
    ) -> Fleet:
        identities = [(f"{prefix}{i:05d}", password, connectors) for i in range(1, count + 1)]
        return cls.from_identities(
            identities, url, seed=seed, scenario=scenario, clock=clock, **station_kw
        )

    @classmethod
    def from_identities(
        cls,
        identities: Iterable[tuple[str, str | None, int]],
        url: str,
        *,
        seed: int | None = None,
        scenario: Scenario | None = None,
        clock: Clock | None = None,
        **station_kw: Any,
    ) -> Fleet:
        clock = clock or RealClock()
        stats = station_kw.pop("stats", None) or Stats()
        master = random.Random(seed)
        stations = [
            SimStation(
                cp_id,
                url,
                pw,
                connectors,
                clock=clock,
                stats=stats,
                rng=random.Random(master.random()),
                **station_kw,
            )
            for cp_id, pw, connectors in identities
        ]
        return cls(stations, scenario, clock, seed)

    @property
    def stats(self) -> Stats:
        return self.stations[0].stats if self.stations else Stats()

    async def start(
        self, *, concurrency: int = 100, wait: bool = True, online_within: float = 60.0
    ) -> int:
        """Start every station, at most `concurrency` handshakes in flight; returns how many
        are online (when `wait`)."""
        gate = asyncio.Semaphore(concurrency)

        async def one(station: SimStation) -> bool:
            async with gate:
                await station.start(wait=False)
                if not wait:
                    return True
                with contextlib.suppress(asyncio.TimeoutError):
                    await station.wait_online(online_within)
                return station.online

        results = await asyncio.gather(*(one(s) for s in self.stations))
        if self.scenario is not None:
            self._start_scenario(self.scenario)
        return sum(results)

    def _start_scenario(self, scenario: Scenario) -> None:
        for station in self.stations:
            rng = random.Random(self.rng.random())
            for c in station.connectors:
                self._drivers.append(asyncio.create_task(self._cars(station, c.id, scenario, rng)))
            if scenario.drops_per_hour > 0:
                self._drivers.append(asyncio.create_task(self._drops(station, scenario, rng)))

    async def _cars(
        self, station: SimStation, connector_id: int, sc: Scenario, rng: random.Random
    ) -> None:
        while True:
            await self.clock.sleep(rng.expovariate(sc.arrivals_per_hour / 3600.0))
            if station.connector(connector_id).car is not None:
                continue
            await station.plug_in(connector_id, random_car(rng), id_tag=rng.choice(sc.id_tags))
            await self.clock.sleep(rng.expovariate(1.0 / (sc.mean_stay_hours * 3600.0)))
            await station.unplug(connector_id)

    async def _drops(self, station: SimStation, sc: Scenario, rng: random.Random) -> None:
        while True:
            await self.clock.sleep(rng.expovariate(sc.drops_per_hour / 3600.0))
            await station.drop_connection()
            await self.clock.sleep(sc.offline_seconds)
            await station.reconnect(wait=False)

    async def run(self, duration: float | None = None) -> None:
        """Keep running (the scenario, heartbeats, meter values) for `duration` seconds."""
        if duration is None:
            await asyncio.Event().wait()
        else:
            await self.clock.sleep(duration)

    async def stop(self) -> None:
        for task in self._drivers:
            task.cancel()
        await asyncio.gather(*self._drivers, return_exceptions=True)
        self._drivers.clear()
        await asyncio.gather(*(s.stop() for s in self.stations), return_exceptions=True)

    def summary(self) -> dict[str, Any]:
        connectors = [c for s in self.stations for c in s.connectors]
        return {
            "stations": len(self.stations),
            "online": sum(s.online for s in self.stations),
            "accepted": sum(s.registration == ACCEPTED for s in self.stations),
            "charging": sum(c.status == "Charging" for c in connectors),
            "power_kw": round(sum(c.power_w for c in connectors) / 1000.0, 1),
            "energy_kwh": round(sum(c.energy_wh for c in connectors) / 1000.0, 3),
            "queued": sum(s.queued for s in self.stations),
            "sent": dict(self.stats.sent),
            "call_errors": dict(self.stats.call_errors),
            "connect_failures": self.stats.connect_failures,
        }
