"""Smart-charging profiles as a charge point keeps them (OCPP 1.6 section 3.13), pure.

`ProfileStore` holds installed profiles and answers "what limit applies to this connector at
time t" plus "when can that answer change next" (so energy integration is exact across a
`validTo` or a schedule period boundary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .clock import parse_iso

VOLTS = 230.0  # phase-to-neutral, used to turn W into A and back

CP_MAX = "ChargePointMaxProfile"
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"


@dataclass(frozen=True)
class Period:
    start_period: int
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True)
class Profile:
    """One installed charging profile (times as epoch seconds)."""

    id: int
    connector_id: int
    stack_level: int
    purpose: str
    kind: str  # Absolute | Recurring | Relative
    unit: str  # A | W
    periods: tuple[Period, ...]
    duration: int | None = None
    start_schedule: float | None = None
    recurrency: str | None = None  # Daily | Weekly
    valid_from: float | None = None
    valid_to: float | None = None
    transaction_id: int | None = None
    min_rate: float | None = None

    @classmethod
    def from_ocpp(cls, connector_id: int, data: dict[str, Any], now: float) -> Profile:
        """Build from the library's snake_case dict of a `csChargingProfiles` object."""
        sched = data["charging_schedule"]
        periods = tuple(
            Period(
                start_period=int(p["start_period"]),
                limit=float(p["limit"]),
                number_phases=p.get("number_phases"),
            )
            for p in sorted(sched["charging_schedule_period"], key=lambda p: p["start_period"])
        )
        start = sched.get("start_schedule")
        kind = data["charging_profile_kind"]
        start_ts = parse_iso(start) if start else None
        if kind == "Absolute" and start_ts is None:
            start_ts = now  # spec: absent startSchedule means "from now" for Absolute
        return cls(
            id=int(data["charging_profile_id"]),
            connector_id=connector_id,
            stack_level=int(data["stack_level"]),
            purpose=data["charging_profile_purpose"],
            kind=kind,
            unit=sched["charging_rate_unit"],
            periods=periods,
            duration=sched.get("duration"),
            start_schedule=start_ts,
            recurrency=data.get("recurrency_kind"),
            valid_from=parse_iso(data["valid_from"]) if data.get("valid_from") else None,
            valid_to=parse_iso(data["valid_to"]) if data.get("valid_to") else None,
            transaction_id=data.get("transaction_id"),
            min_rate=sched.get("min_charging_rate"),
        )

    def valid_at(self, t: float) -> bool:
        if self.valid_from is not None and t < self.valid_from:
            return False
        return not (self.valid_to is not None and t >= self.valid_to)

    def _schedule_start(self, t: float, tx_start: float | None) -> float | None:
        if self.kind == "Relative":
            return tx_start if tx_start is not None else t
        start = self.start_schedule
        if start is None:
            return None
        if self.kind == "Recurring":
            cycle = 7 * 86400 if self.recurrency == "Weekly" else 86400
            if t >= start:
                start += math.floor((t - start) / cycle) * cycle
        return start

    def period_at(self, t: float, tx_start: float | None) -> Period | None:
        """The schedule period in force at t, or None (not valid, not started, or over)."""
        if not self.valid_at(t):
            return None
        start = self._schedule_start(t, tx_start)
        if start is None or t < start:
            return None
        elapsed = t - start
        if self.duration is not None and elapsed >= self.duration:
            return None
        current = None
        for period in self.periods:
            if period.start_period <= elapsed:
                current = period
            else:
                break
        return current

    def next_change(self, t: float, tx_start: float | None) -> float | None:
        """The first instant after t at which `period_at` may return something else."""
        candidates = [x for x in (self.valid_from, self.valid_to) if x is not None and x > t]
        start = self._schedule_start(t, tx_start)
        if start is not None:
            offsets = [p.start_period for p in self.periods]
            if self.duration is not None:
                offsets.append(self.duration)
            if self.kind == "Recurring":
                offsets.append(7 * 86400 if self.recurrency == "Weekly" else 86400)
            candidates += [start + o for o in offsets if start + o > t]
        return min(candidates, default=None)


@dataclass
class Limit:
    """A per-phase current limit with the phase count it allows (None = no profile applies)."""

    amps: float | None
    phases: int | None = None


@dataclass
class ProfileStore:
    """Installed profiles of one charge point, with the 1.6 replacement and stacking rules."""

    max_stack_level: int = 8
    max_installed: int = 10
    profiles: list[Profile] = field(default_factory=list)

    def install(self, profile: Profile) -> bool:
        if profile.stack_level > self.max_stack_level:
            return False
        kept = [
            p
            for p in self.profiles
            if p.id != profile.id
            and not (
                p.stack_level == profile.stack_level
                and p.purpose == profile.purpose
                and p.connector_id == profile.connector_id
            )
        ]
        if len(kept) >= self.max_installed:
            return False
        kept.append(profile)
        self.profiles = kept
        return True

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> int:
        """Remove matching profiles; an id matches alone, otherwise all given criteria match."""

        def matches(p: Profile) -> bool:
            if profile_id is not None:
                return p.id == profile_id
            return (
                (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        before = len(self.profiles)
        self.profiles = [p for p in self.profiles if not matches(p)]
        return before - len(self.profiles)

    def drop_tx_profiles(self, connector_id: int) -> None:
        self.profiles = [
            p for p in self.profiles if not (p.purpose == TX and p.connector_id == connector_id)
        ]

    def _winner(
        self, candidates: list[Profile], t: float, tx_start: float | None
    ) -> tuple[Profile, Period] | None:
        for p in sorted(candidates, key=lambda p: p.stack_level, reverse=True):
            period = p.period_at(t, tx_start)
            if period is not None:
                return p, period
        return None

    def tx_limit(
        self,
        connector_id: int,
        t: float,
        *,
        transaction_id: int | None,
        tx_start: float | None,
        phases_hint: int,
    ) -> Limit:
        """TxProfile beats TxDefaultProfile; a connector's TxDefault beats connector 0's."""
        groups: list[list[Profile]] = []
        if tx_start is not None:
            groups.append(
                [
                    p
                    for p in self.profiles
                    if p.purpose == TX
                    and p.connector_id == connector_id
                    and (p.transaction_id is None or p.transaction_id == transaction_id)
                ]
            )
        groups.append(
            [p for p in self.profiles if p.purpose == TX_DEFAULT and p.connector_id == connector_id]
        )
        groups.append([p for p in self.profiles if p.purpose == TX_DEFAULT and p.connector_id == 0])
        for group in groups:
            won = self._winner(group, t, tx_start)
            if won is not None:
                return _to_limit(*won, phases_hint)
        return Limit(None)

    def station_limit(self, t: float, phases_hint: int = 3) -> Limit:
        won = self._winner([p for p in self.profiles if p.purpose == CP_MAX], t, None)
        return _to_limit(*won, phases_hint) if won else Limit(None)

    def next_change(self, t: float, tx_starts: list[float | None]) -> float | None:
        times = []
        for p in self.profiles:
            starts = tx_starts if p.kind == "Relative" else [None]
            for s in starts:
                nxt = p.next_change(t, s)
                if nxt is not None:
                    times.append(nxt)
        return min(times, default=None)


def _to_limit(profile: Profile, period: Period, phases_hint: int) -> Limit:
    phases = period.number_phases or 3
    if profile.unit == "W":
        used = min(phases, phases_hint) or 1
        return Limit(period.limit / (VOLTS * used), period.number_phases)
    return Limit(period.limit, period.number_phases)
