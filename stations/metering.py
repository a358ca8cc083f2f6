"""MeterValues: parsing into compact samples, and writing them in batches (group commit).

Every MeterValues.req of every station of this process goes into one buffer; a flusher writes
the buffer in one transaction (a few queries whatever its size) and only then are the stations
answered. Under load this turns thousands of small transactions into a few large ones: what
arrives while a batch is being written is the next batch. A sample that finds no write in
progress is written at once (``OCPP_METER_BATCH_DELAY``, 0 s: waiting for company paid off
only under a load that forms batches by itself, and cost every MeterValues answer of a
steady fleet 20 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from stations import conf
from stations.dbcalls import db
from stations.models import ChargingSession, MeterSample, SessionStatus, Station

log = logging.getLogger(__name__)

ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
CURRENT = "Current.Import"
VOLTAGE = "Voltage"
SOC = "SoC"
_SCALE = {"Wh": 1.0, "kWh": 1000.0, "W": 1.0, "kW": 1000.0, "A": 1.0, "V": 1.0, "Percent": 1.0}


class BadSampledValue(ValueError):
    """A sampledValue whose value is not a number (answered PropertyConstraintViolation)."""


def parse_meter_values(meter_value: list[dict[str, Any]], parse_time: Any) -> list[dict[str, Any]]:
    """Snake-cased ``meterValue`` list → one dict per timestamp with our columns.

    A bare value is the energy register in Wh (OCPP default measurand and unit). Values from
    other locations than the outlet/EV (e.g. ``Inlet``) and signed data are ignored.
    """
    samples = []
    for entry in meter_value:
        sample: dict[str, Any] = {"time": parse_time(entry["timestamp"])}
        # OCPP's camelCase, or snake_case when it came through the ocpp library's handler.
        for sv in entry.get("sampledValue") or entry.get("sampled_value") or []:
            if sv.get("format") == "SignedData":
                continue
            if sv.get("location") not in (None, "Outlet", "EV", "Cable"):
                continue
            measurand = sv.get("measurand") or ENERGY
            unit = sv.get("unit")
            try:
                value = float(sv["value"]) * _SCALE.get(unit or "", 1.0)
            except (TypeError, ValueError) as exc:
                raise BadSampledValue(f"sampledValue.value {sv.get('value')!r}") from exc
            phase = (sv.get("phase") or "").split("-")[0]
            if measurand == ENERGY:
                sample["energy_wh"] = value
            elif measurand == POWER and not phase:
                sample["power_w"] = value
            elif measurand == POWER and phase:
                sample["power_w"] = sample.get("power_w_phases", 0.0) + value
                sample["power_w_phases"] = sample["power_w"]
            elif measurand == CURRENT and phase in ("L1", "L2", "L3"):
                sample[f"current_{phase.lower()}"] = value
            elif measurand == CURRENT and not phase:
                sample.setdefault("current_l1", value)
            elif measurand == VOLTAGE:
                sample.setdefault("voltage", value)
            elif measurand == SOC:
                sample["soc"] = value
            if sv.get("context"):
                sample["context"] = sv["context"][:20]
        sample.pop("power_w_phases", None)
        samples.append(sample)
    return samples


@dataclass
class _Item:
    station_id: int
    connector_id: int
    transaction_id: int | None
    samples: list[dict[str, Any]]
    future: asyncio.Future = field(repr=False)


@dataclass
class FlushOutcome:
    """Per organization: fragments and data to push after the batch committed."""

    pushes: dict[int, dict[str, Any]]


def write_batch(items: list[tuple[int, int, int | None, list[dict[str, Any]]]]) -> FlushOutcome:
    """One transaction: resolve sessions (2 queries), insert samples, update open sessions'
    energy and power."""
    from stations.live import power_fragment

    station_ids = {station_id for station_id, *_ in items}
    tx_ids = {tx for _, _, tx, _ in items if tx and tx > 0}
    known = (
        {
            pk: (station_id, status, meter_start)
            for pk, station_id, status, meter_start in ChargingSession.objects.filter(
                pk__in=tx_ids
            ).values_list("pk", "station_id", "status", "meter_start")
        }
        if tx_ids
        else {}
    )
    open_by_connector: dict[tuple[int, int], tuple[int, int]] = {}
    if any(tx is None or tx <= 0 or tx not in known for _, _, tx, _ in items):
        for pk, station_id, connector_id, meter_start in (
            ChargingSession.objects.filter(station_id__in=station_ids, status=SessionStatus.ACTIVE)
            .order_by("started_at", "id")
            .values_list("pk", "station_id", "connector_id", "meter_start")
        ):
            open_by_connector[(station_id, connector_id)] = (pk, meter_start)
    org_of = dict(Station.objects.filter(pk__in=station_ids).values_list("pk", "organization_id"))
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    session_updates: dict[int, ChargingSession] = {}
    pushes: dict[int, dict[str, Any]] = {}
    for station_id, connector_id, tx, samples in items:
        session_id = meter_start = None
        active = False
        if tx and tx > 0 and tx in known and known[tx][0] == station_id:
            _station, status, meter_start = known[tx]
            session_id = tx
            active = status == SessionStatus.ACTIVE
        elif connector_id and (station_id, connector_id) in open_by_connector:
            session_id, meter_start = open_by_connector[(station_id, connector_id)]
            active = True
        for sample in samples:
            row = {
                "station_id": station_id,
                "session_id": session_id,
                "connector_id": connector_id,
                "context": "",
                **sample,
            }
            _merge_into(rows, row)
        if not samples:
            continue
        latest = max(samples, key=lambda s: s["time"])
        if active and session_id is not None:
            update = session_updates.get(session_id) or ChargingSession(pk=session_id)
            if latest.get("energy_wh") is not None:
                update.last_meter_wh = latest["energy_wh"]
                update.energy_wh = max(0, round(latest["energy_wh"] - meter_start))
            if latest.get("power_w") is not None:
                update.power_w = latest["power_w"]
            session_updates[session_id] = update
        if latest.get("power_w") is not None and station_id in org_of:
            push = pushes.setdefault(org_of[station_id], {"fragments": {}, "power": []})
            push["fragments"][f"power-{station_id}-{connector_id}"] = power_fragment(
                station_id, connector_id, latest["power_w"]
            )
            push["power"].append([station_id, connector_id, latest["power_w"]])
    # Sessions grouped by the columns they change: a charging station's message carries its
    # energy and its power, so mostly one UPDATE for all of them.
    by_fields: dict[tuple[str, ...], list[ChargingSession]] = {}
    for update in session_updates.values():
        fields = (("energy_wh", "last_meter_wh") if update.last_meter_wh is not None else ()) + (
            ("power_w",) if update.power_w is not None else ()
        )
        if fields:
            by_fields.setdefault(fields, []).append(update)
    # ``Station.last_seen`` is not written here: every message of a connection already writes
    # it, once a minute (``OCPP_LAST_SEEN_EVERY``, stations/consumers.py and relay.py).
    with transaction.atomic():
        _insert_or_merge(list(rows.values()))
        for fields, updates in by_fields.items():
            ChargingSession.objects.bulk_update(updates, list(fields))
    return FlushOutcome(pushes)


# One row per station, connector, instant and context (the model's unique constraint): a
# MeterValues sent again because our answer was lost (a restart, a dropped connection) merges
# into the row it wrote the first time instead of counting twice, and so do the messages of a
# station that sends each measurand of one instant separately.
_KEY = ("station_id", "connector_id", "time", "context")
_MERGED = (
    "session_id",
    "energy_wh",
    "power_w",
    "current_l1",
    "current_l2",
    "current_l3",
    "voltage",
    "soc",
)
_COLUMNS = (*_KEY, *_MERGED)
_ROWS_PER_STATEMENT = 500  # 6,000 parameters: within SQLite's and PostgreSQL's limits


def _merge_into(rows: dict[tuple[Any, ...], dict[str, Any]], row: dict[str, Any]) -> None:
    """Two rows of one key in one statement would be an error on PostgreSQL ("ON CONFLICT DO
    UPDATE command cannot affect row a second time"): merge them first, the later's values
    winning where it has them, as in the database."""
    key = tuple(row[column] for column in _KEY)
    existing = rows.get(key)
    if existing is None:
        rows[key] = row
        return
    for column in _MERGED:
        if row.get(column) is not None:
            existing[column] = row[column]


def _insert_or_merge(rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT DO UPDATE (PostgreSQL and SQLite): a measured value already stored
    stays unless the new row has one. Django's ``bulk_create(update_conflicts=True)`` would
    overwrite it with the new row's NULL."""
    if not rows:
        return
    meta = MeterSample._meta
    fields = [meta.get_field(name) for name in _COLUMNS]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(quote(f.column) for f in fields)
    merges = ", ".join(
        f"{quote(f.column)} = COALESCE(EXCLUDED.{quote(f.column)}, {table}.{quote(f.column)})"
        for f in fields
        if f.attname in _MERGED
    )
    conflict = ", ".join(quote(meta.get_field(name).column) for name in _KEY)
    one_row = f"({', '.join(['%s'] * len(fields))})"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            params = [
                f.get_db_prep_save(row.get(f.attname), connection) for row in chunk for f in fields
            ]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([one_row] * len(chunk))} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {merges}",
                params,
            )


