"""Run simulated OCPP 1.6J charge points against a central system (this portal or another).

python manage.py simulate --stations 50 --url ws://127.0.0.1:8000/ocpp/ --password P
python manage.py simulate --demo --url ws://127.0.0.1:8000/ocpp/
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from importlib import import_module
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from stations.simulator import Fleet, Scenario


def read_password_file(path: str) -> tuple[str | None, list[tuple[str, str, int | None]]]:
    """One token per line: a shared password (first line). Otherwise lines of
    ``identity password [connectors]`` describe the fleet. ``#`` starts a comment."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CommandError(f"cannot read --password-file: {exc}") from exc
    rows = [line.split("#", 1)[0].split() for line in text.splitlines()]
    rows = [r for r in rows if r]
    if not rows:
        raise CommandError("--password-file is empty")
    if all(len(r) == 1 for r in rows):
        return rows[0][0], []
    fleet = []
    for r in rows:
        if len(r) not in (2, 3) or (len(r) == 3 and not r[2].isdigit()):
            raise CommandError(f"--password-file: expected 'identity password [connectors]': {r}")
        fleet.append((r[0], r[1], int(r[2]) if len(r) == 3 else None))
    return None, fleet


class Command(BaseCommand):
    help = "Run many simulated OCPP 1.6J charge points (with cars) in one process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True, help="central system base, ws://host/ocpp/")
        parser.add_argument("--stations", type=int, default=10)
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--password", help="OCPP password shared by every station")
        source.add_argument(
            "--password-file",
            help="a shared password, or lines 'identity password [connectors]'",
        )
        source.add_argument(
            "--demo", action="store_true", help="the demo stations of stations.demo"
        )
        parser.add_argument("--prefix", default="SIM-", help="identity prefix (SIM-00001...)")
        parser.add_argument("--connectors", type=int, default=2)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--duration", type=float, default=None, help="seconds; default: ever")
        parser.add_argument("--arrivals-per-hour", type=float, default=0.5, help="per connector")
        parser.add_argument("--mean-stay-hours", type=float, default=3.0)
        parser.add_argument("--drops-per-hour", type=float, default=0.0, help="per station")
        parser.add_argument("--id-tag", action="append", dest="id_tags", help="RFID uid (repeat)")
        parser.add_argument("--meter-interval", type=int, default=None, help="seconds")
        parser.add_argument("--heartbeat-interval", type=int, default=None, help="override")
        parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
        parser.add_argument("--report-every", type=float, default=30.0, help="seconds")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["connectors"] < 1 or opts["stations"] < 1:
            raise CommandError("--stations and --connectors must be at least 1")
        if opts["verbosity"] < 2:  # the ocpp library logs every frame at INFO
            logging.getLogger("ocpp").setLevel(logging.WARNING)
        identities = self._identities(opts)
        id_tags = tuple(opts["id_tags"] or ())
        if opts["demo"] and not id_tags:
            with contextlib.suppress(ImportError, AttributeError):
                id_tags = tuple(uid for uid, *_ in import_module("stations.demo").DEMO_CARDS)
        scenario = Scenario(
            arrivals_per_hour=opts["arrivals_per_hour"],
            mean_stay_hours=opts["mean_stay_hours"],
            drops_per_hour=opts["drops_per_hour"],
            seed=opts["seed"],
            **({"id_tags": id_tags} if id_tags else {}),
        )
        station_kw: dict[str, Any] = {}
        if opts["meter_interval"] is not None:
            station_kw["meter_interval"] = opts["meter_interval"]
        if opts["heartbeat_interval"] is not None:
            station_kw["heartbeat_interval"] = opts["heartbeat_interval"]
        fleet = Fleet.from_identities(
            identities, opts["url"], seed=opts["seed"], scenario=scenario, **station_kw
        )
        try:
            asyncio.run(self._run(fleet, opts))
        except KeyboardInterrupt:
            self.stdout.write("interrupted")

    def _identities(self, opts: dict[str, Any]) -> list[tuple[str, str | None, int]]:
        connectors = opts["connectors"]
        if opts["demo"]:
            try:
                demo = import_module("stations.demo")
                rows = demo.DEMO_STATIONS
            except (ImportError, AttributeError) as exc:
                raise CommandError(
                    "--demo needs stations.demo.DEMO_STATIONS (a list of "
                    f"(charge_point_id, password, connectors)); not available: {exc}"
                ) from exc
            return [(cp_id, pw, n) for cp_id, pw, n in rows]
        password = opts["password"]
        if opts["password_file"]:
            password, listed = read_password_file(opts["password_file"])
            if listed:
                return [(i, pw, n or connectors) for i, pw, n in listed[: opts["stations"]]]
        prefix = opts["prefix"]
        return [(f"{prefix}{i:05d}", password, connectors) for i in range(1, opts["stations"] + 1)]

    async def _run(self, fleet: Fleet, opts: dict[str, Any]) -> None:
        self.stdout.write(
            f"starting {len(fleet.stations)} stations against {opts['url']} "
            f"(e.g. {fleet.stations[0].ws_url})"
        )
        online = await fleet.start(concurrency=opts["concurrency"], online_within=30)
        self.stdout.write(f"{online}/{len(fleet.stations)} online")
        if online < len(fleet.stations):
            errors = {s.last_error for s in fleet.stations if not s.online and s.last_error}
            for error in sorted(errors)[:5]:
                self.stderr.write(f"  not online: {error}")
        reporter = asyncio.create_task(self._report(fleet, opts["report_every"]))
        try:
            await fleet.run(opts["duration"])
        finally:
            reporter.cancel()
            await fleet.stop()
            self.stdout.write(json.dumps(fleet.summary(), sort_keys=True))

    async def _report(self, fleet: Fleet, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.stdout.write(json.dumps(fleet.summary(), sort_keys=True))
