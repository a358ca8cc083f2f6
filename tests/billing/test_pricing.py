"""The pricing arithmetic: worked examples and properties over random tariffs and sessions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from billing.pricing import (
    FREE,
    PricingError,
    Tariff,
    TariffSource,
    applicable_tariff,
    session_price,
)

D = Decimal


def test_worked_example_energy_and_time():
    # 12.345 kWh at 0.45 CHF/kWh = 5.55525; 2 h 30 min at 1.20 CHF/h = 3.00; exact 8.55525,
    # rounded to 0.05 CHF: 8.55.
    tariff = Tariff(per_kwh=D("0.45"), per_hour=D("1.20"), currency="CHF", vat_percent=D("8.1"))
    price = session_price(tariff, energy_wh=12_345, connected=timedelta(hours=2, minutes=30))
    assert price.energy_kwh == D("12.345")
    assert price.energy_amount == D("5.56")
    assert price.time_amount == D("3.00")
    assert price.total == D("8.55")
    # VAT included: net = 8.55 / 1.081 = 7.9093 → 7.91; VAT 0.64.
    assert price.net_amount == D("7.91")
    assert price.vat_amount == D("0.64")
    assert price.currency == "CHF"


def test_total_is_rounded_once_from_the_exact_sum():
    # EUR: 0.005 + 0.005 would be 0.02 if each part were rounded first; the exact sum is 0.01.
    tariff = Tariff(per_kwh=D("0.50"), per_hour=D("0.36"), currency="EUR")
    price = session_price(tariff, energy_wh=10, connected=timedelta(seconds=50))
    assert price.energy_amount == D("0.01") and price.time_amount == D("0.01")
    assert price.total == D("0.01")


@pytest.mark.parametrize(
    ("exact_wh", "total"),
    [(4_949, "2.45"), (4_950, "2.50"), (5_049, "2.50"), (5_050, "2.55"), (5_100, "2.55")],
)
def test_chf_totals_round_half_up_to_five_rappen(exact_wh, total):
    # 0.50 CHF/kWh: 4.949 kWh = 2.4745 → 2.45; 4.950 kWh = 2.475 → 2.50 (half up).
    price = session_price(Tariff(per_kwh=D("0.50")), energy_wh=exact_wh, connected=timedelta(0))
    assert price.total == D(total)


def test_eur_and_zero_vat():
    tariff = Tariff(per_kwh=D("0.39"), currency="EUR", vat_percent=D("0"))
    price = session_price(tariff, energy_wh=20_000, connected=timedelta(hours=1))
    assert (price.total, price.net_amount, price.vat_amount) == (D("7.80"), D("7.80"), D("0.00"))


def test_free_tariff_and_private_connector():
    price = session_price(FREE, energy_wh=50_000, connected=timedelta(hours=9))
    assert price.total == D("0.00")
    tariff, source = applicable_tariff(
        private=True, individual=Tariff(per_kwh=D("1")), group=None, public=Tariff()
    )
    assert tariff.is_free and source is TariffSource.PRIVATE


def test_meter_going_backwards_is_not_a_refund():
    price = session_price(Tariff(per_kwh=D("0.5")), energy_wh=-300, connected=timedelta(0))
    assert price.total == D("0.00")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_kwh": D("-0.01")}, "price per kWh cannot be negative"),
        ({"per_hour": D("100.01")}, "price per hour cannot be above 100.00"),
        ({"vat_percent": D("-1")}, "VAT rate cannot be negative"),
        ({"currency": "USD"}, "Unknown currency 'USD'"),
        ({"per_kwh": 0.3}, "must be a decimal number, not float"),
        ({"per_kwh": D("NaN")}, "cannot be negative"),
    ],
)
def test_bad_tariffs_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(PricingError, match=message):
        Tariff(**kwargs)


def test_precedence_individual_then_group_then_public():
    individual, group, public = Tariff(per_kwh=D("0.1")), Tariff(per_kwh=D("0.2")), Tariff()
    assert applicable_tariff(private=False, individual=individual, group=group, public=public) == (
        individual,
        TariffSource.INDIVIDUAL,
    )
    assert applicable_tariff(private=False, individual=None, group=group, public=public) == (
        group,
        TariffSource.GROUP,
    )
    assert applicable_tariff(private=False, individual=None, group=None, public=public) == (
        public,
        TariffSource.PUBLIC,
    )
    with pytest.raises(LookupError):
        applicable_tariff(private=False, individual=None, group=None, public=None)


money = st.decimals(min_value=D("0"), max_value=D("10"), places=4, allow_nan=False)
hourly = st.decimals(min_value=D("0"), max_value=D("100"), places=2, allow_nan=False)
vat = st.decimals(min_value=D("0"), max_value=D("50"), places=1, allow_nan=False)
tariffs = st.builds(
    Tariff,
    per_kwh=money,
    per_hour=hourly,
    currency=st.sampled_from(["CHF", "EUR"]),
    vat_percent=vat,
)
energy = st.integers(min_value=0, max_value=500_000)
durations = st.integers(min_value=0, max_value=7 * 24 * 3600).map(lambda s: timedelta(seconds=s))


STEP = {"CHF": D("0.05"), "EUR": D("0.01")}


@settings(max_examples=500, deadline=None)
@given(tariffs, energy, durations)
@example(  # a tie: 7,000 s at 3.51/h is 6.825 exactly, rounded half-up to 6.85
    Tariff(per_kwh=D("0"), per_hour=D("3.51"), currency="CHF", vat_percent=D("0")),
    0,
    timedelta(seconds=7000),
)
def test_amounts_add_up_and_follow_the_rounding_rule(tariff, wh, connected):
    price = session_price(tariff, energy_wh=wh, connected=connected)
    step = STEP[tariff.currency]
    amounts = (
        price.total,
        price.net_amount,
        price.vat_amount,
        price.energy_amount,
        price.time_amount,
    )
    for amount in amounts:
        assert isinstance(amount, Decimal)
        assert amount == amount.quantize(D("0.01"))
        assert amount >= 0
    assert price.total % step == 0
    assert price.net_amount + price.vat_amount == price.total
    # Exact rational arithmetic: with Decimal's 28 digits a tie such as 7,000 s at 3.51/h
    # (6.825 exactly) came out as 6.8249…98, and the half-up total 6.85 looked 0.025000…002
    # away (a failure hypothesis found in CI's run of this test, not in the pricing).
    exact = Fraction(wh, 1000) * Fraction(tariff.per_kwh) + Fraction(
        int(connected.total_seconds()), 3600
    ) * Fraction(tariff.per_hour)
    assert abs(Fraction(price.total) - exact) <= Fraction(step) / 2
    # The displayed parts may differ from the total by at most the rounding step.
    assert abs(price.energy_amount + price.time_amount - price.total) <= step


@settings(max_examples=300, deadline=None)
@given(tariffs, energy, energy, durations, durations)
def test_additive_over_splits_within_rounding(tariff, wh_a, wh_b, t_a, t_b):
    """A session priced whole costs what its two halves cost, up to half a step per total."""
    whole = session_price(tariff, energy_wh=wh_a + wh_b, connected=t_a + t_b).total
    parts = (
        session_price(tariff, energy_wh=wh_a, connected=t_a).total
        + session_price(tariff, energy_wh=wh_b, connected=t_b).total
    )
    assert abs(whole - parts) <= STEP[tariff.currency] * D("1.5")


@settings(max_examples=100, deadline=None)
@given(tariffs, energy, durations)
def test_pricing_twice_gives_the_same_result(tariff, wh, connected):
    first = session_price(tariff, energy_wh=wh, connected=connected)
    assert first == session_price(tariff, energy_wh=wh, connected=connected)


@settings(max_examples=300, deadline=None)
@given(tariffs, energy, energy, durations)
def test_more_energy_never_costs_less(tariff, a, b, connected):
    low, high = sorted((a, b))
    assert (
        session_price(tariff, energy_wh=low, connected=connected).total
        <= session_price(tariff, energy_wh=high, connected=connected).total
    )
