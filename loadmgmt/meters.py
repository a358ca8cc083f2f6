"""Meter readings: one parser for REST and MQTT, the token check, and the store.

The payload (JSON object, REST body or MQTT message)::

    {"time": "2026-05-01T12:00:00Z", "current": [41.0, 35.5, 38.0], "power_w": 26500}

``current`` is required: three non-negative numbers, A on L1, L2, L3 (at most
``MAX_CURRENT_A``). ``power_w`` is optional (negative allowed: a site feeding in). ``time`` is
optional (default: when it arrives), ISO 8601 with a UTC offset, at most
``MAX_CLOCK_SKEW`` in the future. Unknown keys are ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from loadmgmt.models import Meter, MeterReading
from loadmgmt.services import meter_reading_record, meter_token_matches

MAX_CURRENT_A = 10_000.0
MAX_POWER_W = 10_000_000.0
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_PAYLOAD_BYTES = 4096


class ReadingError(ValueError):
    """A reading was refused; the message says why (sent back as the 400's detail)."""


@dataclass(frozen=True, slots=True)
class Reading:
    current: tuple[float, float, float]
    power_w: float | None
    time: datetime


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def parse_reading(payload: Any, *, now: datetime) -> Reading:
    """Validate a decoded (dict) or raw (bytes/str JSON) payload; raise ``ReadingError``."""
    if isinstance(payload, bytes | bytearray | str):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ReadingError(f"The reading is larger than {MAX_PAYLOAD_BYTES} bytes.")
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReadingError("The reading is not valid JSON.") from exc
    if not isinstance(payload, dict):
        raise ReadingError('The reading must be a JSON object such as {"current": [10, 9, 11]}.')
    raw = payload.get("current")
    if raw is None:
        raise ReadingError('"current" is missing: a list of 3 numbers, A on L1, L2, L3.')
    if not isinstance(raw, list | tuple) or len(raw) != 3:
        raise ReadingError('"current" must be a list of 3 numbers, A on L1, L2, L3.')
    current = []
    for phase, value in zip(("L1", "L2", "L3"), raw, strict=True):
        number = _number(value)
        if number is None:
            raise ReadingError(f'"current" on {phase} is not a number.')
        if number < 0:
            raise ReadingError(f'"current" on {phase} is negative ({number:g} A).')
        if number > MAX_CURRENT_A:
            raise ReadingError(
                f'"current" on {phase} ({number:g} A) is above {MAX_CURRENT_A:,.0f} A.'
            )
        current.append(number)
    power_w = payload.get("power_w")
    if power_w is not None:
        power_w = _number(power_w)
        if power_w is None:
            raise ReadingError('"power_w" is not a number.')
        if abs(power_w) > MAX_POWER_W:
            raise ReadingError(f'"power_w" is beyond ±{MAX_POWER_W:,.0f} W.')
    time = payload.get("time")
    if time is None:
        time = now
    else:
        if not isinstance(time, str):
            raise ReadingError('"time" must be an ISO 8601 string such as 2026-05-01T12:00:00Z.')
        try:
            time = datetime.fromisoformat(time)
        except ValueError as exc:
            raise ReadingError(
                '"time" is not an ISO 8601 time such as 2026-05-01T12:00:00Z.'
            ) from exc
        if time.tzinfo is None:
            raise ReadingError('"time" needs a UTC offset, e.g. 2026-05-01T12:00:00Z.')
        if time - now > MAX_CLOCK_SKEW:
            raise ReadingError(
                f'"time" is {(time - now).total_seconds():.0f} s in the future: check the '
                f"meter's clock."
            )
    return Reading((current[0], current[1], current[2]), power_w, time)


def bearer_token(headers: Any) -> str | None:
    """The meter token from ``Authorization: Bearer <token>`` or ``X-Meter-Token``."""
    token = headers.get("X-Meter-Token")
    if token:
        return token.strip()
    auth = headers.get("Authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def reading_store(meter: Meter, reading: Reading) -> MeterReading:
    return meter_reading_record(
        meter=meter, current=reading.current, power_w=reading.power_w, time=reading.time
    )


__all__ = [
    "MAX_CLOCK_SKEW",
    "MAX_CURRENT_A",
    "Reading",
    "ReadingError",
    "bearer_token",
    "meter_token_matches",
    "parse_reading",
    "reading_store",
]
