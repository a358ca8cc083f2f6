"""Cars: what they accept from the station (IEC 61851 pilot semantics, simplified)."""

from __future__ import annotations

import random
from dataclasses import dataclass

MIN_IEC_CURRENT_A = 6.0  # IEC 61851: below 6 A the pilot means "pause", never a trickle


@dataclass
class Car:
    """An electric car on a connector.

    `soc` and `target_soc` are percent. Charging efficiency is taken as 1: every metered Wh
    lands in the battery, which keeps the arithmetic checkable in tests.
    """

    battery_kwh: float = 60.0
    soc: float = 20.0
    phases: int = 3
    max_current_a: float = 16.0
    min_start_current_a: float = MIN_IEC_CURRENT_A
    target_soc: float = 100.0
    name: str = "car"

    def __post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise ValueError("a car charges on 1 or 3 phases")
        if not 0 <= self.soc <= 100:
            raise ValueError("soc is a percentage")

    @property
    def full(self) -> bool:
        return self.soc >= self.target_soc - 1e-9

    @property
    def wh_to_target(self) -> float:
        return max(0.0, (self.target_soc - self.soc) / 100.0 * self.battery_kwh * 1000.0)

    def accept(self, offered_a: float, drawing: bool) -> float:
        """Current per phase the car draws when `offered_a` is offered.

        A car that is not yet drawing needs `min_start_current_a`; once drawing it follows
        the offer down to 6 A. Below 6 A, or when full, it draws nothing.
        """
        if self.full:
            return 0.0
        amps = min(offered_a, self.max_current_a)
        if amps < MIN_IEC_CURRENT_A - 1e-9:
            return 0.0
        if not drawing and amps < self.min_start_current_a - 1e-9:
            return 0.0
        return amps

    def add_energy(self, wh: float) -> None:
        self.soc = min(100.0, self.soc + wh / (self.battery_kwh * 1000.0) * 100.0)
        if abs(self.soc - self.target_soc) < 1e-6:
            self.soc = self.target_soc


# A small catalogue for scenarios: (name, battery kWh, phases, max A, min start A).
CATALOGUE: tuple[tuple[str, float, int, float, float], ...] = (
    ("small 1-phase", 37.0, 1, 32.0, 6.0),
    ("compact 3-phase", 50.0, 3, 16.0, 6.0),
    ("sedan 3-phase", 77.0, 3, 16.0, 8.0),
    ("suv 3-phase 11kW", 95.0, 3, 16.0, 6.0),
    ("plug-in hybrid", 13.0, 1, 16.0, 10.0),
    ("van 3-phase 22kW", 75.0, 3, 32.0, 6.0),
)


def random_car(rng: random.Random) -> Car:
    name, kwh, phases, max_a, min_a = rng.choice(CATALOGUE)
    return Car(
        battery_kwh=kwh,
        soc=round(rng.uniform(10, 70), 1),
        phases=phases,
        max_current_a=max_a,
        min_start_current_a=min_a,
        target_soc=rng.choice((80.0, 90.0, 100.0)),
        name=name,
    )