class MeterBatcher:
    """One per event loop. ``add`` returns when the samples are committed.

    Up to ``OCPP_METER_BATCHES_IN_FLIGHT`` batches (default 2) are written at once: with one,
    a commit that took long (a checkpoint's writes, a busy machine) held every MeterValues of
    the process behind it, and the steady state's slowest answers were MeterValues that came
    during such a commit (docs/BENCHMARKS.md, session 17). Batches in flight never hold the
    same station: a station waits for our answer before its next message (OCPP-J), and we
    answer after the commit."""

    def __init__(self) -> None:
        self._items: list[_Item] = []
        self._wakeup: asyncio.Event | None = None
        self._writers: set[asyncio.Task] = set()

    async def add(
        self,
        station_id: int,
        connector_id: int,
        transaction_id: int | None,
        samples: list[dict[str, Any]],
    ) -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._items.append(_Item(station_id, connector_id, transaction_id, samples, future))
        self._writers = {task for task in self._writers if not task.done()}
        if len(self._writers) < conf.meter_batches_in_flight():
            self._writers.add(loop.create_task(self._run()))
        elif len(self._items) >= conf.meter_batch_size() and self._wakeup is not None:
            self._wakeup.set()
        await future

    async def _run(self) -> None:
        from stations.live import push_rendered

        while self._items:
            delay = conf.meter_batch_delay()
            if delay > 0:
                self._wakeup = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
            items, self._items = self._items, []
            if not items:  # another writer took them during the delay
                return
            try:
                outcome = await db(write_batch)(
                    [(i.station_id, i.connector_id, i.transaction_id, i.samples) for i in items]
                )
            except Exception as exc:  # answer every waiting station with the error
                log.exception("meter batch of %d failed", len(items))
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item in items:
                if not item.future.done():
                    item.future.set_result(None)
            for org_id, push in outcome.pushes.items():
                try:
                    await push_rendered(
                        org_id, "station.power", {"power": push["power"]}, push["fragments"]
                    )
                except Exception:  # live updates are best effort
                    log.exception("live push failed")


_batchers: dict[int, MeterBatcher] = {}


def batcher() -> MeterBatcher:
    """The batcher of the running event loop (tests run several loops)."""
    loop = asyncio.get_running_loop()
    key = id(loop)
    found = _batchers.get(key)
    if found is None or getattr(found, "_loop", None) is not loop:
        found = MeterBatcher()
        found._loop = loop  # type: ignore[attr-defined]
        _batchers.clear()
        _batchers[key] = found
    return found
