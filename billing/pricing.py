"""Pricing arithmetic: pure Python over dataclasses and ``Decimal``, no Django.

A session's price is energy times the price per kWh plus connection time times the price per
hour. Money is ``Decimal`` throughout and rounded once, at the end: the total to 0.05 CHF (the
smallest Swiss coin, as Swiss invoices round) or 0.01 EUR, half up; parts and VAT to the cent.
Prices are entered as the driver pays them, VAT included (as Swiss and EU consumer prices are
displayed); the VAT share is computed from the gross.

Which tariff applies follows the precedence of the product: a special user's individual price,
else their user group's price, else the connector's public price; a private connector is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

# The step a total is rounded to, per currency; parts and VAT are shown to the cent.
CURRENCIES = {"CHF": Decimal("0.05"), "EUR": Decimal("0.01")}
CENT = Decimal("0.01")
MAX_PER_KWH = Decimal("10.00")
MAX_PER_HOUR = Decimal("100.00")
MAX_VAT_PERCENT = Decimal("50")
ZERO = Decimal("0")
WH_PER_KWH = Decimal("1000")
SECONDS_PER_HOUR = Decimal("3600")


class PricingError(ValueError):
    """A tariff that cannot be right: negative, absurdly high, unknown currency."""


class TariffSource(StrEnum):
    INDIVIDUAL = "individual"
    GROUP = "group"
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True)
class Tariff:
    """What one kWh and one hour of connection cost, VAT included."""

    per_kwh: Decimal = ZERO
    per_hour: Decimal = ZERO
    currency: str = "CHF"
    vat_percent: Decimal = Decimal("8.1")

    def __post_init__(self) -> None:
        validate_tariff(self)

    @property
    def is_free(self) -> bool:
        return self.per_kwh == ZERO and self.per_hour == ZERO


def validate_tariff(tariff: Tariff) -> None:
    """Raise PricingError with a message a person understands."""
    for name, value, maximum in (
        ("price per kWh", tariff.per_kwh, MAX_PER_KWH),
        ("price per hour", tariff.per_hour, MAX_PER_HOUR),
        ("VAT rate", tariff.vat_percent, MAX_VAT_PERCENT),
    ):
        if not isinstance(value, Decimal):
            raise PricingError(f"The {name} must be a decimal number, not {type(value).__name__}.")
        if not value.is_finite() or value < ZERO:
            raise PricingError(f"The {name} cannot be negative.")
        if value > maximum:
            raise PricingError(f"The {name} cannot be above {maximum}.")
    if tariff.currency not in CURRENCIES:
        raise PricingError(f"Unknown currency {tariff.currency!r}: use CHF or EUR.")


FREE = Tariff()


@dataclass(frozen=True)
class PriceBreakdown:
    """The price of one session: total rounded to the currency's step, the rest to the cent."""

    currency: str
    energy_kwh: Decimal
    connected_hours: Decimal
    energy_amount: Decimal
    time_amount: Decimal
    total: Decimal  # VAT included: what the driver pays
    vat_percent: Decimal
    vat_amount: Decimal
    net_amount: Decimal
    source: TariffSource


def round_total(amount: Decimal, currency: str) -> Decimal:
    """Half up to the currency's step (0.05 CHF, 0.01 EUR), two decimals."""
    step = CURRENCIES[currency]
    return ((amount / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step).quantize(CENT)


def round_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def session_price(
    tariff: Tariff,
    *,
    energy_wh: int,
    connected: timedelta,
    source: TariffSource = TariffSource.PUBLIC,
) -> PriceBreakdown:
    """Price a session of ``energy_wh`` delivered over ``connected`` time.

    The total is rounded once from the exact sum (never from rounded parts); the energy and
    time parts are rounded to the cent for display and may differ from the total by up to the
    rounding step (the total is what counts). Negative inputs (a meter that went
    backwards, a stop before the start) price as zero rather than as a refund.
    """
    energy_kwh = max(Decimal(energy_wh), ZERO) / WH_PER_KWH
    seconds = max(Decimal(str(connected.total_seconds())), ZERO)
    hours = seconds / SECONDS_PER_HOUR
    exact_energy = energy_kwh * tariff.per_kwh
    exact_time = hours * tariff.per_hour
    currency = tariff.currency
    total = round_total(exact_energy + exact_time, currency)
    # VAT included in the total: net = total / (1 + rate).
    net = round_cents(total * 100 / (100 + tariff.vat_percent))
    return PriceBreakdown(
        currency=currency,
        energy_kwh=energy_kwh.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP),
        connected_hours=hours.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP),
        energy_amount=round_cents(exact_energy),
        time_amount=round_cents(exact_time),
        total=total,
        vat_percent=tariff.vat_percent,
        vat_amount=total - net,
        net_amount=net,
        source=source,
    )


def applicable_tariff(
    *,
    private: bool,
    individual: Tariff | None,
    group: Tariff | None,
    public: Tariff | None,
) -> tuple[Tariff, TariffSource]:
    """The tariff that applies to one driver at one connector, with where it came from.

    Precedence: private connector (free) > individual price > user group's price > public.
    ``public`` is None when the connector is not open to the public: then only a special
    user's (individual or group) tariff can apply; with neither, the driver is not allowed
    there and this raises LookupError.
    """
    if private:
        return FREE, TariffSource.PRIVATE
    if individual is not None:
        return individual, TariffSource.INDIVIDUAL
    if group is not None:
        return group, TariffSource.GROUP
    if public is not None:
        return public, TariffSource.PUBLIC
    raise LookupError("No tariff applies: the driver is not allowed at this connector.")
